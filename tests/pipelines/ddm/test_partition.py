"""Partition: invariant lattice features, seeded k-means, saved/reproducible partitions, compute split."""

from __future__ import annotations

import numpy as np
import pytest

from simdiff.pipelines.ddm.partition import (
    assign,
    fingerprint,
    given_partition,
    kmeans,
    kmeans_partition,
    lattice_features,
    load_partition,
    save_partition,
    split_steps,
    trajectory_features,
)


def _lattices(n: int = 60, L: int = 16, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    p = np.repeat([0.5, 0.8, 0.99], n // 3)
    return np.where(rng.random((p.size, L, L)) < p[:, None, None], 1, -1).astype(np.int8)


def test_lattice_features_are_invariant_under_the_training_symmetries():
    x = _lattices()
    f, names = lattice_features(x, spectral_shells=3)
    assert f.shape == (60, 5) and names[:2] == ["abs_m", "energy"]
    for y in (np.roll(x, (3, 5), axis=(1, 2)), x.transpose(0, 2, 1), x[:, ::-1], -x, np.rot90(x, axes=(1, 2))):
        assert np.allclose(lattice_features(np.ascontiguousarray(y), 3)[0], f, atol=1e-9)
    fc, names_c = lattice_features(x, 0, coarse_factors=(2,))
    assert names_c == ["abs_m", "energy", "block_abs_m_b2"] and fc.shape == (60, 3)
    with pytest.raises(ValueError, match="divisors"):
        lattice_features(x, 0, coarse_factors=(5,))
    with pytest.raises(ValueError, match="lattices"):
        lattice_features(x[0], 1)


def test_kmeans_is_seeded_canonical_and_separates_blobs():
    rng = np.random.default_rng(1)
    centers = np.array([[5.0, 0], [0, 0], [-5, 3]])
    x = np.concatenate([c + 0.3 * rng.standard_normal((40, 2)) for c in centers])
    truth = np.repeat([2, 1, 0], 40)                       # clusters are numbered by their first coordinate
    labels, c, inertia = kmeans(x, 3, seed=0, n_init=3)
    assert np.array_equal(labels, truth)
    assert np.all(np.diff(c[:, 0]) > 0)
    # a different seed finds the same clustering with the same numbering; permuting rows permutes labels
    labels2, _, _ = kmeans(x, 3, seed=7, n_init=3)
    assert np.array_equal(labels, labels2)
    perm = rng.permutation(len(x))
    assert np.array_equal(kmeans(x[perm], 3, seed=0, n_init=3)[0], labels[perm])
    with pytest.raises(ValueError, match="k"):
        kmeans(x, 0)


def test_partition_roundtrip_and_assign(tmp_path):
    x = _lattices()
    f, names = lattice_features(x, 0)                        # |m| and energy separate the three levels
    fp = fingerprint(x)
    part = kmeans_partition(f, names, 3, seed=0, n_init=4, max_iter=100, data_fingerprint=fp)
    assert sorted(part.sizes) == [20, 20, 20]              # the three magnetisation levels
    assert part.sizes == kmeans_partition(f, names, 3, 0, 4, 100, fp).sizes
    save_partition(part, tmp_path / "p")
    back = load_partition(tmp_path / "p")
    assert np.array_equal(back.labels, part.labels) and back.data_fingerprint == fp
    assert back.feature_names == tuple(names) and np.allclose(back.centers, part.centers)
    assert np.array_equal(assign(back, f), part.labels)
    assert np.array_equal(part.indices(1), np.nonzero(part.labels == 1)[0])
    with pytest.raises(ValueError, match="at least 25"):
        kmeans_partition(f, names, 3, 0, 4, 100, fp, min_cluster_size=25)


def test_given_partition_is_checked():
    f = np.random.default_rng(0).standard_normal((10, 2))
    labels = np.array([0, 1] * 5)
    part = given_partition(labels, 2, f, ["a", "b"], "fp")
    assert part.method == "given" and part.sizes == [5, 5]
    with pytest.raises(ValueError, match=r"values in \[0, 1\]"):
        given_partition(labels + 1, 2, f, ["a", "b"], "fp")
    with pytest.raises(ValueError, match="shape"):
        given_partition(labels[:5], 2, f, ["a", "b"], "fp")


def test_trajectory_features_modes():
    obs = np.arange(12.0).reshape(2, 6)
    layout = {"state": (0, 4), "context": (4, 6)}
    f, names = trajectory_features(obs, layout, "obs_context")
    assert f.shape == (2, 6) and names[-1] == "context1"
    assert np.array_equal(trajectory_features(obs, layout, "context")[0], obs[:, 4:])
    with pytest.raises(ValueError, match="context"):
        trajectory_features(obs, {"state": (0, 6)}, "context")


@pytest.mark.parametrize("split", ["proportional", "equal"])
def test_split_steps_sums_to_the_monolithic_budget(split):
    steps = split_steps(1000, [10, 55, 35], split)
    assert sum(steps) == 1000
    assert steps == ([100, 550, 350] if split == "proportional" else [334, 333, 333])
    assert split_steps(10, [1, 100], "proportional", min_steps=3) == [3, 10]
