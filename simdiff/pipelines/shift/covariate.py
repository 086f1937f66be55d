"""Covariate-shift statistics: how far the states a policy visits are from the states it was trained on.

Pure functions over arrays (NumPy/SciPy only):

* :func:`knn_distance_ratio`: each visited state's distance to its k-th nearest training state, divided by the
  typical k-NN distance *among* training states (leave-one-out). About 1 when the visited states come from the
  training distribution, larger when they leave it. Features are standardized by the training states first, so
  no coordinate dominates by its units.
* :func:`mmd_rbf` / :func:`mmd_permutation_test`: squared maximum mean discrepancy with a Gaussian (RBF) kernel
  whose bandwidth is the median pairwise distance of the pooled sample (the median heuristic; Gretton et al.,
  "A Kernel Two-Sample Test", JMLR 2012, eq. 3 for the unbiased estimate). About 0 for identical
  distributions; the permutation test turns it into a p-value.
* :func:`compounding_error`: per time step, the distance between a policy's trajectory and the expert's on
  the same seed (same domain, same initial state), i.e. how an early small error grows over the horizon.

Shapes: states are ``(N, D)`` float arrays; trajectories are lists of ``(T_e, D)`` arrays or padded
``(E, T, D)`` arrays with ``lengths (E,)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


# -- helpers ----------------------------------------------------------------------------------------------------
def _states(name: str, x: np.ndarray, dim: int | None = None, min_rows: int = 2) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"{name}: expected states of shape (N, D), received shape {x.shape}")
    if dim is not None and x.shape[1] != dim:
        raise ValueError(f"{name}: expected {dim} features per state (as the reference), received {x.shape[1]}")
    if x.shape[0] < min_rows:
        raise ValueError(f"{name}: expected at least {min_rows} states, received {x.shape[0]}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name}: expected finite values, received NaN or inf")
    return x


def standardizer(reference: np.ndarray, eps: float = 1e-8) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and std of ``reference (N, D)``; constant features get std 1 (they carry no scale)."""
    ref = _states("reference", reference, min_rows=1)
    mean, std = ref.mean(axis=0), ref.std(axis=0)
    return mean, np.where(std > eps, std, 1.0)


def subsample(x: np.ndarray, max_rows: int | None, rng: np.random.Generator) -> np.ndarray:
    """At most ``max_rows`` rows of ``x``, drawn without replacement (all rows, in order, when fewer)."""
    return x[_subsample_idx(x.shape[0], max_rows, rng)]


# -- k-nearest-neighbour distance ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class KnnResult:
    ratio_mean: float  # mean over query states of d_k(query, train) / scale
    ratio_median: float
    ratio_p90: float
    scale: float  # median leave-one-out k-NN distance among the training states (standardized units)
    k: int
    per_state: np.ndarray  # (N,) the ratios

    def to_dict(self) -> dict:
        return {"ratio_mean": self.ratio_mean, "ratio_median": self.ratio_median, "ratio_p90": self.ratio_p90,
                "scale": self.scale, "k": self.k, "states": int(self.per_state.shape[0])}


