"""Data partition for decentralized training: features, seeded k-means, and the saved, reproducible partition.

DDM / Paris cluster the training set with k-means on embeddings and give each cluster to one expert. Here the
embeddings are physical or task features (see :class:`~simdiff.pipelines.ddm.config.PartitionConfig`):

* lattices ``(N, L, L)``: |m|, energy per site, log S(k) on the lowest shells, and optionally the mean |block
  magnetisation| after coarse-graining -- all invariant under the symmetries training augments with;
* trajectories: each episode's first observation (state) and its domain context.

Everything is a pure function of the data and the seed. The partition is written as
``partition.npz`` (labels, centers, feature standardisation; no pickle) and ``partition.json`` (method, seed,
feature names, cluster sizes, data fingerprint), and :func:`assign` maps new samples to clusters.
"""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PARTITION_NPZ = "partition.npz"
PARTITION_JSON = "partition.json"


# ----------------------------------------------------------------------------------------------- features
def lattice_features(spins: np.ndarray, spectral_shells: int = 3,
                     coarse_factors: tuple[int, ...] = ()) -> tuple[np.ndarray, list[str]]:
    """Symmetry-invariant features of lattices ``(N, L, L)`` -> ``((N, F) float64, names)``."""
    from physics.observables import energy_per_site, magnetization_per_site, structure_factor_per_sample

    x = np.asarray(spins)
    if x.ndim == 4 and x.shape[1] == 1:
        x = x[:, 0]
    if x.ndim != 3 or x.shape[1] != x.shape[2] or x.shape[0] < 1:
        raise ValueError(f"spins: expected lattices (N, L, L), received shape {x.shape}")
    L = x.shape[1]
    if spectral_shells > L // 2:
        raise ValueError(f"spectral_shells: expected at most L // 2 = {L // 2}, received {spectral_shells}")
    cols = [np.abs(magnetization_per_site(x)), energy_per_site(x)]
    names = ["abs_m", "energy"]
    if spectral_shells:
        _, s = structure_factor_per_sample(x)
        # log: S(k) of critical lattices spans orders of magnitude between samples
        cols += list(np.log(s[:, :spectral_shells] + 1e-6).T)
        names += [f"log_S_shell{q + 1}" for q in range(spectral_shells)]
    for b in coarse_factors:
        if L % b:
            raise ValueError(f"coarse_factors: expected divisors of L = {L}, received {b}")
        m = L // b
        blocks = x.reshape(x.shape[0], m, b, m, b).astype(np.float64).mean(axis=(2, 4))
        cols.append(np.abs(blocks).mean(axis=(1, 2)))
        names.append(f"block_abs_m_b{b}")
    return np.stack(cols, axis=1).astype(np.float64), names


def trajectory_features(first_obs: np.ndarray, obs_layout: dict[str, tuple[int, int]],
                        mode: str = "obs_context") -> tuple[np.ndarray, list[str]]:
    """Per-episode features from the first observation of each episode ``(E, Do)``.

    ``obs_context``: the state part and the domain context; ``context`` or ``obs``: one of them.
    """
    o = np.asarray(first_obs, dtype=np.float64)
    if o.ndim != 2:
        raise ValueError(f"first_obs: expected (E, Do), received shape {o.shape}")
    s0, s1 = obs_layout.get("state", (0, o.shape[1]))
    ctx = obs_layout.get("context")
    parts, names = [], []
    if mode in ("obs_context", "obs"):
        parts.append(o[:, s0:s1])
        names += [f"state{i}" for i in range(s1 - s0)]
    if mode in ("obs_context", "context"):
        if ctx is None:
            if mode == "context":
                raise ValueError("trajectory_features: mode 'context' needs demos with a domain context "
                                 "(collected without --no-context)")
        else:
            parts.append(o[:, ctx[0]:ctx[1]])
            names += [f"context{i}" for i in range(ctx[1] - ctx[0])]
    if not parts:
        raise ValueError(f"mode: expected 'obs_context', 'context' or 'obs', received {mode!r}")
    return np.concatenate(parts, axis=1), names


