"""Covariate-shift statistics on synthetic data with a known shift."""

from __future__ import annotations

import numpy as np
import pytest

from simdiff.pipelines.shift.covariate import (
    compounding_error,
    knn_distance_ratio,
    median_bandwidth,
    mmd_permutation_test,
    mmd_rbf,
    pad_hold_last,
)

D = 6


def _gauss(n: int, shift: float, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, D))
    x[:, 0] += shift
    return x


def test_identical_distributions_are_near_zero():
    x, y = _gauss(400, 0.0, 1), _gauss(400, 0.0, 2)
    mmd2, bw = mmd_rbf(x, y)
    assert abs(mmd2) < 5e-3 and bw > 0
    res = mmd_permutation_test(x, y, permutations=100, seed=0)
    assert res.p_value > 0.05
    knn = knn_distance_ratio(y, x, k=5)
    assert abs(knn.ratio_median - 1.0) < 0.15


def test_measures_grow_with_a_known_shift():
    ref = _gauss(400, 0.0, 1)
    mmds, ratios = [], []
    for shift in (0.0, 0.5, 1.0, 2.0, 4.0):
        q = _gauss(400, shift, 7)
        mmds.append(mmd_rbf(q, ref)[0])
        ratios.append(knn_distance_ratio(q, ref, k=5).ratio_median)
    assert all(b > a for a, b in zip(mmds, mmds[1:])), mmds
    assert all(b > a for a, b in zip(ratios, ratios[1:])), ratios
    assert mmds[-1] > 0.1 and ratios[-1] > 1.5
    shifted = mmd_permutation_test(_gauss(300, 1.0, 3), ref, permutations=100, seed=0)
    assert shifted.p_value <= 1.0 / 101 + 1e-12  # no permutation reached the observed statistic


def test_permutation_test_is_seeded_and_subsamples():
    x, y = _gauss(700, 0.3, 1), _gauss(650, 0.0, 2)
    a = mmd_permutation_test(x, y, permutations=50, seed=3, max_samples=200)
    b = mmd_permutation_test(x, y, permutations=50, seed=3, max_samples=200)
    assert a == b and a.n_x == 200 and a.n_y == 200


def test_block_permutation_respects_correlated_episodes():
    # Both samples: 20 "episodes" of 15 nearly identical states drawn from the same distribution. Permuting
    # single states treats them as 300 independent draws and rejects; permuting episodes does not.
    rng = np.random.default_rng(0)

    def episodes(n_ep: int) -> tuple[np.ndarray, np.ndarray]:
        centers = rng.normal(size=(n_ep, D))
        states = np.repeat(centers, 15, axis=0) + 0.01 * rng.normal(size=(n_ep * 15, D))
        return states, np.repeat(np.arange(n_ep), 15)

    (x, gx), (y, gy) = episodes(20), episodes(20)
    naive = mmd_permutation_test(x, y, permutations=100, seed=1)
    block = mmd_permutation_test(x, y, permutations=100, seed=1, x_groups=gx, y_groups=gy)
    assert naive.p_value < 0.05 < block.p_value
    assert naive.mmd2 == pytest.approx(block.mmd2)


def test_median_bandwidth_and_degenerate_inputs():
    z = np.array([[0.0], [1.0], [3.0]])
    assert median_bandwidth(z) == pytest.approx(2.0)
    assert median_bandwidth(np.zeros((4, 2))) == 1.0
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        mmd_rbf(np.zeros(5), np.zeros((5, 1)))
    with pytest.raises(ValueError, match="features"):
        mmd_rbf(np.zeros((5, 2)), np.zeros((5, 3)))
    with pytest.raises(ValueError, match="finite"):
        knn_distance_ratio(np.full((3, 2), np.nan), np.zeros((10, 2)))
    with pytest.raises(ValueError, match="at least 6 states"):
        knn_distance_ratio(np.zeros((3, 2)), np.random.default_rng(0).normal(size=(4, 2)), k=5)


def test_pad_hold_last_and_compounding_error():
    a = np.arange(6, dtype=float).reshape(3, 2)
    padded, lengths = pad_hold_last([a, a[:1]], horizon=5)
    assert padded.shape == (2, 5, 2) and list(lengths) == [3, 1]
    np.testing.assert_array_equal(padded[0, 3:], [a[-1], a[-1]])
    np.testing.assert_array_equal(padded[1], np.repeat(a[:1], 5, axis=0))

    t = np.arange(20, dtype=float)
    expert = [np.stack([t, 0 * t], 1) for _ in range(4)]
    same = compounding_error(expert, expert)
    assert np.allclose(same["mean"], 0.0)
    # A policy whose heading error grows linearly drifts quadratically away from the expert.
    drift = [np.stack([t, 0.01 * (i + 1) * t ** 2], 1) for i in range(4)]
    ce = compounding_error(drift, expert)
    assert ce["mean"][0] == 0.0 and np.all(np.diff(ce["mean"]) > 0)
    assert ce["mean"][-1] == pytest.approx(0.025 * 19 ** 2)
    # A policy that stops early holds its last state: the gap stays defined over the expert's horizon.
    short = [e[:5] for e in expert]
    ce2 = compounding_error(short, expert)
    assert len(ce2["mean"]) == 20 and ce2["mean"][-1] == pytest.approx(15.0)
    with pytest.raises(ValueError, match="as many"):
        compounding_error(drift[:2], expert)