def knn_distance_ratio(query: np.ndarray, reference: np.ndarray, k: int = 5, *,
                       max_reference: int | None = 20000, seed: int = 0) -> KnnResult:
    """Normalized k-NN distance of ``query (N, D)`` states to ``reference (M, D)`` training states.

    Both are standardized with the reference's per-feature mean/std. ``d_k(q)`` is the Euclidean distance from
    ``q`` to its k-th nearest reference state; the scale is the median over reference states ``r`` of their k-th
    nearest *other* reference state (leave-one-out), so a query drawn from the reference distribution has a
    ratio of about 1 (exactly comparable: both see about M reference points). ``max_reference`` caps M by
    a seeded subsample (the tree query is O(M log M)).
    """
    from scipy.spatial import cKDTree

    ref = _states("reference", reference, min_rows=k + 1)
    q = _states("query", query, dim=ref.shape[1], min_rows=1)
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k: expected a positive integer, received {k!r}")
    ref = subsample(ref, max_reference, np.random.default_rng(seed))
    if ref.shape[0] < k + 1:
        raise ValueError(f"reference: expected more than k={k} states, received {ref.shape[0]}")
    mean, std = standardizer(ref)
    ref_z, q_z = (ref - mean) / std, (q - mean) / std
    tree = cKDTree(ref_z)
    # Leave-one-out: the nearest reference point of a reference point is itself, so ask for k + 1.
    d_ref = tree.query(ref_z, k=k + 1)[0][:, k]
    scale = float(np.median(d_ref))
    if scale <= 0.0:
        # Duplicated training states: fall back to the mean so the ratio stays finite and meaningful.
        scale = float(np.mean(d_ref)) or 1.0
    d_q = tree.query(q_z, k=k)[0]
    d_q = d_q[:, k - 1] if d_q.ndim == 2 else d_q
    ratio = d_q / scale
    return KnnResult(ratio_mean=float(ratio.mean()), ratio_median=float(np.median(ratio)),
                     ratio_p90=float(np.quantile(ratio, 0.9)), scale=scale, k=int(k), per_state=ratio)


# -- MMD ------------------------------------------------------------------------------------------------------------
def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.maximum(d, 0.0)


def median_bandwidth(z: np.ndarray) -> float:
    """Median heuristic: the median Euclidean distance between distinct rows of ``z (N, D)`` (1.0 if all equal)."""
    z = _states("z", z)
    d = _sq_dists(z, z)[np.triu_indices(z.shape[0], k=1)]
    med = float(np.sqrt(np.median(d)))
    return med if med > 0.0 else 1.0


def _mmd2_from_kernel(kern: np.ndarray, n: int) -> float:
    """Unbiased MMD^2 from the pooled kernel matrix whose first ``n`` rows are sample X (Gretton 2012, eq. 3)."""
    labels = np.zeros((1, kern.shape[0]), dtype=bool)
    labels[0, :n] = True
    return float(_mmd2_labelled(kern, labels)[0])


def _mmd2_labelled(kern: np.ndarray, is_x: np.ndarray) -> np.ndarray:
    """Unbiased MMD^2 for each row of ``is_x (P, N)`` (True: the point belongs to X), from one kernel matrix.

    Block sums come from two matrix products, so P permutations cost one ``(N, N) @ (N, P)`` product.
    """
    a = is_x.astype(np.float64)
    b = 1.0 - a
    n, m = a.sum(1), b.sum(1)
    diag = np.diag(kern)
    ka, kb = kern @ a.T, kern @ b.T  # (N, P)
    sxx = ((a.T * ka).sum(0) - a @ diag) / (n * (n - 1))
    syy = ((b.T * kb).sum(0) - b @ diag) / (m * (m - 1))
    sxy = (b.T * ka).sum(0) / (n * m)
    return sxx + syy - 2.0 * sxy


def _pooled_kernel(x: np.ndarray, y: np.ndarray, bandwidth: float | None) -> tuple[np.ndarray, float]:
    mean, std = standardizer(np.concatenate([x, y]))
    z = (np.concatenate([x, y]) - mean) / std
    d2 = _sq_dists(z, z)
    if bandwidth is None:
        iu = np.triu_indices(z.shape[0], k=1)
        med = float(np.sqrt(np.median(d2[iu])))
        bandwidth = med if med > 0.0 else 1.0
    if not bandwidth > 0.0:
        raise ValueError(f"bandwidth: expected a positive number or None (median heuristic), received {bandwidth}")
    return np.exp(-d2 / (2.0 * bandwidth * bandwidth)), float(bandwidth)


def mmd_rbf(x: np.ndarray, y: np.ndarray, bandwidth: float | None = None) -> tuple[float, float]:
    """Unbiased squared MMD between ``x (N, D)`` and ``y (M, D)`` with an RBF kernel; returns (mmd2, bandwidth).

    Features are standardized by the pooled sample; ``bandwidth=None`` uses the median heuristic on it.
    The unbiased estimate can be slightly negative when the distributions are equal.
    """
    x = _states("x", x)
    y = _states("y", y, dim=x.shape[1])
    kern, bw = _pooled_kernel(x, y, bandwidth)
    return _mmd2_from_kernel(kern, x.shape[0]), bw


