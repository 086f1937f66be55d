"""2D Ising model on an L x L torus: numba Monte Carlo kernels, parallel chains and a sampling driver.

The Hamiltonian is H = -sum_<ij> s_i s_j (J = 1, no field) over the 2 L^2 nearest-neighbour bonds of the
periodic lattice; spins are int8 arrays of +-1 with shape (L, L) (one lattice) or (C, L, L) (C chains).

Three algorithms, each a module-level ``numba.njit(cache=True)`` kernel:

* ``metropolis``: checkerboard Metropolis. One sweep updates the even sublattice ((i + j) even) and then the odd
  one; one attempt per site. Needs even L (the torus is bipartite only then).
* ``wolff``: single-cluster Wolff with bond probability p = 1 - exp(-2 / T).
* ``swendsen-wang``: all clusters of the same bond percolation, each flipped with probability 1/2.

Randomness. Every kernel consumes 32-bit uniform integers r in [0, 2^32), either from numba's own
``np.random`` generator seeded inside the kernel (``np.random.seed(seed)`` in njit code seeds numba's
generator, not NumPy's), or from an explicit ``stream`` array. The order of consumption is fixed and written in
each kernel's docstring, so the NumPy references in :mod:`physics.reference` replay the same stream and tests
compare final states exactly. Probabilities become integer thresholds (accept iff r < floor(p 2^32)), which makes
the comparison exact and avoids the slower 53-bit float draw.

Chains. :func:`run_chains` runs C independent chains on a pool of threads (the kernel releases the GIL); each
chain reseeds the generator of the thread that runs it, so results depend on the seeds only, never on the
number of threads.

:func:`sample_configurations` is the front door: it measures the integrated autocorrelation time of the energy
and of |m| in a pilot run, chooses burn-in and thinning from it (unless given), and returns the samples with
those numbers.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field

import numpy as np
from numba import njit

from physics.autocorr import integrated_time

T_C = 2.0 / math.log(1.0 + math.sqrt(2.0))
"""Critical temperature of the square-lattice Ising model, 2 / ln(1 + sqrt 2) = 2.269185..."""

ALGORITHMS = ("metropolis", "wolff", "swendsen-wang")
_ALIASES = {"checkerboard": "metropolis", "sw": "swendsen-wang", "swendsen_wang": "swendsen-wang"}
_ALGO_CODE = {"metropolis": 0, "wolff": 1, "swendsen-wang": 2}
STEP_UNITS = {
    "metropolis": "sweep (L^2 attempts)",
    "wolff": "clusters_per_step Wolff clusters (about L^2 flipped spins, calibrated during burn-in)",
    "swendsen-wang": "sweep (one Swendsen-Wang update)",
}

_TWO32 = 1 << 32
_NO_STREAM = np.empty(0, dtype=np.int64)
# Production blocks record this many samples per chain per kernel call (a progress tick). Fixed, so the
# samples for a seed do not depend on the machine.
_BLOCK = 64


# ---------------------------------------------------------------------------------------------------------
# numba kernels
# ---------------------------------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def _draw(stream, ptr):
    """The 32-bit uniform number ``ptr`` of the run: from ``stream`` if one is given, else from numba's generator.

    Past the end of a stream it returns 2^32 - 1 (rejects every move with p < 1); the Python wrappers check the
    returned pointer and raise, so such a run never reaches the user.
    """
    if stream.shape[0] == 0:
        return np.random.randint(0, 4294967296)
    if ptr < stream.shape[0]:
        return stream[ptr]
    return 4294967295


@njit(cache=True, nogil=True)
def random_stream_kernel(seed, n):
    """The first ``n`` 32-bit draws of numba's generator after ``np.random.seed(seed)`` (for exact tests)."""
    np.random.seed(seed)
    out = np.empty(n, dtype=np.int64)
    for k in range(n):
        out[k] = np.random.randint(0, 4294967296)
    return out


@njit(cache=True, nogil=True)
def _split(spins, even, odd):
    """(L, L) lattice -> its two sublattices, each (L, L // 2): ``even[i, j // 2] = spins[i, j]`` for even i + j."""
    L = spins.shape[0]
    for i in range(L):
        for j in range(L):
            if ((i + j) & 1) == 0:
                even[i, j >> 1] = spins[i, j]
            else:
                odd[i, j >> 1] = spins[i, j]


@njit(cache=True, nogil=True)
def _merge(even, odd, spins):
    L = spins.shape[0]
    for i in range(L):
        for j in range(L):
            if ((i + j) & 1) == 0:
                spins[i, j] = even[i, j >> 1]
            else:
                spins[i, j] = odd[i, j >> 1]


