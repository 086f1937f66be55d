"""Block-spin coarse-graining of Ising ensembles: the honest low-resolution input for super-resolution.

The lattice is cut into b x b blocks (b divides L). :func:`block_spin` keeps the sign of each block's spin sum
(majority rule, Kadanoff); an exact tie (possible for even b) is broken by a fair coin drawn from ``seed``, one
coin per block whether or not it ties, so the coins of a block do not depend on its neighbours.
:func:`block_average` keeps the block mean as a real number.
"""

from __future__ import annotations

import numpy as np

from physics.observables import as_lattices


def _blocks(x: np.ndarray, factor: int) -> np.ndarray:
    """(N, L, L) -> (N, L/b, L/b, b, b) view of the blocks, after checking that b divides L."""
    if isinstance(factor, bool) or not isinstance(factor, (int, np.integer)) or factor < 2:
        raise ValueError(f"factor: expected an integer >= 2, received {factor!r}")
    n, L = x.shape[0], x.shape[1]
    if L % factor:
        raise ValueError(f"factor: expected a divisor of L = {L}, received {factor}")
    m = L // factor
    return x.reshape(n, m, factor, m, factor).transpose(0, 1, 3, 2, 4)


def block_spin(spins: np.ndarray, factor: int, seed: int = 0) -> np.ndarray:
    """Majority-rule block spins: (N, L, L) (or (N, 1, L, L)) -> (N, L/b, L/b) int8 +-1.

    Ties go to +1 or -1 with probability 1/2 from ``np.random.default_rng(seed)`` (coins of shape
    (N, L/b, L/b), drawn for every block).
    """
    x = as_lattices(spins)
    block_sum = _blocks(x, factor).sum(axis=(3, 4), dtype=np.float64)
    coins = np.random.default_rng(seed).integers(0, 2, size=block_sum.shape, dtype=np.int8) * 2 - 1
    out = np.sign(block_sum).astype(np.int8)
    ties = out == 0
    out[ties] = coins[ties]
    return out


def block_average(x: np.ndarray, factor: int) -> np.ndarray:
    """Block means: (N, L, L) (or (N, 1, L, L)) -> (N, L/b, L/b) float32."""
    x = as_lattices(x)
    return _blocks(x, factor).mean(axis=(3, 4), dtype=np.float64).astype(np.float32)