# ------------------------------------------------------------------------------------------------ k-means
def _kmeanspp(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding (Arthur & Vassilvitskii 2007): each next center drawn proportional to D(x)^2."""
    centers = [x[rng.integers(x.shape[0])]]
    d2 = ((x - centers[0]) ** 2).sum(axis=1)
    for _ in range(1, k):
        total = d2.sum()
        # all points coincide with a center: any choice is as good
        idx = rng.integers(x.shape[0]) if total <= 0 else rng.choice(x.shape[0], p=d2 / total)
        centers.append(x[idx])
        d2 = np.minimum(d2, ((x - x[idx]) ** 2).sum(axis=1))
    return np.stack(centers)


def _sq_dist(x: np.ndarray, centers: np.ndarray) -> np.ndarray:
    return ((x[:, None, :] - centers[None, :, :]) ** 2).sum(axis=2)


def _lloyd(x: np.ndarray, centers: np.ndarray, max_iter: int) -> tuple[np.ndarray, np.ndarray, float]:
    labels = np.full(x.shape[0], -1)
    for _ in range(max_iter):
        new = _sq_dist(x, centers).argmin(axis=1)
        if np.array_equal(new, labels):
            break
        labels = new
        for j in range(centers.shape[0]):
            members = x[labels == j]
            if members.shape[0]:  # an emptied cluster keeps its center (it may win points back)
                centers[j] = members.mean(axis=0)
    d = _sq_dist(x, centers)
    labels = d.argmin(axis=1)
    return labels, centers, float(d[np.arange(x.shape[0]), labels].sum())


def kmeans(x: np.ndarray, k: int, seed: int = 0, n_init: int = 8,
           max_iter: int = 200) -> tuple[np.ndarray, np.ndarray, float]:
    """Lloyd's k-means on ``x (N, F)`` with k-means++ seeding; the best of ``n_init`` restarts.

    Returns ``(labels (N,), centers (k, F), inertia)``. Clusters are numbered by their center's first feature
    (ascending), so labels do not depend on the order the restarts found them in. Deterministic given ``seed``.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 1:
        raise ValueError(f"x: expected features (N, F), received shape {x.shape}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= x.shape[0]:
        raise ValueError(f"k: expected an int in [1, N={x.shape[0]}], received {k!r}")
    rng = np.random.default_rng(seed)
    best = None
    for _ in range(n_init):
        labels, centers, inertia = _lloyd(x, _kmeanspp(x, int(k), rng), max_iter)
        if best is None or inertia < best[2] - 1e-12:
            best = (labels, centers, inertia)
    labels, centers, inertia = best
    order = np.lexsort(centers.T[::-1])           # by first feature, ties by the next ones
    remap = np.empty(k, dtype=np.int64)
    remap[order] = np.arange(k)
    return remap[labels], centers[order], inertia


# ---------------------------------------------------------------------------------------------- partition
@dataclass(frozen=True, eq=False)
class Partition:
    """Cluster labels of a training set and what is needed to assign new samples."""

    labels: np.ndarray                 #: (N,) int64 in 0..K-1
    num_clusters: int
    method: str                        #: "kmeans" or "given"
    feature_names: tuple[str, ...]
    mean: np.ndarray                   #: (F,) feature standardisation
    std: np.ndarray                    #: (F,)
    centers: np.ndarray                #: (K, F) in standardised units (k-means), or the cluster means (given)
    seed: int
    inertia: float
    data_fingerprint: str              #: SHA-256 of the data the labels refer to

    @property
    def sizes(self) -> list[int]:
        return np.bincount(self.labels, minlength=self.num_clusters).tolist()

    def indices(self, k: int) -> np.ndarray:
        """Rows of the training set in cluster ``k`` (ascending)."""
        if not 0 <= k < self.num_clusters:
            raise ValueError(f"k: expected a cluster in [0, {self.num_clusters - 1}], received {k}")
        return np.nonzero(self.labels == k)[0]

    def meta(self) -> dict:
        return {"method": self.method, "num_clusters": self.num_clusters, "seed": self.seed,
                "feature_names": list(self.feature_names), "sizes": self.sizes, "inertia": self.inertia,
                "data_fingerprint": self.data_fingerprint, "num_samples": int(self.labels.shape[0])}


def fingerprint(*arrays: np.ndarray) -> str:
    """SHA-256 of arrays (shape, dtype and bytes): identifies the data a partition belongs to."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.shape}|{a.dtype.str}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def standardise(features: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(z, mean, std)``; a constant feature gets std 1 (it carries no information, and must not divide by 0)."""
    mean = features.mean(axis=0)
    std = features.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    return (features - mean) / std, mean, std


def kmeans_partition(features: np.ndarray, names: list[str], k: int, seed: int, n_init: int, max_iter: int,
                     data_fingerprint: str, min_cluster_size: int = 1) -> Partition:
    """k-means on standardised ``features (N, F)``; every cluster must reach ``min_cluster_size``."""
    z, mean, std = standardise(np.asarray(features, dtype=np.float64))
    labels, centers, inertia = kmeans(z, k, seed=seed, n_init=n_init, max_iter=max_iter)
    part = Partition(labels.astype(np.int64), int(k), "kmeans", tuple(names), mean, std, centers, int(seed),
                     inertia, data_fingerprint)
    _check_sizes(part, min_cluster_size)
    return part


def given_partition(labels: np.ndarray, k: int, features: np.ndarray, names: list[str], data_fingerprint: str,
                    min_cluster_size: int = 1) -> Partition:
    """A user-given labelling ``(N,)`` with values in ``0..k-1``; centers are the clusters' feature means."""
    lab = np.asarray(labels)
    n = features.shape[0]
    if lab.shape != (n,) or not np.issubdtype(lab.dtype, np.integer):
        raise ValueError(f"labels: expected integers of shape ({n},) (one per training sample), received "
                         f"{lab.dtype} of shape {lab.shape}")
    if lab.min() < 0 or lab.max() >= k:
        raise ValueError(f"labels: expected values in [0, {k - 1}] for num_experts = {k}, received "
                         f"[{lab.min()}, {lab.max()}]")
    z, mean, std = standardise(np.asarray(features, dtype=np.float64))
    centers = np.stack([z[lab == j].mean(axis=0) if np.any(lab == j) else np.zeros(z.shape[1])
                        for j in range(k)])
    d = _sq_dist(z, centers)
    part = Partition(lab.astype(np.int64), int(k), "given", tuple(names), mean, std, centers, 0,
                     float(d[np.arange(n), lab].sum()), data_fingerprint)
    _check_sizes(part, min_cluster_size)
    return part


def _check_sizes(part: Partition, min_size: int) -> None:
    small = [(j, s) for j, s in enumerate(part.sizes) if s < min_size]
    if small:
        raise ValueError(f"partition: expected every cluster to hold at least {min_size} samples, received "
                         f"sizes {part.sizes} (clusters {[j for j, _ in small]} too small); use fewer experts "
                         "or more data")


def assign(part: Partition, features: np.ndarray) -> np.ndarray:
    """Nearest-center cluster of new samples ``features (M, F)`` -> ``(M,)`` int64."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or f.shape[1] != part.mean.shape[0]:
        raise ValueError(f"features: expected shape (M, {part.mean.shape[0]}), received {f.shape}")
    return _sq_dist((f - part.mean) / part.std, part.centers).argmin(axis=1).astype(np.int64)


def save_partition(part: Partition, out_dir: str | os.PathLike) -> Path:
    """Write ``partition.npz`` + ``partition.json`` into ``out_dir`` (atomically; no pickle)."""
    from simdiff.utils.io import atomic_write_bytes, write_json

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    np.savez(buf, labels=part.labels, mean=part.mean, std=part.std, centers=part.centers)
    atomic_write_bytes(out_dir / PARTITION_NPZ, buf.getvalue())
    write_json(out_dir / PARTITION_JSON, part.meta())
    return out_dir


def load_partition(out_dir: str | os.PathLike) -> Partition:
    """Read a partition written by :func:`save_partition`."""
    from simdiff.errors import DatasetError
    from simdiff.utils.io import read_json

    out_dir = Path(out_dir)
    if not (out_dir / PARTITION_NPZ).exists() or not (out_dir / PARTITION_JSON).exists():
        raise FileNotFoundError(f"{out_dir}: no partition here (expected {PARTITION_NPZ} and {PARTITION_JSON})")
    meta = read_json(out_dir / PARTITION_JSON)
    try:
        with np.load(out_dir / PARTITION_NPZ, allow_pickle=False) as z:
            arrays = {k: np.asarray(z[k]) for k in ("labels", "mean", "std", "centers")}
    except (OSError, ValueError, KeyError) as exc:
        raise DatasetError(f"{out_dir / PARTITION_NPZ}: unreadable partition ({exc})") from exc
    return Partition(arrays["labels"].astype(np.int64), int(meta["num_clusters"]), meta["method"],
                     tuple(meta["feature_names"]), arrays["mean"], arrays["std"], arrays["centers"],
                     int(meta["seed"]), float(meta["inertia"]), meta["data_fingerprint"])


# ------------------------------------------------------------------------------------------ compute split
def split_steps(total: int, sizes: list[int], split: str = "proportional", min_steps: int = 1) -> list[int]:
    """Per-expert optimisation steps summing to ``total`` (largest remainders; at least ``min_steps`` each).

    ``proportional``: in proportion to the cluster ``sizes``; ``equal``: ``total / K`` each.
    """
    k = len(sizes)
    if k < 1 or total < k:
        raise ValueError(f"total: expected at least one step per expert ({k}), received {total}")
    if split not in ("proportional", "equal"):
        raise ValueError(f"split: expected 'proportional' or 'equal', received {split!r}")
    w = np.asarray(sizes, dtype=np.float64) if split == "proportional" else np.ones(k)
    if np.any(w < 0) or w.sum() <= 0:
        raise ValueError(f"sizes: expected non-negative cluster sizes with a positive sum, received {sizes}")
    raw = total * w / w.sum()
    steps = np.floor(raw).astype(np.int64)
    for j in np.argsort(-(raw - steps), kind="stable")[: total - int(steps.sum())]:
        steps[j] += 1
    return [int(max(s, min_steps)) for s in steps]


__all__ = ["lattice_features", "trajectory_features", "kmeans", "Partition", "fingerprint", "standardise",
           "kmeans_partition", "given_partition", "assign", "save_partition", "load_partition", "split_steps",
           "PARTITION_NPZ", "PARTITION_JSON"]