@njit(cache=True, nogil=True)
def _metropolis_half(a, b, thresholds, parity, buf, stream, ptr):
    """Update sublattice ``a`` (sites with (i + j) % 2 == parity) given its neighbours in ``b``.

    Site (i, j) of ``a`` is stored at a[i, j // 2]. Its vertical neighbours are b[i +- 1, j // 2]; its horizontal
    ones are b[i, k] and b[i, k - 1] when i + parity is even (then j = 2k) and b[i, k], b[i, k + 1] otherwise.
    Sweeping the half-lattices as contiguous rows lets the neighbour sums vectorize, and the flips are
    branchless because the accept decision is unpredictable.
    """
    L, H = a.shape
    for i in range(L):
        up = b[i - 1] if i > 0 else b[L - 1]
        down = b[i + 1] if i + 1 < L else b[0]
        row = b[i]
        cur = a[i]
        # Step 1: acceptance threshold of every site of the row (no randomness).
        if ((i + parity) & 1) == 0:
            buf[0] = thresholds[cur[0] * (up[0] + down[0] + row[0] + row[H - 1]) + 4]
            for k in range(1, H):
                buf[k] = thresholds[cur[k] * (up[k] + down[k] + row[k] + row[k - 1]) + 4]
        else:
            for k in range(H - 1):
                buf[k] = thresholds[cur[k] * (up[k] + down[k] + row[k] + row[k + 1]) + 4]
            buf[H - 1] = thresholds[cur[H - 1] * (up[H - 1] + down[H - 1] + row[H - 1] + row[0]) + 4]
        # Step 2: one draw per site, left to right; flip iff r < threshold.
        if stream.shape[0] == 0:
            for k in range(H):
                r = np.random.randint(0, 4294967296)
                s = cur[k]
                cur[k] = -s if r < buf[k] else s
        else:
            for k in range(H):
                r = _draw(stream, ptr + k)
                s = cur[k]
                cur[k] = -s if r < buf[k] else s
        ptr += H
    return ptr


@njit(cache=True, nogil=True)
def _metropolis_sweeps_split(even, odd, thresholds, n_sweeps, buf, stream, ptr):
    for _ in range(n_sweeps):
        ptr = _metropolis_half(even, odd, thresholds, 0, buf, stream, ptr)
        ptr = _metropolis_half(odd, even, thresholds, 1, buf, stream, ptr)
    return ptr


