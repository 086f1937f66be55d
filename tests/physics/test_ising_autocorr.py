from __future__ import annotations

import numpy as np
import pytest

from physics.autocorr import autocorrelation, effective_sample_size, integrated_time


def _ar1(phi: float, n: int, chains: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = np.zeros((chains, n))
    e = rng.normal(size=(chains, n))
    x[:, 0] = e[:, 0] / np.sqrt(1 - phi**2)
    for t in range(1, n):
        x[:, t] = phi * x[:, t - 1] + e[:, t]
    return x


def test_independent_data_have_tau_one_half():
    t = integrated_time(np.random.default_rng(0).normal(size=20000))
    assert t.tau == pytest.approx(0.5, abs=0.03)
    assert t.reliable


@pytest.mark.parametrize("phi", [0.5, 0.9])
def test_ar1_matches_the_exact_integrated_time(phi):
    exact = 0.5 + phi / (1 - phi)  # 1/2 + sum_t phi^t
    t = integrated_time(_ar1(phi, 20000, 4, seed=1))
    assert t.tau == pytest.approx(exact, abs=4 * t.stderr)
    assert t.window >= 6 * t.tau
    assert effective_sample_size(_ar1(phi, 20000, 4, seed=1)) == pytest.approx(4 * 20000 / (2 * t.tau))


def test_short_series_is_flagged_unreliable():
    t = integrated_time(_ar1(0.99, 400, 1, seed=2))
    assert not t.reliable


def test_constant_data_and_bad_shapes():
    assert integrated_time(np.ones(50)).tau == 0.5
    rho = autocorrelation(np.ones(10))
    assert rho[0] == 1 and not rho[1:].any()
    with pytest.raises(ValueError, match="shape"):
        integrated_time(np.ones((2, 3, 4)))
    with pytest.raises(ValueError, match="finite"):
        integrated_time(np.array([1.0, np.nan, 2.0]))
