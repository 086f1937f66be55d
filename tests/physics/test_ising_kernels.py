"""Every numba kernel against its NumPy/Python reference, replaying the same stream of random numbers."""

from __future__ import annotations

import numpy as np
import pytest

from physics import ising
from physics import reference as ref

TEMPERATURES = (1.5, ising.T_C, 4.0)


def _random_lattice(L: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).choice(np.array([-1, 1], dtype=np.int8), size=(L, L))


@pytest.mark.parametrize("L", [2, 4, 6])
@pytest.mark.parametrize("T", TEMPERATURES)
def test_metropolis_matches_vectorized_reference(L, T):
    spins = _random_lattice(L, L)
    stream = ising.random_stream(11, 6 * L * L)
    got, used = ising.metropolis_sweeps_from_stream(spins, T, 6, stream)
    want, want_used = ref.checkerboard_reference(spins, ising.metropolis_thresholds(T), 6, stream=stream)
    assert used == want_used == 6 * L * L
    np.testing.assert_array_equal(got, want)
    assert not np.array_equal(got, spins)  # something happened


@pytest.mark.parametrize("L", [2, 3, 5, 6])
@pytest.mark.parametrize("T", TEMPERATURES)
def test_wolff_matches_python_reference(L, T):
    spins = _random_lattice(L, 100 + L)
    stream = ising.random_stream(5, 40 * L * L + 100)
    got, used, flipped = ising.wolff_clusters_from_stream(spins, T, 9, stream)
    want, want_used, want_flipped = ref.wolff_reference(spins, ising.bond_threshold(T), 9, stream)
    np.testing.assert_array_equal(got, want)
    assert (used, flipped) == (want_used, want_flipped)
    assert flipped >= 9


@pytest.mark.parametrize("L", [2, 3, 5, 6])
@pytest.mark.parametrize("T", TEMPERATURES)
def test_swendsen_wang_matches_scipy_reference(L, T):
    spins = _random_lattice(L, 200 + L)
    stream = ising.random_stream(9, 20 * L * L)
    got, used, clusters = ising.swendsen_wang_sweeps_from_stream(spins, T, 4, stream)
    want, want_used, want_clusters = ref.swendsen_wang_reference(spins, ising.bond_threshold(T), 4, stream)
    np.testing.assert_array_equal(got, want)
    assert (used, clusters) == (want_used, want_clusters)


def test_seeded_kernels_consume_numbas_generator_stream():
    """The seeded entry points are the stream kernels fed with numba's own draws for that seed."""
    spins = _random_lattice(6, 1)
    stream = ising.random_stream(42, 20_000)
    np.testing.assert_array_equal(ising.metropolis_sweeps(spins, 2.5, 5, 42),
                                  ising.metropolis_sweeps_from_stream(spins, 2.5, 5, stream)[0])
    w, flipped = ising.wolff_clusters(spins, 2.5, 7, 42)
    w_ref, _, flipped_ref = ising.wolff_clusters_from_stream(spins, 2.5, 7, stream)
    np.testing.assert_array_equal(w, w_ref)
    assert flipped == flipped_ref
    sw, n_cl = ising.swendsen_wang_sweeps(spins, 2.5, 3, 42)
    sw_ref, _, n_cl_ref = ising.swendsen_wang_sweeps_from_stream(spins, 2.5, 3, stream)
    np.testing.assert_array_equal(sw, sw_ref)
    assert n_cl == n_cl_ref


def test_numba_stream_is_numpys_legacy_mersenne_twister():
    """An independent reference for the generator itself: NumPy's RandomState gives the same 32-bit draws."""
    for seed in (0, 12345, (1 << 32) - 1):
        want = np.random.RandomState(seed).randint(0, 1 << 32, size=1000, dtype=np.int64)
        np.testing.assert_array_equal(ising.random_stream(seed, 1000), want)


def test_seeds_reproduce_and_differ():
    spins = _random_lattice(8, 3)
    a = ising.wolff_clusters(spins, ising.T_C, 20, 1)[0]
    np.testing.assert_array_equal(a, ising.wolff_clusters(spins, ising.T_C, 20, 1)[0])
    assert not np.array_equal(a, ising.wolff_clusters(spins, ising.T_C, 20, 2)[0])
    assert spins.sum() == _random_lattice(8, 3).sum()  # the input is left untouched


