"""Kaufman's finite-torus partition function against enumeration, its own derivatives and Onsager's limits."""

from __future__ import annotations

import math

import numpy as np
import pytest

from physics import exact

TEMPS = (0.8, 2.0, exact.T_C, 3.0, 7.0)


@pytest.mark.parametrize("shape", [(4, 4), (2, 2), (3, 3), (3, 4), (4, 3), (2, 5)])
@pytest.mark.parametrize("T", TEMPS)
def test_kaufman_equals_brute_force(shape, T):
    k = exact.kaufman(shape[0], T, shape[1])
    b = exact.brute_force(shape[0], T, shape[1])
    assert k.log_z == pytest.approx(b.log_z, rel=1e-12, abs=1e-10)
    assert k.energy == pytest.approx(b.energy, rel=1e-10, abs=1e-12)
    assert k.specific_heat == pytest.approx(b.specific_heat, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("L", [8, 16, 64])
@pytest.mark.parametrize("T", [2.0, exact.T_C, 3.0])
def test_analytic_derivatives_match_finite_differences(L, T):
    K = 1.0 / T
    h = 1e-4

    def log_z(k):
        return exact.kaufman(L, 1.0 / k).log_z

    f = [log_z(K + i * h) for i in (-2, -1, 0, 1, 2)]
    d1 = (f[0] - 8 * f[1] + 8 * f[3] - f[4]) / (12 * h)
    d2 = (-f[0] + 16 * f[1] - 30 * f[2] + 16 * f[3] - f[4]) / (12 * h * h)
    k = exact.kaufman(L, T)
    assert k.energy == pytest.approx(-d1 / L**2, abs=1e-8)
    assert k.specific_heat == pytest.approx(K * K * d2 / L**2, abs=1e-4)


def test_kaufman_is_finite_exactly_at_tc_and_approaches_onsager():
    at_tc = exact.kaufman(256, exact.T_C)
    assert math.isfinite(at_tc.energy) and math.isfinite(at_tc.specific_heat)
    assert at_tc.energy == pytest.approx(exact.ENERGY_CRITICAL, abs=3e-3)  # -sqrt 2 plus O(1/L)
    assert exact.onsager_energy(exact.T_C) == pytest.approx(-math.sqrt(2.0), abs=1e-12)
    for T in (1.5, 2.0, 3.0, 5.0):
        assert exact.kaufman(256, T).energy == pytest.approx(exact.onsager_energy(T), abs=1e-9)
    # C grows like ln L at T_c
    c = [exact.kaufman(L, exact.T_C).specific_heat for L in (8, 16, 32, 64)]
    assert np.all(np.diff(c) > 0)


def test_limits_of_enumeration():
    cold = exact.brute_force(4, 0.2)
    assert cold.energy == pytest.approx(-2.0, abs=1e-6)
    assert cold.abs_m == pytest.approx(1.0, abs=1e-6)
    assert cold.binder == pytest.approx(2.0 / 3.0, abs=1e-6)
    hot = exact.brute_force(4, 1e6)
    assert abs(hot.energy) < 1e-5
    assert hot.m2 == pytest.approx(1.0 / 16.0, rel=1e-4)  # independent spins: <m^2> = 1/N


def test_onsager_magnetization():
    assert exact.onsager_magnetization(3.0) == 0.0
    assert 0.0 < exact.onsager_magnetization(2.2) < exact.onsager_magnetization(2.0) < 1.0


def test_bad_arguments():
    with pytest.raises(ValueError, match="temperature"):
        exact.kaufman(8, 0.0)
    with pytest.raises(ValueError, match="L"):
        exact.kaufman(1, 2.0)
    with pytest.raises(ValueError, match="at most 20 sites"):
        exact.brute_force(5, 2.0)
