"""The samplers against exact results (Kaufman at L = 8, 16; enumeration at L = 4) and the driver's contract."""

from __future__ import annotations

import math

import numpy as np
import pytest

from physics import exact, ising
from physics import observables as ob

GRID = [(L, T, alg) for L in (8, 16) for T in (2.0, ising.T_C, 3.0) for alg in ising.ALGORITHMS]


def _assert_within(est: ob.Estimate, exact_value: float, n_sigma: float, label: str) -> None:
    assert est.stderr > 0, label
    z = (est.value - exact_value) / est.stderr
    assert abs(z) <= n_sigma, f"{label}: {est.value:.5f} ± {est.stderr:.5f} vs exact {exact_value:.5f} (z = {z:.2f})"


@pytest.mark.parametrize("L,T,algorithm", GRID, ids=[f"L{L}-T{T:.3f}-{a}" for L, T, a in GRID])
def test_energy_and_specific_heat_match_kaufman(L, T, algorithm):
    res = ising.sample_configurations(L, T, 4000, algorithm, seed=0, progress=False)
    ex = exact.kaufman(L, T)
    _assert_within(ob.energy(res.spins), ex.energy, 4.0, "energy")
    _assert_within(ob.specific_heat(res.spins, T), ex.specific_heat, 4.0, "specific heat")
    # The per-sample energies the chains recorded are those of the returned lattices.
    np.testing.assert_allclose(res.energy, ob.energy_per_site(res.spins))


@pytest.mark.parametrize("algorithm", ising.ALGORITHMS)
def test_magnetization_moments_match_enumeration_at_L4(algorithm):
    T = ising.T_C
    res = ising.sample_configurations(4, T, 4000, algorithm, seed=3, progress=False)
    ex = exact.brute_force(4, T)
    _assert_within(ob.abs_magnetization(res.spins), ex.abs_m, 4.0, "|m|")
    _assert_within(ob.magnetization_squared(res.spins), ex.m2, 4.0, "m^2")
    _assert_within(ob.binder_cumulant(res.spins), ex.binder, 4.0, "U4")
    _assert_within(ob.energy(res.spins), ex.energy, 4.0, "energy")


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("L,T,algorithm", GRID, ids=[f"L{L}-T{T:.3f}-{a}" for L, T, a in GRID])
def test_kaufman_with_many_samples(L, T, algorithm, seed):
    res = ising.sample_configurations(L, T, 40_000, algorithm, seed=seed, chains=8, progress=False)
    ex = exact.kaufman(L, T)
    _assert_within(ob.energy(res.spins), ex.energy, 4.0, "energy")
    _assert_within(ob.specific_heat(res.spins, T), ex.specific_heat, 4.0, "specific heat")


@pytest.mark.slow
def test_critical_point_known_limits():
    """L = 64 at T_c: energy (Kaufman), Binder near 0.6107, G(r) ~ r^-1/4, S(k) slope near -7/4."""
    L = 64
    res = ising.sample_configurations(L, ising.T_C, 6000, "wolff", seed=0, progress=False)
    _assert_within(ob.energy(res.spins), exact.kaufman(L, ising.T_C).energy, 4.0, "energy")
    u4 = ob.binder_cumulant(res.spins)
    assert abs(u4.value - exact.BINDER_CRITICAL) < max(4 * u4.stderr, 0.01)
    g = ob.two_point(res.spins)
    r = np.arange(2, 9)
    slope = np.polyfit(np.log(r), np.log(g.value[r]), 1)[0]
    assert -0.3 < slope < -0.18, slope
    s = ob.structure_factor_slope(res.spins, k_range=(0.0, 1.0))
    assert -1.9 < s.value < -1.55, s


@pytest.mark.slow
def test_four_point_function_matches_the_published_L128_values():
    """SKILD's figure at L = 128, T_c: G4c(l) about -0.82, -0.59, -0.43, -0.32 for l = 1, 2, 4, 8."""
    res = ising.sample_configurations(128, ising.T_C, 1000, "wolff", seed=0, progress=False)
    g4 = ob.four_point_connected(res.spins, ls=[1, 2, 4, 8])
    np.testing.assert_allclose(g4.value, [-0.82, -0.59, -0.43, -0.32], atol=0.02)
    _assert_within(ob.energy(res.spins), exact.kaufman(128, ising.T_C).energy, 4.0, "energy")