@dataclass(frozen=True)
class MmdResult:
    mmd2: float
    p_value: float
    bandwidth: float
    permutations: int
    n_x: int
    n_y: int

    def to_dict(self) -> dict:
        return {"mmd2": self.mmd2, "p_value": self.p_value, "bandwidth": self.bandwidth,
                "permutations": self.permutations, "n_x": self.n_x, "n_y": self.n_y}


def mmd_permutation_test(x: np.ndarray, y: np.ndarray, *, permutations: int = 200, seed: int = 0,
                         max_samples: int | None = 500, bandwidth: float | None = None,
                         x_groups: np.ndarray | None = None, y_groups: np.ndarray | None = None) -> MmdResult:
    """Two-sample test of ``x (N, D)`` against ``y (M, D)``: unbiased RBF MMD^2 and its permutation p-value.

    Each sample is first cut to ``max_samples`` rows by a seeded subsample (the kernel matrix is quadratic).
    The p-value is ``(1 + #{permuted MMD^2 >= observed}) / (1 + permutations)``, the permutations drawn from
    ``numpy.random.default_rng(seed)``; the kernel (and bandwidth) is computed once on the pooled sample, so a
    permutation only relabels it.

    ``x_groups (N,)`` / ``y_groups (M,)``: optional group ids (e.g. the episode of each state). States of one
    trajectory are strongly correlated, so permuting single states would treat them as independent draws and
    give far too small p-values; with groups, whole groups are permuted between the samples (a block
    permutation test, exchangeable under the null when episodes are independent).
    """
    if not isinstance(permutations, (int, np.integer)) or permutations < 1:
        raise ValueError(f"permutations: expected a positive integer, received {permutations!r}")
    if (x_groups is None) != (y_groups is None):
        raise ValueError("x_groups and y_groups: give both or neither")
    rng = np.random.default_rng(seed)
    x = _states("x", x)
    y = _states("y", y, dim=x.shape[1])
    if x_groups is None:
        gx, gy = np.arange(x.shape[0]), np.arange(y.shape[0])
    else:
        gx, gy = _groups("x_groups", x_groups, x.shape[0]), _groups("y_groups", y_groups, y.shape[0])
    ix = _subsample_idx(x.shape[0], max_samples, rng)
    iy = _subsample_idx(y.shape[0], max_samples, rng)
    x, y, gx, gy = x[ix], y[iy], gx[ix], gy[iy]
    # Group ids of the pooled sample: X's groups first, then Y's (renumbered so they cannot collide).
    _, gx_code = np.unique(gx, return_inverse=True)
    _, gy_code = np.unique(gy, return_inverse=True)
    n_gx = int(gx_code.max()) + 1
    codes = np.concatenate([gx_code, gy_code + n_gx])
    n_groups = int(codes.max()) + 1
    if n_gx < 2 or n_groups - n_gx < 2:
        raise ValueError(f"mmd_permutation_test: expected at least 2 groups per sample, received {n_gx} and "
                         f"{n_groups - n_gx}")
    n = x.shape[0]
    kern, bw = _pooled_kernel(x, y, bandwidth)
    observed = _mmd2_from_kernel(kern, n)
    exceed, done = 0, 0
    while done < permutations:
        batch = min(64, int(permutations) - done)
        is_x = np.zeros((batch, n_groups), dtype=bool)
        for i in range(batch):
            is_x[i, rng.permutation(n_groups)[:n_gx]] = True
        rows = is_x[:, codes]
        # A relabelling that leaves a side with fewer than 2 points has no unbiased estimate: count it as not
        # exceeding (rare; only with very unequal group sizes).
        ok = (rows.sum(1) >= 2) & ((~rows).sum(1) >= 2)
        stats = np.full(batch, -np.inf)
        if ok.any():
            stats[ok] = _mmd2_labelled(kern, rows[ok])
        exceed += int((stats >= observed).sum())
        done += batch
    return MmdResult(mmd2=observed, p_value=(1 + exceed) / (1 + int(permutations)), bandwidth=bw,
                     permutations=int(permutations), n_x=n, n_y=y.shape[0])