@njit(cache=True, nogil=True)
def metropolis_kernel(spins, thresholds, n_sweeps, seed, stream):
    """``n_sweeps`` checkerboard Metropolis sweeps of ``spins`` (L, L) int8, in place. Returns draws used.

    thresholds: (9,) int64, entry s*h + 4 = floor(min(1, exp(-2 s h / T)) 2^32) (h = sum of the 4 neighbours).
    Consumption: per sweep L^2 draws, the even sites in row-major order, then the odd sites in row-major
    order; site flips iff its draw r < thresholds[s h + 4]. ``seed >= 0`` reseeds numba's generator first.
    """
    if seed >= 0:
        np.random.seed(seed)
    L = spins.shape[0]
    even = np.empty((L, L // 2), dtype=np.int8)
    odd = np.empty((L, L // 2), dtype=np.int8)
    buf = np.empty(L // 2, dtype=np.int64)
    _split(spins, even, odd)
    ptr = _metropolis_sweeps_split(even, odd, thresholds, n_sweeps, buf, stream, 0)
    _merge(even, odd, spins)
    return ptr


@njit(cache=True, nogil=True)
def _uniform_site(n_sites, stream, ptr):
    """Uniform site index in [0, n_sites) by Lemire's multiply-shift with rejection (exactly uniform)."""
    m = _draw(stream, ptr) * n_sites
    ptr += 1
    low = m & 0xFFFFFFFF
    if low < n_sites:
        t = (4294967296 - n_sites) % n_sites
        while low < t:
            m = _draw(stream, ptr) * n_sites
            ptr += 1
            low = m & 0xFFFFFFFF
    return m >> 32, ptr


@njit(cache=True, nogil=True)
def _wolff_cluster(spins, p_threshold, stack, stream, ptr):
    """Grow and flip one Wolff cluster. Returns (draws pointer, cluster size).

    Consumption: the seed site (see :func:`_uniform_site`), then, depth first (last added site first), for each
    neighbour in the order right, left, down, up that still carries the cluster's old spin, one draw; it joins
    (and is flipped at once, which marks it) iff r < p_threshold.
    """
    L = spins.shape[0]
    site, ptr = _uniform_site(L * L, stream, ptr)
    i = site // L
    j = site - i * L
    s0 = spins[i, j]
    spins[i, j] = -s0
    stack[0] = site
    top = 1
    size = 1
    while top > 0:
        top -= 1
        site = stack[top]
        i = site // L
        j = site - i * L
        for d in range(4):
            ni = i
            nj = j
            if d == 0:
                nj = j + 1 if j + 1 < L else 0
            elif d == 1:
                nj = j - 1 if j > 0 else L - 1
            elif d == 2:
                ni = i + 1 if i + 1 < L else 0
            else:
                ni = i - 1 if i > 0 else L - 1
            if spins[ni, nj] == s0:
                r = _draw(stream, ptr)
                ptr += 1
                if r < p_threshold:
                    spins[ni, nj] = -s0
                    stack[top] = ni * L + nj
                    top += 1
                    size += 1
    return ptr, size


@njit(cache=True, nogil=True)
def wolff_kernel(spins, p_threshold, n_clusters, seed, stream):
    """Flip ``n_clusters`` Wolff clusters of ``spins`` (L, L) int8 in place. Returns (draws used, spins flipped).

    p_threshold = floor((1 - exp(-2 / T)) 2^32). ``seed >= 0`` reseeds numba's generator first.
    """
    if seed >= 0:
        np.random.seed(seed)
    L = spins.shape[0]
    stack = np.empty(L * L, dtype=np.int64)
    ptr = 0
    flipped = 0
    for _ in range(n_clusters):
        ptr, size = _wolff_cluster(spins, p_threshold, stack, stream, ptr)
        flipped += size
    return ptr, flipped


@njit(cache=True, nogil=True)
def _find(parent, x):
    while parent[x] != x:
        parent[x] = parent[parent[x]]  # path halving keeps the trees shallow
        x = parent[x]
    return x


@njit(cache=True, nogil=True)
def _union(parent, a, b):
    ra = _find(parent, a)
    rb = _find(parent, b)
    if ra < rb:
        parent[rb] = ra
    elif rb < ra:
        parent[ra] = rb


@njit(cache=True, nogil=True)
def _sw_sweep(spins, p_threshold, parent, decision, stream, ptr):
    """One Swendsen-Wang update of ``spins`` in place. Returns (draws pointer, number of clusters).

    Consumption: sites in row-major order; for each, its right bond and then its down bond, one draw per bond
    whose two spins agree (active iff r < p_threshold). Then clusters in the order of their first (smallest)
    site, one draw each: the cluster flips iff r < 2^31.
    """
    L = spins.shape[0]
    n = L * L
    for x in range(n):
        parent[x] = x
        decision[x] = 0
    for i in range(L):
        down = i + 1 if i + 1 < L else 0
        for j in range(L):
            s = spins[i, j]
            right = j + 1 if j + 1 < L else 0
            if spins[i, right] == s:
                r = _draw(stream, ptr)
                ptr += 1
                if r < p_threshold:
                    _union(parent, i * L + j, i * L + right)
            if spins[down, j] == s:
                r = _draw(stream, ptr)
                ptr += 1
                if r < p_threshold:
                    _union(parent, i * L + j, down * L + j)
    n_clusters = 0
    for x in range(n):
        root = _find(parent, x)
        if decision[root] == 0:
            r = _draw(stream, ptr)
            ptr += 1
            decision[root] = 1 if r < 2147483648 else 2
            n_clusters += 1
        if decision[root] == 1:
            i = x // L
            j = x - i * L
            spins[i, j] = -spins[i, j]
    return ptr, n_clusters


@njit(cache=True, nogil=True)
def swendsen_wang_kernel(spins, p_threshold, n_sweeps, seed, stream):
    """``n_sweeps`` Swendsen-Wang updates of ``spins`` (L, L) int8 in place. Returns (draws used, clusters)."""
    if seed >= 0:
        np.random.seed(seed)
    n = spins.shape[0] * spins.shape[1]
    parent = np.empty(n, dtype=np.int64)
    decision = np.empty(n, dtype=np.int8)
    ptr = 0
    clusters = 0
    for _ in range(n_sweeps):
        ptr, c = _sw_sweep(spins, p_threshold, parent, decision, stream, ptr)
        clusters += c
    return ptr, clusters


@njit(cache=True, nogil=True)
def bond_sum_and_magnetization(spins):
    """(sum over bonds of s_i s_j, sum of spins) of one (L, L) lattice; energy = -bond sum."""
    L = spins.shape[0]
    bonds = 0
    mag = 0
    for i in range(L):
        down = i + 1 if i + 1 < L else 0
        for j in range(L):
            right = j + 1 if j + 1 < L else 0
            s = np.int64(spins[i, j])
            bonds += s * (spins[i, right] + spins[down, j])
            mag += s
    return bonds, mag


@njit(cache=True, nogil=True)
def chain_kernel(spins, algo, thresholds, p_threshold, wolff_clusters_per_step, n_records, steps, seed, store,
                 out_spins, out_bonds, out_mag, stats):
    """Advance one chain ``spins`` (L, L) in place: ``steps`` algorithm steps before each of ``n_records`` records.

    algo: 0 metropolis, 1 wolff, 2 swendsen-wang; a Wolff step is ``wolff_clusters_per_step`` clusters (a fixed
    count: stopping after a number of flipped spins instead would bias the recorded states towards the end of
    large clusters); 0 selects that biased sweep-equivalent step, for burn-in only. seed: reseeds numba's generator of the calling thread (the generator state is per thread,
    so chains in different threads never share a stream). out_spins: (n_records, L, L) int8 when ``store``
    (else (0, L, L)); out_bonds, out_mag: (n_records,) int64 lattice totals; stats: (2,) int64, set to
    (clusters built, spins flipped) for the cluster algorithms. Runs without the GIL, so Python threads run
    chains in parallel.
    """
    np.random.seed(seed)
    no_stream = np.empty(0, dtype=np.int64)
    stats[0] = 0
    stats[1] = 0
    L = spins.shape[0]
    n = L * L
    if algo == 0:
        even = np.empty((L, L // 2), dtype=np.int8)
        odd = np.empty((L, L // 2), dtype=np.int8)
        buf = np.empty(L // 2, dtype=np.int64)
        _split(spins, even, odd)
        for k in range(n_records):
            _metropolis_sweeps_split(even, odd, thresholds, steps, buf, no_stream, 0)
            _merge(even, odd, spins)
            bonds, mag = bond_sum_and_magnetization(spins)
            out_bonds[k] = bonds
            out_mag[k] = mag
            if store:
                out_spins[k] = spins
    elif algo == 1:
        stack = np.empty(n, dtype=np.int64)
        for k in range(n_records):
            if wolff_clusters_per_step > 0:
                for _ in range(steps * wolff_clusters_per_step):
                    _, size = _wolff_cluster(spins, p_threshold, stack, no_stream, 0)
                    stats[0] += 1
                    stats[1] += size
            else:
                # Burn-in only: each step flips clusters until >= L^2 spins have flipped (bounded work from
                # any start; the stopping rule biases the states it stops at, so nothing recorded here is used).
                for _ in range(steps):
                    flipped = 0
                    while flipped < n:
                        _, size = _wolff_cluster(spins, p_threshold, stack, no_stream, 0)
                        flipped += size
                        stats[0] += 1
                        stats[1] += size
            bonds, mag = bond_sum_and_magnetization(spins)
            out_bonds[k] = bonds
            out_mag[k] = mag
            if store:
                out_spins[k] = spins
    else:
        parent = np.empty(n, dtype=np.int64)
        decision = np.empty(n, dtype=np.int8)
        for k in range(n_records):
            for _ in range(steps):
                _, clusters = _sw_sweep(spins, p_threshold, parent, decision, no_stream, 0)
                stats[0] += clusters
                stats[1] += n
            bonds, mag = bond_sum_and_magnetization(spins)
            out_bonds[k] = bonds
            out_mag[k] = mag
            if store:
                out_spins[k] = spins


# ---------------------------------------------------------------------------------------------------------
# validation and probabilities
# ---------------------------------------------------------------------------------------------------------


def canonical_algorithm(algorithm: str) -> str:
    """The canonical algorithm name; ValueError listing the choices for an unknown one."""
    if not isinstance(algorithm, str):
        raise TypeError(f"algorithm: expected a string, received {type(algorithm).__name__}")
    name = _ALIASES.get(algorithm.lower(), algorithm.lower())
    if name not in ALGORITHMS:
        raise ValueError(f"algorithm: expected one of {', '.join(ALGORITHMS)}, received {algorithm!r}")
    return name


def check_size(L: int, algorithm: str | None = None) -> int:
    if isinstance(L, bool) or not isinstance(L, (int, np.integer)):
        raise TypeError(f"L: expected an integer, received {type(L).__name__}")
    if L < 2:
        raise ValueError(f"L: expected an integer >= 2, received {L}")
    if algorithm == "metropolis" and L % 2:
        raise ValueError(f"L: checkerboard Metropolis needs an even L (the torus is bipartite only then), "
                         f"received {L}")
    return int(L)


def sampling_bytes(L: int, n_samples: int, chains: int) -> int:
    """Peak bytes :func:`sample_configurations` holds: the int8 output, each chain's lattice, its block of
    recorded lattices and its cluster workspace (an int64 stack or union-find parent plus flags per site)."""
    per_chain = min(_BLOCK, -(-n_samples // chains)) + 1 + 9
    return int(L) * int(L) * (int(n_samples) + int(chains) * per_chain)


def physical_memory_bytes() -> int | None:
    """This machine's physical memory in bytes, or None where the OS does not say."""
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, OSError, ValueError):
        return None


def check_memory(L: int, n_samples: int, chains: int, fraction: float = 0.8) -> int:
    """Refuse a sampling run that would need more than ``fraction`` of physical memory, before any work."""
    need = sampling_bytes(L, n_samples, min(chains, n_samples))
    have = physical_memory_bytes()
    if have is not None and need > fraction * have:
        raise ValueError(f"L = {L}, {n_samples} samples, {chains} chains: needs about {need / 2**30:.1f} GiB, "
                         f"more than {fraction:.0%} of this machine's {have / 2**30:.1f} GiB; expected a smaller "
                         f"L, fewer samples or fewer chains")
    return need


def check_temperature(temperature: float) -> float:
    try:
        t = float(temperature)
    except (TypeError, ValueError):
        raise TypeError(f"temperature: expected a number, received {temperature!r}") from None
    if not math.isfinite(t) or t <= 0:
        raise ValueError(f"temperature: expected a finite number > 0, received {temperature}")
    return t


def check_lattice(spins: np.ndarray, name: str = "spins", batched: bool = False) -> np.ndarray:
    """Validate an int8 +-1 lattice of shape (L, L) (or (C, L, L) when ``batched``)."""
    spins = np.asarray(spins)
    want = 3 if batched else 2
    shape_txt = "(C, L, L)" if batched else "(L, L)"
    if spins.ndim != want or spins.shape[-1] != spins.shape[-2]:
        raise ValueError(f"{name}: expected shape {shape_txt}, received {spins.shape}")
    if spins.dtype != np.int8:
        raise TypeError(f"{name}: expected dtype int8, received {spins.dtype}")
    if not np.all(np.abs(spins) == 1):
        raise ValueError(f"{name}: expected values +-1 only")
    check_size(spins.shape[-1])
    return spins


def metropolis_thresholds(temperature: float) -> np.ndarray:
    """(9,) int64: entry s*h + 4 is floor(min(1, exp(-2 s h / T)) 2^32); r < threshold accepts the flip."""
    beta = 1.0 / check_temperature(temperature)
    sh = np.arange(-4, 5, dtype=np.float64)
    p = np.minimum(1.0, np.exp(-2.0 * beta * sh))
    thr = np.floor(p * _TWO32).astype(np.int64)
    thr[p >= 1.0] = _TWO32  # certain acceptance: every r in [0, 2^32) is below it
    return thr


def bond_threshold(temperature: float) -> int:
    """floor((1 - exp(-2 / T)) 2^32): the Wolff / Swendsen-Wang bond activation threshold."""
    beta = 1.0 / check_temperature(temperature)
    return int(math.floor(-math.expm1(-2.0 * beta) * _TWO32))


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed: expected an integer, received {type(seed).__name__}")
    if not 0 <= seed < _TWO32:
        raise ValueError(f"seed: expected an integer in [0, 2^32), received {seed}")
    return int(seed)


def _check_count(value: int, name: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected an integer, received {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, received {value}")
    return int(value)


def _check_stream(stream: np.ndarray) -> np.ndarray:
    stream = np.ascontiguousarray(stream, dtype=np.int64)
    if stream.ndim != 1 or stream.size == 0:
        raise ValueError(f"stream: expected a non-empty 1-D array of 32-bit draws, received shape {stream.shape}")
    if stream.min() < 0 or stream.max() >= _TWO32:
        raise ValueError("stream: expected values in [0, 2^32)")
    return stream


def _stream_used(used: int, stream: np.ndarray) -> int:
    if used > stream.size:
        raise ValueError(f"stream: too short, the run needed {used} draws, received {stream.size}")
    return used


# ---------------------------------------------------------------------------------------------------------
# single-lattice front ends (copies in, copies out)
# ---------------------------------------------------------------------------------------------------------


def random_stream(seed: int, n: int) -> np.ndarray:
    """(n,) int64: the 32-bit draws numba's generator makes after seeding with ``seed``."""
    return random_stream_kernel(_check_seed(seed), _check_count(n, "n"))


def metropolis_sweeps(spins: np.ndarray, temperature: float, n_sweeps: int, seed: int) -> np.ndarray:
    """Checkerboard Metropolis: (L, L) int8 -> (L, L) int8 after ``n_sweeps`` sweeps (input untouched)."""
    out = check_lattice(spins).copy()
    check_size(out.shape[0], "metropolis")
    metropolis_kernel(out, metropolis_thresholds(temperature), _check_count(n_sweeps, "n_sweeps"),
                      _check_seed(seed), _NO_STREAM)
    return out


def metropolis_sweeps_from_stream(spins: np.ndarray, temperature: float, n_sweeps: int,
                                  stream: np.ndarray) -> tuple[np.ndarray, int]:
    """As :func:`metropolis_sweeps` with explicit draws. Returns (spins, draws used = n_sweeps L^2)."""
    out = check_lattice(spins).copy()
    check_size(out.shape[0], "metropolis")
    stream = _check_stream(stream)
    used = metropolis_kernel(out, metropolis_thresholds(temperature), _check_count(n_sweeps, "n_sweeps"), -1,
                             stream)
    return out, _stream_used(used, stream)


def wolff_clusters(spins: np.ndarray, temperature: float, n_clusters: int, seed: int) -> tuple[np.ndarray, int]:
    """Wolff: (L, L) int8 -> ((L, L) int8 after ``n_clusters`` cluster flips, total spins flipped)."""
    out = check_lattice(spins).copy()
    _, flipped = wolff_kernel(out, bond_threshold(temperature), _check_count(n_clusters, "n_clusters"),
                              _check_seed(seed), _NO_STREAM)
    return out, int(flipped)


def wolff_clusters_from_stream(spins: np.ndarray, temperature: float, n_clusters: int,
                               stream: np.ndarray) -> tuple[np.ndarray, int, int]:
    """As :func:`wolff_clusters` with explicit draws. Returns (spins, draws used, spins flipped)."""
    out = check_lattice(spins).copy()
    stream = _check_stream(stream)
    used, flipped = wolff_kernel(out, bond_threshold(temperature), _check_count(n_clusters, "n_clusters"), -1,
                                 stream)
    return out, _stream_used(used, stream), int(flipped)


def swendsen_wang_sweeps(spins: np.ndarray, temperature: float, n_sweeps: int,
                         seed: int) -> tuple[np.ndarray, int]:
    """Swendsen-Wang: (L, L) int8 -> ((L, L) int8 after ``n_sweeps`` updates, total clusters)."""
    out = check_lattice(spins).copy()
    _, clusters = swendsen_wang_kernel(out, bond_threshold(temperature), _check_count(n_sweeps, "n_sweeps"),
                                       _check_seed(seed), _NO_STREAM)
    return out, int(clusters)


def swendsen_wang_sweeps_from_stream(spins: np.ndarray, temperature: float, n_sweeps: int,
                                     stream: np.ndarray) -> tuple[np.ndarray, int, int]:
    """As :func:`swendsen_wang_sweeps` with explicit draws. Returns (spins, draws used, clusters)."""
    out = check_lattice(spins).copy()
    stream = _check_stream(stream)
    used, clusters = swendsen_wang_kernel(out, bond_threshold(temperature), _check_count(n_sweeps, "n_sweeps"),
                                          -1, stream)
    return out, _stream_used(used, stream), int(clusters)


# ---------------------------------------------------------------------------------------------------------
# parallel chains
# ---------------------------------------------------------------------------------------------------------


def chain_seeds(seed: int, n_chains: int, call: int) -> np.ndarray:
    """(n_chains,) int64 seeds for kernel call number ``call`` of each chain, from one master seed.

    ``SeedSequence(seed, spawn_key=(chain, call))`` gives every (chain, call) pair an independent stream
    that does not depend on how many chains run at once or on which thread runs them.
    """
    seed = _check_seed(seed)
    return np.array([np.random.SeedSequence(seed, spawn_key=(c, call)).generate_state(1, np.uint32)[0]
                     for c in range(n_chains)], dtype=np.int64)


@dataclass
class ChainRecords:
    """What one :func:`run_chains` call recorded. Shapes: spins (C, R, L, L) int8 (R = 0 unless stored),
    bond_sum and magnetization (C, R) int64 (lattice totals, energy = -bond_sum); clusters and flipped (C,)
    int64: clusters built and spins flipped by the cluster algorithms during the call."""

    spins: np.ndarray
    bond_sum: np.ndarray
    magnetization: np.ndarray
    clusters: np.ndarray
    flipped: np.ndarray


def default_threads() -> int:
    """Worker threads used when none are asked for: the CPUs this process may run on."""
    import os

    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def run_chains(spins: np.ndarray, temperature: float, algorithm: str, n_records: int, steps_per_record: int,
               seeds: np.ndarray, store: bool = True, threads: int | None = None,
               clusters_per_step: int = 1) -> ChainRecords:
    """Advance C chains in place, recording energy and magnetization (and spins if ``store``) R times.

    spins: (C, L, L) int8, updated in place; seeds: (C,) integers in [0, 2^32), one per chain; one record every
    ``steps_per_record`` steps (see STEP_UNITS; a Wolff step is ``clusters_per_step`` clusters, or with 0 the
    biased, burn-in-only "clusters until >= L^2 spins flipped"). Chains run on ``threads`` worker threads (default: every
    available CPU); the kernel releases the GIL and each chain seeds its own thread's generator, so the result
    is the same for any thread count.
    """
    algorithm = canonical_algorithm(algorithm)
    spins = check_lattice(spins, batched=True)
    if not spins.flags.c_contiguous or not spins.flags.writeable:
        raise ValueError("spins: expected a writeable C-contiguous array (it is updated in place)")
    n_chains, L = spins.shape[0], spins.shape[1]
    check_size(L, algorithm)
    n_records = _check_count(n_records, "n_records")
    steps = _check_count(steps_per_record, "steps_per_record", 1)
    seeds = np.asarray(seeds, dtype=np.int64)
    if seeds.shape != (n_chains,) or seeds.min() < 0 or seeds.max() >= _TWO32:
        raise ValueError(f"seeds: expected shape ({n_chains},) with values in [0, 2^32), received {seeds.shape}")
    threads = default_threads() if threads is None else _check_count(threads, "threads", 1)
    clusters_per_step = _check_count(clusters_per_step, "clusters_per_step", 0)
    stats = np.zeros((n_chains, 2), dtype=np.int64)
    out_spins = np.empty((n_chains, n_records if store else 0, L, L), dtype=np.int8)
    out_bonds = np.empty((n_chains, n_records), dtype=np.int64)
    out_mag = np.empty((n_chains, n_records), dtype=np.int64)
    code, thr, p_thr = _ALGO_CODE[algorithm], metropolis_thresholds(temperature), bond_threshold(temperature)

    def one(c: int) -> None:
        chain_kernel(spins[c], code, thr, p_thr, clusters_per_step, n_records, steps, int(seeds[c]), bool(store),
                     out_spins[c], out_bonds[c], out_mag[c], stats[c])

    workers = min(threads, n_chains)
    if workers == 1:
        for c in range(n_chains):
            one(c)
    else:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(one, range(n_chains)))  # list() re-raises any worker's exception
    return ChainRecords(out_spins, out_bonds, out_mag, stats[:, 0].copy(), stats[:, 1].copy())


# ---------------------------------------------------------------------------------------------------------
# the sampling driver
# ---------------------------------------------------------------------------------------------------------


@dataclass
class SampleResult:
    """Equilibrium samples of one (L, T) point with the numbers that justify them.

    spins: (N, L, L) int8, chain-major (all of chain 0, then chain 1, ...); energy, magnetization: (N,) per
    site; chain: (N,) chain index. tau_int: integrated autocorrelation times (Sokal convention, 1/2 for
    independent data) of "energy" and "abs_m" in algorithm steps, measured on the pilot run (NaN when no pilot
    ran); tau_int_samples: the same measured on the returned samples, in units of samples (about 1/2 when
    thinning is adequate).
    """

    spins: np.ndarray
    energy: np.ndarray
    magnetization: np.ndarray
    chain: np.ndarray
    L: int
    temperature: float
    algorithm: str
    seed: int
    chains: int
    burn_in: int
    thin: int
    tau_int: dict[str, float]
    tau_int_samples: dict[str, float]
    tau_reliable: bool
    pilot_steps: int
    elapsed_s: float
    init: str
    step_unit: str = ""
    notes: list[str] = field(default_factory=list)
    clusters_per_step: int | None = None

    def metadata(self) -> dict:
        """Plain-JSON metadata for :func:`physics.datasets.save_spins`."""
        return {
            "L": self.L,
            "temperature": self.temperature,
            "algorithm": self.algorithm,
            "seed": self.seed,
            "chains": self.chains,
            "burn_in": self.burn_in,
            "thin": self.thin,
            "step_unit": self.step_unit,
            "clusters_per_step": self.clusters_per_step,
            "tau_int_energy": self.tau_int["energy"],
            "tau_int_abs_m": self.tau_int["abs_m"],
            "tau_int_samples_energy": self.tau_int_samples["energy"],
            "tau_int_samples_abs_m": self.tau_int_samples["abs_m"],
            "tau_reliable": self.tau_reliable,
            "pilot_steps": self.pilot_steps,
            "init": self.init,
            "n_samples": int(self.spins.shape[0]),
            "elapsed_s": self.elapsed_s,
            "notes": list(self.notes),
        }


def _initial_spins(L: int, n_chains: int, seed: int, init: str) -> np.ndarray:
    spins = np.ones((n_chains, L, L), dtype=np.int8)
    if init == "random":
        for c in range(n_chains):
            rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(c, 0)))
            spins[c] = rng.choice(np.array([-1, 1], dtype=np.int8), size=(L, L))
    return spins


def _series_tau(bonds: np.ndarray, mags: np.ndarray) -> tuple[dict[str, float], bool]:
    """tau_int of energy and |m| from (C, n) records, and whether both estimates are reliable."""
    e = integrated_time(bonds.astype(np.float64))
    m = integrated_time(np.abs(mags).astype(np.float64))
    return {"energy": e.tau, "abs_m": m.tau}, bool(e.reliable and m.reliable)


class _Runner:
    """Kernel calls of one sampling run; call k of chain c gets seed SeedSequence(seed, (c, k))."""

    def __init__(self, spins, temperature, algorithm, seed, threads, clusters_per_step):
        self.spins, self.temperature, self.algorithm = spins, temperature, algorithm
        self.seed, self.threads, self.calls = seed, threads, 0
        self.clusters_per_step = clusters_per_step

    def __call__(self, n_records: int, steps: int, store: bool) -> ChainRecords:
        self.calls += 1
        seeds = chain_seeds(self.seed, self.spins.shape[0], self.calls)
        return run_chains(self.spins, self.temperature, self.algorithm, n_records, steps, seeds, store,
                          self.threads, self.clusters_per_step)


def _calibrate_wolff(run: _Runner, equilibrate: int = 64, measure: int = 32) -> int:
    """Set the Wolff step to about L^2 flipped spins: clusters_per_step = round(L^2 / mean cluster size).

    Runs ``equilibrate`` and then ``measure`` sweep-equivalents (clusters until >= L^2 spins flipped, so the
    work is bounded from any start); the mean cluster size of the second run sets the step. These steps are
    burn-in: the fixed count used afterwards keeps every later step an unbiased Markov step. Returns the steps.
    """
    n_sites = run.spins.shape[1] * run.spins.shape[2]
    run.clusters_per_step = 0
    run(1, equilibrate, False)
    rec = run(1, measure, False)
    mean_size = rec.flipped.sum() / max(int(rec.clusters.sum()), 1)
    run.clusters_per_step = max(1, int(round(n_sites / mean_size)))
    return equilibrate + measure


class _NoBar:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def update(self, n: int = 1) -> None:
        pass


def _bar(show: bool, total: int, desc: str):
    """A progress bar (simdiff.utils.progress, which hides itself off a terminal) or, if not ``show``, none."""
    if not show:
        return _NoBar()
    from simdiff.utils.progress import progress

    return progress(total=total, desc=desc)


def _pilot(run: _Runner, pilot_steps: int, max_pilot_steps: int, show: bool):
    """Run the pilot, doubling its length until the second half is >= 50 tau long (or the cap is reached)."""
    bonds, mags = [], []
    total = 0
    target = pilot_steps
    with _bar(show, max_pilot_steps, "pilot (autocorrelation)") as bar:
        while True:
            rec = run(target - total, 1, False)
            bonds.append(rec.bond_sum)
            mags.append(rec.magnetization)
            bar.update(target - total)
            total = target
            b = np.concatenate(bonds, axis=1)[:, total // 2:]
            m = np.concatenate(mags, axis=1)[:, total // 2:]
            tau, reliable = _series_tau(b, m)
            if reliable or total >= max_pilot_steps:
                return tau, reliable, total
            target = min(2 * total, max_pilot_steps)


def sample_configurations(L: int, temperature: float, n_samples: int, algorithm: str = "wolff", seed: int = 0,
                          chains: int = 4, burn_in: int | None = None, thin: int | None = None,
                          threads: int | None = None, progress: bool = True, pilot_steps: int = 512,
                          max_pilot_steps: int = 1 << 17, thin_factor: float = 2.0,
                          init: str | None = None, clusters_per_step: int | None = None) -> SampleResult:
    """Equilibrium spin configurations of the L x L Ising torus at temperature T.

    Steps:
      1. ``chains`` independent chains start cold (all up) below T_c and hot (random) otherwise. For Wolff, a
         step is ``clusters_per_step`` clusters, calibrated (unless given) to about L^2 flipped spins in 96
         steps that count as burn-in.
      2. Pilot (when ``burn_in`` or ``thin`` is None): record energy and |m| every step, doubling the run until
         its second half is at least 50 tau_int long; tau_int is measured on that second half.
      3. Burn-in = every step run so far (calibration + pilot), topped up to ``burn_in`` if that is larger;
         thin = ceil(thin_factor * max tau), at least 1, unless given.
      4. Chain c records its share of ``n_samples`` (they differ by at most one), ``thin`` steps apart.

    Results depend on (L, T, n_samples, algorithm, seed, chains, burn_in, thin, pilot settings) only, not on
    ``threads`` or the machine. Returns a :class:`SampleResult` with spins (n_samples, L, L) int8.
    """
    start = time.perf_counter()
    algorithm = canonical_algorithm(algorithm)
    L = check_size(L, algorithm)
    temperature = check_temperature(temperature)
    n_samples = _check_count(n_samples, "n_samples", 1)
    seed = _check_seed(seed)
    chains = min(_check_count(chains, "chains", 1), n_samples)
    if burn_in is not None:
        burn_in = _check_count(burn_in, "burn_in")
    if thin is not None:
        thin = _check_count(thin, "thin", 1)
    pilot_steps = _check_count(pilot_steps, "pilot_steps", 16)
    max_pilot_steps = max(_check_count(max_pilot_steps, "max_pilot_steps", 16), pilot_steps)
    if not (isinstance(thin_factor, (int, float)) and thin_factor > 0):
        raise ValueError(f"thin_factor: expected a number > 0, received {thin_factor!r}")
    if init is None:
        init = "up" if temperature < T_C else "random"
    if init not in ("up", "random"):
        raise ValueError(f"init: expected 'up' or 'random', received {init!r}")
    if clusters_per_step is not None:
        clusters_per_step = _check_count(clusters_per_step, "clusters_per_step", 1)
    if threads is not None:
        threads = _check_count(threads, "threads", 1)
    check_memory(L, n_samples, chains)

    # Step 1: start, and for Wolff fix the step length.
    spins = _initial_spins(L, chains, seed, init)
    run = _Runner(spins, temperature, algorithm, seed, threads, clusters_per_step or 1)
    notes: list[str] = []
    done = 0
    if algorithm == "wolff" and clusters_per_step is None:
        done = _calibrate_wolff(run)

    # Steps 2-3: pilot, burn-in, thinning.
    tau = {"energy": float("nan"), "abs_m": float("nan")}
    reliable, pilot_total = False, 0
    if burn_in is None or thin is None:
        tau, reliable, pilot_total = _pilot(run, pilot_steps, max_pilot_steps, progress)
        done += pilot_total
        if not reliable:
            notes.append(f"pilot capped at {pilot_total} steps: tau_int estimate not reliable (needs >= 50 tau)")
        if thin is None:
            thin = max(1, math.ceil(thin_factor * max(tau["energy"], tau["abs_m"])))
    if burn_in is not None and burn_in > done:
        run(1, burn_in - done, False)
        done = burn_in
    burn_in = done

    # Step 4: production, in fixed blocks so each progress tick is one kernel call; chain c fills rows
    # offsets[c] .. offsets[c + 1] of the output directly.
    per_chain = np.array([n_samples // chains + (c < n_samples % chains) for c in range(chains)])
    offsets = np.concatenate([[0], np.cumsum(per_chain)])
    n_max = int(per_chain[0])
    out = np.empty((n_samples, L, L), dtype=np.int8)
    rec_bonds = np.empty((chains, n_max), dtype=np.int64)
    rec_mag = np.empty((chains, n_max), dtype=np.int64)
    with _bar(progress, n_samples, f"ising {algorithm} L={L} T={temperature:g}") as bar:
        for lo in range(0, n_max, _BLOCK):
            hi = min(lo + _BLOCK, n_max)
            rec = run(hi - lo, thin, True)
            rec_bonds[:, lo:hi], rec_mag[:, lo:hi] = rec.bond_sum, rec.magnetization
            for c in range(chains):
                k = min(hi, per_chain[c]) - lo
                out[offsets[c] + lo: offsets[c] + lo + k] = rec.spins[c, :k]
            bar.update(int(np.clip(per_chain - lo, 0, hi - lo).sum()))

    tau_samples, _ = _series_tau(rec_bonds, rec_mag)
    n_sites = L * L
    keep = [slice(0, int(n)) for n in per_chain]
    return SampleResult(
        spins=out,
        energy=np.concatenate([-rec_bonds[c, k] / n_sites for c, k in enumerate(keep)]),
        magnetization=np.concatenate([rec_mag[c, k] / n_sites for c, k in enumerate(keep)]),
        chain=np.repeat(np.arange(chains, dtype=np.int16), per_chain),
        L=L, temperature=temperature, algorithm=algorithm, seed=seed, chains=chains, burn_in=int(burn_in),
        thin=int(thin), tau_int=tau, tau_int_samples=tau_samples, tau_reliable=reliable,
        pilot_steps=pilot_total, elapsed_s=time.perf_counter() - start, init=init,
        step_unit=STEP_UNITS[algorithm], notes=notes,
        clusters_per_step=run.clusters_per_step if algorithm == "wolff" else None,
    )