def test_result_contract_and_metadata():
    res = ising.sample_configurations(8, 2.5, 103, "swendsen-wang", seed=4, chains=4, progress=False)
    assert res.spins.shape == (103, 8, 8) and res.spins.dtype == np.int8
    assert set(np.unique(res.spins)) == {-1, 1}
    assert res.energy.shape == res.magnetization.shape == res.chain.shape == (103,)
    assert np.bincount(res.chain).tolist() == [26, 26, 26, 25]
    assert res.thin >= 1 and res.burn_in >= res.pilot_steps >= 512
    assert res.tau_reliable and all(v > 0 for v in res.tau_int.values())
    # thin follows the measured autocorrelation: ceil(2 tau_max)
    assert res.thin == max(1, math.ceil(2 * max(res.tau_int.values())))
    meta = res.metadata()
    for key in ("L", "temperature", "algorithm", "seed", "thin", "burn_in", "tau_int_energy", "tau_int_abs_m"):
        assert key in meta
    assert meta["algorithm"] == "swendsen-wang" and meta["n_samples"] == 103


def test_same_seed_same_samples_for_any_thread_count():
    a = ising.sample_configurations(8, ising.T_C, 200, "wolff", seed=9, chains=3, threads=1, progress=False)
    b = ising.sample_configurations(8, ising.T_C, 200, "wolff", seed=9, chains=3, threads=2, progress=False)
    c = ising.sample_configurations(8, ising.T_C, 200, "wolff", seed=10, chains=3, threads=2, progress=False)
    np.testing.assert_array_equal(a.spins, b.spins)
    assert a.thin == b.thin and a.clusters_per_step == b.clusters_per_step
    assert not np.array_equal(a.spins, c.spins)


def test_explicit_burn_in_and_thin_skip_the_pilot():
    res = ising.sample_configurations(8, 3.0, 64, "metropolis", seed=0, burn_in=100, thin=7, chains=2,
                                      progress=False)
    assert (res.burn_in, res.thin, res.pilot_steps) == (100, 7, 0)
    assert math.isnan(res.tau_int["energy"]) and math.isfinite(res.tau_int_samples["energy"])
    # The pilot never shortens an explicit burn-in.
    res = ising.sample_configurations(8, 3.0, 16, "metropolis", seed=0, burn_in=5000, progress=False)
    assert res.burn_in == 5000


def test_slow_algorithm_gets_longer_thinning_at_tc():
    metro = ising.sample_configurations(16, ising.T_C, 64, "metropolis", seed=0, progress=False)
    wolff = ising.sample_configurations(16, ising.T_C, 64, "wolff", seed=0, progress=False)
    assert metro.tau_int["abs_m"] > wolff.tau_int["abs_m"]
    assert metro.thin > wolff.thin


@pytest.mark.parametrize("kwargs,match", [
    ({"L": 1}, "L: expected an integer >= 2"),
    ({"L": 7, "algorithm": "metropolis"}, "even L"),
    ({"temperature": 0.0}, "temperature"),
    ({"temperature": float("nan")}, "temperature"),
    ({"algorithm": "glauber"}, "algorithm: expected one of metropolis, wolff, swendsen-wang"),
    ({"n_samples": 0}, "n_samples"),
    ({"seed": -1}, "seed"),
    ({"thin": 0}, "thin"),
    ({"init": "cold"}, "init"),
])
def test_bad_arguments_say_expected_and_received(kwargs, match):
    args = {"L": 8, "temperature": 2.0, "n_samples": 10, "algorithm": "wolff", **kwargs}
    with pytest.raises(ValueError, match=match):
        ising.sample_configurations(progress=False, **args)


def test_sampling_bytes_counts_output_and_chain_workspace():
    # 10 samples of 16 x 16 on 2 chains: 10 output lattices, and per chain its lattice, a block of 5 recorded
    # lattices and 9 bytes of cluster workspace per site.
    assert ising.sampling_bytes(16, 10, 2) == 256 * (10 + 2 * (5 + 1 + 9))


def test_check_memory_refuses_before_any_work(monkeypatch):
    monkeypatch.setattr(ising, "physical_memory_bytes", lambda: 1 << 20)
    assert ising.check_memory(64, 10, 2) == ising.sampling_bytes(64, 10, 2)
    with pytest.raises(ValueError, match="L = 512, 10 samples, 2 chains: needs about"):
        ising.sample_configurations(512, 2.27, 10, chains=2, progress=False)