def test_lemire_site_choice_is_uniform_and_matches_reference():
    # n_sites = 9 is not a power of two, so some draws must be rejected to stay exactly uniform.
    stream = ising.random_stream(3, 200)
    stream[0] = 0  # m = 0 -> low = 0 < t: rejected, the next draw decides
    site, ptr = ising._uniform_site(9, stream, 0)
    site_ref, ptr_ref = ref._uniform_site_reference(9, stream, 0)
    assert (site, ptr) == (site_ref, ptr_ref) and ptr == 2


@pytest.mark.parametrize("algorithm", ising.ALGORITHMS)
def test_chain_kernel_replays_the_single_lattice_kernels(algorithm):
    spins = _random_lattice(8, 7)
    chains = spins[None].copy()
    ising.run_chains(chains, 2.4, algorithm, 1, 6, [123], store=False, threads=1, clusters_per_step=3)
    if algorithm == "metropolis":
        want = ising.metropolis_sweeps(spins, 2.4, 6, 123)
    elif algorithm == "wolff":
        want = ising.wolff_clusters(spins, 2.4, 18, 123)[0]
    else:
        want = ising.swendsen_wang_sweeps(spins, 2.4, 6, 123)[0]
    np.testing.assert_array_equal(chains[0], want)


@pytest.mark.parametrize("algorithm", ising.ALGORITHMS)
def test_chains_do_not_depend_on_thread_count(algorithm):
    start = np.stack([_random_lattice(8, c) for c in range(3)])
    seeds = ising.chain_seeds(5, 3, 1)
    runs = []
    for threads in (1, 2, 3):
        spins = start.copy()
        rec = ising.run_chains(spins, ising.T_C, algorithm, 4, 2, seeds, threads=threads)
        runs.append((spins, rec))
    for spins, rec in runs[1:]:
        np.testing.assert_array_equal(spins, runs[0][0])
        np.testing.assert_array_equal(rec.spins, runs[0][1].spins)
        np.testing.assert_array_equal(rec.bond_sum, runs[0][1].bond_sum)
    # Records are the observables of the recorded lattices; chains differ from each other.
    last = runs[0][1]
    for c in range(3):
        assert (last.bond_sum[c, -1], last.magnetization[c, -1]) == ref.bond_sum_reference(last.spins[c, -1])
    assert not np.array_equal(last.spins[0], last.spins[1])


def test_bond_sum_and_magnetization_match_loops():
    for L in (2, 3, 7):
        s = _random_lattice(L, L)
        assert tuple(ising.bond_sum_and_magnetization(s)) == ref.bond_sum_reference(s)


def test_thresholds():
    thr = ising.metropolis_thresholds(ising.T_C)
    assert thr.shape == (9,) and thr.dtype == np.int64
    assert np.all(thr[:5] == 1 << 32)  # s*h <= 0: always accept
    assert thr[8] == int(np.floor(np.exp(-8 / ising.T_C) * 2.0**32))
    assert ising.bond_threshold(1e-9) == 1 << 32  # T -> 0: every aligned bond is active
    assert ising.bond_threshold(1e9) < 100


def test_bad_inputs_are_clear_errors():
    s = _random_lattice(4, 0)
    with pytest.raises(ValueError, match="even L"):
        ising.metropolis_sweeps(_random_lattice(5, 0), 2.0, 1, 0)
    with pytest.raises(TypeError, match="int8"):
        ising.wolff_clusters(s.astype(np.int64), 2.0, 1, 0)
    with pytest.raises(ValueError, match=r"\+-1"):
        ising.wolff_clusters(np.zeros((4, 4), np.int8), 2.0, 1, 0)
    with pytest.raises(ValueError, match="temperature"):
        ising.swendsen_wang_sweeps(s, -1.0, 1, 0)
    with pytest.raises(ValueError, match="too short"):
        ising.wolff_clusters_from_stream(s, 1.0, 50, np.zeros(3, dtype=np.int64) + 5)
    with pytest.raises(ValueError, match="algorithm: expected one of"):
        ising.canonical_algorithm("heatbath")
    assert ising.canonical_algorithm("SW") == "swendsen-wang"


def test_kernels_release_the_gil():
    """Chains run on Python threads; that is only parallel if the kernels release the GIL."""
    for kernel in (ising.chain_kernel, ising.metropolis_kernel, ising.wolff_kernel, ising.swendsen_wang_kernel):
        assert kernel.targetoptions.get("nogil") is True