def _groups(name: str, g: np.ndarray, n: int) -> np.ndarray:
    g = np.asarray(g)
    if g.shape != (n,):
        raise ValueError(f"{name}: expected shape ({n},) (one group id per state), received {g.shape}")
    return g


def _subsample_idx(n: int, max_rows: int | None, rng: np.random.Generator) -> np.ndarray:
    if max_rows is None or n <= max_rows:
        return np.arange(n)
    return np.sort(rng.choice(n, size=max_rows, replace=False))


# -- compounding error ---------------------------------------------------------------------------------------------
def pad_hold_last(trajectories: Sequence[np.ndarray], horizon: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Stack ``(T_e, D)`` trajectories into ``(E, T, D)``, repeating each one's last state after it ends.

    An episode that ended (e.g. succeeded and terminated) stays where it stopped, which is what the world does.
    Returns ``(padded, lengths (E,))``; ``T`` is ``horizon`` or the longest trajectory.
    """
    if len(trajectories) == 0:
        raise ValueError("trajectories: expected at least one trajectory, received none")
    arrs = [np.asarray(t, dtype=np.float64) for t in trajectories]
    dim = arrs[0].shape[1] if arrs[0].ndim == 2 else None
    for i, a in enumerate(arrs):
        if a.ndim != 2 or a.shape[0] < 1 or a.shape[1] != dim:
            raise ValueError(f"trajectories[{i}]: expected shape (T >= 1, {dim}), received {a.shape}")
    lengths = np.array([a.shape[0] for a in arrs])
    t_max = int(horizon if horizon is not None else lengths.max())
    out = np.empty((len(arrs), t_max, dim))
    for i, a in enumerate(arrs):
        n = min(a.shape[0], t_max)
        out[i, :n] = a[:n]
        out[i, n:] = a[n - 1]
    return out, lengths


def compounding_error(policy: Sequence[np.ndarray] | np.ndarray, expert: Sequence[np.ndarray] | np.ndarray,
                      horizon: int | None = None) -> dict[str, np.ndarray]:
    """Gap between paired trajectories per time step.

    ``policy[e]`` and ``expert[e]`` are ``(T, D)`` state trajectories of the same episode seed (same domain,
    same start), lists of ragged arrays or ``(E, T, D)`` arrays. Ended trajectories hold their last state
    (:func:`pad_hold_last`). Returns ``{"t": (T,), "mean": (T,), "median": (T,), "p90": (T,), "sem": (T,)}``
    of the Euclidean gap over episodes; ``mean[0]`` is 0 when both start in the same state.
    """
    if len(policy) != len(expert):
        raise ValueError(f"compounding_error: expected as many expert as policy trajectories, received "
                         f"{len(expert)} and {len(policy)}")
    if horizon is None:  # the longer of the two: an episode that ended early holds its last state
        horizon = max(max(len(t) for t in policy), max(len(t) for t in expert))
    p, _ = pad_hold_last(list(policy), horizon)
    e, _ = pad_hold_last(list(expert), horizon)
    t = min(p.shape[1], e.shape[1])
    if p.shape[2] != e.shape[2]:
        raise ValueError(f"compounding_error: expected the same state dimension, received {p.shape[2]} (policy) "
                         f"and {e.shape[2]} (expert)")
    gap = np.linalg.norm(p[:, :t] - e[:, :t], axis=2)  # (E, T)
    n = gap.shape[0]
    sem = gap.std(axis=0, ddof=1) / np.sqrt(n) if n > 1 else np.zeros(t)
    return {"t": np.arange(t), "mean": gap.mean(axis=0), "median": np.median(gap, axis=0),
            "p90": np.quantile(gap, 0.9, axis=0), "sem": sem}
