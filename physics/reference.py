"""Slow, plain NumPy / Python references of the numba kernels in :mod:`physics.ising` (tests and benchmarks only).

Each reference consumes an explicit stream of 32-bit uniform integers in exactly the order documented by its
kernel, so a kernel and its reference given the same stream must end in the same state. They are written
independently of the kernels: the checkerboard update is vectorized over a sublattice, the Wolff cluster is
grown with Python lists and the Swendsen-Wang clusters come from ``scipy.sparse.csgraph``.
"""

from __future__ import annotations

import numpy as np

_TWO32 = 1 << 32


def _sublattices(L: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """For parity 0 and 1: (flat indices of the sites in row-major order, (4, n) flat indices of neighbours)."""
    idx = np.arange(L * L).reshape(L, L)
    i, j = np.divmod(idx, L)
    out = []
    for parity in (0, 1):
        mask = ((i + j) & 1) == parity
        si, sj = i[mask], j[mask]
        nbs = np.stack([((si + 1) % L) * L + sj, ((si - 1) % L) * L + sj, si * L + (sj + 1) % L,
                        si * L + (sj - 1) % L])
        out.append((idx[mask], nbs))
    return out


def checkerboard_reference(spins: np.ndarray, thresholds: np.ndarray, n_sweeps: int,
                           stream: np.ndarray | None = None,
                           rng: np.random.Generator | None = None) -> tuple[np.ndarray, int]:
    """Vectorized NumPy checkerboard Metropolis on (L, L) +-1 spins (even L). Returns (spins, draws used).

    Each half-sweep updates a whole sublattice at once (valid because same-sublattice sites never neighbour
    each other for even L): site flips iff r < thresholds[s h + 4]. The draws come from ``stream`` (in the
    kernel's order: even sites row-major, then odd sites) or, for benchmarking, from ``rng``.
    """
    L = spins.shape[0]
    if L % 2:
        raise ValueError(f"L: expected an even lattice size, received {L}")
    if (stream is None) == (rng is None):
        raise ValueError("expected exactly one of stream or rng")
    flat = np.array(spins, dtype=np.int8).ravel()
    subs = _sublattices(L)
    ptr = 0
    for _ in range(n_sweeps):
        for sites, nbs in subs:
            n = sites.size
            r = stream[ptr:ptr + n] if stream is not None else rng.integers(0, _TWO32, n, dtype=np.uint32)
            if r.size < n:
                raise ValueError("stream: too short")
            sh = flat[sites] * flat[nbs].sum(axis=0)
            flat[sites[r < thresholds[sh + 4]]] *= -1
            ptr += n
    return flat.reshape(L, L), ptr


def _uniform_site_reference(n_sites: int, stream: np.ndarray, ptr: int) -> tuple[int, int]:
    """Lemire's exactly-uniform integer in [0, n_sites), as in physics.ising._uniform_site."""
    m = int(stream[ptr]) * n_sites
    ptr += 1
    if (m & 0xFFFFFFFF) < n_sites:
        t = (_TWO32 - n_sites) % n_sites
        while (m & 0xFFFFFFFF) < t:
            m = int(stream[ptr]) * n_sites
            ptr += 1
    return m >> 32, ptr


def wolff_reference(spins: np.ndarray, p_threshold: int, n_clusters: int,
                    stream: np.ndarray) -> tuple[np.ndarray, int, int]:
    """Pure-Python Wolff. Returns (spins, draws used, spins flipped)."""
    s = np.array(spins, dtype=np.int8)
    L = s.shape[0]
    ptr, flipped = 0, 0
    for _ in range(n_clusters):
        site, ptr = _uniform_site_reference(L * L, stream, ptr)
        i, j = divmod(site, L)
        old = int(s[i, j])
        s[i, j] = -old
        todo = [(i, j)]
        flipped += 1
        while todo:
            i, j = todo.pop()
            for ni, nj in ((i, (j + 1) % L), (i, (j - 1) % L), ((i + 1) % L, j), ((i - 1) % L, j)):
                if s[ni, nj] == old:
                    r = int(stream[ptr])
                    ptr += 1
                    if r < p_threshold:
                        s[ni, nj] = -old
                        todo.append((ni, nj))
                        flipped += 1
    return s, ptr, flipped


def swendsen_wang_reference(spins: np.ndarray, p_threshold: int, n_sweeps: int,
                            stream: np.ndarray) -> tuple[np.ndarray, int, int]:
    """NumPy + scipy Swendsen-Wang. Returns (spins, draws used, clusters)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    s = np.array(spins, dtype=np.int8)
    L = s.shape[0]
    n = L * L
    idx = np.arange(n).reshape(L, L)
    partner = np.stack([np.roll(idx, -1, axis=1), np.roll(idx, -1, axis=0)], axis=-1)  # (L, L, 2): right, down
    ptr, clusters = 0, 0
    for _ in range(n_sweeps):
        neighbour_spin = np.stack([np.roll(s, -1, axis=1), np.roll(s, -1, axis=0)], axis=-1)
        aligned = neighbour_spin == s[..., None]  # C order of (i, j, bond) = the kernel's draw order
        k = int(aligned.sum())
        active = np.zeros_like(aligned)
        active[aligned] = stream[ptr:ptr + k] < p_threshold
        ptr += k
        src = np.broadcast_to(idx[..., None], aligned.shape)[active]
        dst = partner[active]
        graph = coo_matrix((np.ones(src.size), (src, dst)), shape=(n, n))
        n_comp, labels = connected_components(graph, directed=False)
        # Clusters in the order of their smallest site, one draw each.
        _, first = np.unique(labels, return_index=True)
        order = np.argsort(first)
        flip = np.zeros(n_comp, dtype=bool)
        flip[order] = stream[ptr:ptr + n_comp] < (1 << 31)
        ptr += n_comp
        clusters += n_comp
        s = np.where(flip[labels].reshape(L, L), -s, s).astype(np.int8)
    return s, ptr, clusters


def bond_sum_reference(spins: np.ndarray) -> tuple[int, int]:
    """(sum over the 2 L^2 torus bonds of s_i s_j, sum of spins) by explicit loops."""
    L = spins.shape[0]
    bonds = 0
    for i in range(L):
        for j in range(L):
            bonds += int(spins[i, j]) * (int(spins[i, (j + 1) % L]) + int(spins[(i + 1) % L, j]))
    return bonds, int(np.sum(spins, dtype=np.int64))
