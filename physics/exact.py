"""Exact results for the 2D Ising model (J = 1, no field): finite periodic lattices and the infinite lattice.

* :func:`kaufman` -- Kaufman's (1949) closed form of the partition function of the m x n torus, with the
  energy and specific heat from its analytic first and second derivatives in K = 1/T. In the form of
  Ferdinand & Fisher (1969):

      Z = 1/2 (2 sinh 2K)^(mn/2) (Z1 + Z2 + Z3 + Z4),
      Z1 = prod_{r=0}^{n-1} 2 cosh(m g_{2r+1} / 2),   Z2 = prod 2 sinh(m g_{2r+1} / 2),
      Z3 = prod_{r=0}^{n-1} 2 cosh(m g_{2r} / 2),     Z4 = prod 2 sinh(m g_{2r} / 2),
      cosh g_l = cosh 2K coth 2K - cos(l pi / n)  (g_l > 0 for l > 0),   g_0 = 2K + ln tanh K.

  g_0 changes sign at K_c, so Z4 is negative above T_c and vanishes at T_c; it is handled as
  tanh(m g_0 / 2) times a positive scale so the derivatives stay finite there.
* :func:`brute_force` -- enumeration of all 2^(mn) states (mn <= 20); also gives |m|, m^2, m^4 and U4.
* :func:`onsager_energy`, :func:`onsager_magnetization` -- infinite-lattice values.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

T_C = 2.0 / math.log(1.0 + math.sqrt(2.0))
BINDER_CRITICAL = 0.61069
"""Binder cumulant U4 at T_c in the L -> infinity limit on the periodic square lattice (Salas & Sokal 2000)."""
ENERGY_CRITICAL = -math.sqrt(2.0)
"""Infinite-lattice energy per site at T_c."""


@dataclass(frozen=True)
class ExactThermo:
    """Exact thermodynamics of an m x n torus at temperature T: log Z, and per site the energy, specific heat
    and free energy. brute_force also fills the magnetization moments and the Binder cumulant."""

    m: int
    n: int
    temperature: float
    log_z: float
    energy: float
    specific_heat: float
    free_energy: float
    abs_m: float | None = None
    m2: float | None = None
    m4: float | None = None
    binder: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _check(m: int, n: int | None, temperature: float) -> tuple[int, int, float]:
    n = m if n is None else n
    for name, v in (("L", m), ("n", n)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 2:
            raise ValueError(f"{name}: expected an integer >= 2, received {v!r}")
    t = float(temperature)
    if not math.isfinite(t) or t <= 0:
        raise ValueError(f"temperature: expected a finite number > 0, received {temperature!r}")
    return int(m), int(n), t


def _log2cosh(x: np.ndarray) -> np.ndarray:
    ax = np.abs(x)
    return ax + np.log1p(np.exp(-2.0 * ax))


def _sech2(x: np.ndarray) -> np.ndarray:
    e = np.exp(-2.0 * np.abs(x))
    return 4.0 * e / (1.0 + e) ** 2


def _gammas(K: float, m: int, n: int, ls: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x_l = m g_l / 2 and its first two K-derivatives for l > 0."""
    u = 2.0 * K
    su, cu = math.sinh(u), math.cosh(u)
    c = cu * cu / su - np.cos(ls * math.pi / n)
    dc = 2.0 * cu * (1.0 - 1.0 / su**2)
    d2c = 4.0 * su - 4.0 / su + 8.0 * cu * cu / su**3
    g = np.arccosh(c)
    sg = np.sqrt((c - 1.0) * (c + 1.0))  # sinh g, accurate when c is close to 1
    dg = dc / sg
    d2g = (d2c - c * dg * dg) / sg
    return 0.5 * m * g, 0.5 * m * dg, 0.5 * m * d2g


def _cosh_product(x, dx, d2x):
    """prod 2 cosh(x_l) as (log scale a, Z/e^a, Z'/e^a, Z''/e^a)."""
    t = np.tanh(x)
    d1 = float(np.sum(t * dx))
    dd = float(np.sum(_sech2(x) * dx * dx + t * d2x))
    return float(np.sum(_log2cosh(x))), 1.0, d1, dd + d1 * d1


def _sinh_product(x, dx, d2x):
    """prod 2 sinh(x_l) for x_l > 0 as (log scale a, Z/e^a, Z'/e^a, Z''/e^a)."""
    e = np.exp(-2.0 * x)
    coth = (1.0 + e) / (1.0 - e)
    csch2 = 4.0 * e / (1.0 - e) ** 2
    d1 = float(np.sum(coth * dx))
    dd = float(np.sum(-csch2 * dx * dx + coth * d2x))
    return float(np.sum(x + np.log1p(-e))), 1.0, d1, dd + d1 * d1


def _z4(x0, dx0, d2x0, rest):
    """2 sinh(x0) * R with R = prod over l > 0 (x0 may be <= 0): scale e^a = 2 cosh(x0) R, Z4 = tanh(x0) e^a."""
    a_r, _, r1, r2 = rest
    t = math.tanh(x0)
    s2 = 1.0 - t * t
    p1 = t * dx0 + r1  # P'/P with P = 2 cosh(x0) R
    p2 = (s2 * dx0 * dx0 + t * d2x0) + (r2 - r1 * r1) + p1 * p1
    z1 = s2 * dx0 + t * p1
    z2 = (-2.0 * t * s2 * dx0 * dx0 + s2 * d2x0) + 2.0 * s2 * dx0 * p1 + t * p2
    return a_r + float(_log2cosh(np.array(x0))), t, z1, z2


def kaufman(L: int, temperature: float, n: int | None = None) -> ExactThermo:
    """Exact log Z, energy and specific heat per site of the L x n torus (n = L by default), any T > 0."""
    m, n, t = _check(L, n, temperature)
    K = 1.0 / t
    odd = 2 * np.arange(n) + 1
    even = 2 * np.arange(1, n)
    xo = _gammas(K, m, n, odd.astype(np.float64))
    xe = _gammas(K, m, n, even.astype(np.float64))
    g0 = 2.0 * K + math.log(math.tanh(K))
    dg0 = 2.0 + 2.0 / math.sinh(2.0 * K)
    d2g0 = -4.0 * math.cosh(2.0 * K) / math.sinh(2.0 * K) ** 2
    x0 = (0.5 * m * g0, 0.5 * m * dg0, 0.5 * m * d2g0)
    with_x0 = tuple(np.concatenate([[a], b]) for a, b in zip(x0, xe))
    terms = [
        _cosh_product(*xo),
        _sinh_product(*xo),
        _cosh_product(*with_x0),
        _z4(*x0, _sinh_product(*xe)),
    ]
    top = max(a for a, *_ in terms)
    s0 = sum(math.exp(a - top) * z0 for a, z0, _, _ in terms)
    s1 = sum(math.exp(a - top) * z1 for a, _, z1, _ in terms)
    s2 = sum(math.exp(a - top) * z2 for a, _, _, z2 in terms)
    sites = m * n
    u = 2.0 * K
    log_z = math.log(0.5) + 0.5 * sites * math.log(2.0 * math.sinh(u)) + top + math.log(s0)
    d1 = sites / math.tanh(u) + s1 / s0
    d2 = -2.0 * sites / math.sinh(u) ** 2 + s2 / s0 - (s1 / s0) ** 2
    return ExactThermo(m, n, t, log_z, -d1 / sites, K * K * d2 / sites, -t * log_z / sites)


def brute_force(L: int, temperature: float, n: int | None = None) -> ExactThermo:
    """Exact thermodynamics by enumerating all 2^(L n) states (L n <= 20), including |m|, m^2, m^4 and U4."""
    m, n, t = _check(L, n, temperature)
    sites = m * n
    if sites > 20:
        raise ValueError(f"L * n: expected at most 20 sites for enumeration, received {sites}")
    bonds, mags = _enumerate(m, n)
    logw = bonds / t
    top = logw.max()
    w = np.exp(logw - top)
    z = w.sum()
    p = w / z
    e_mean = float(np.sum(p * bonds))
    e2 = float(np.sum(p * bonds.astype(np.float64) ** 2))
    mag = mags / sites
    m2 = float(np.sum(p * mag**2))
    m4 = float(np.sum(p * mag**4))
    log_z = float(top + math.log(z))
    return ExactThermo(m, n, t, log_z, -e_mean / sites, (e2 - e_mean**2) / (t * t * sites),
                       -t * log_z / sites, float(np.sum(p * np.abs(mag))), m2, m4, 1.0 - m4 / (3.0 * m2 * m2))


def _enumerate(m: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Bond sums and magnetizations of all 2^(mn) states (state k has spin +1 at site b iff bit b of k is 1)."""
    sites = m * n
    states = np.arange(1 << sites, dtype=np.int64)
    bits = ((states[:, None] >> np.arange(sites)) & 1).astype(np.int8)
    s = (2 * bits - 1).reshape(-1, m, n)
    bonds = np.sum(s * np.roll(s, -1, axis=2), axis=(1, 2), dtype=np.int64)
    bonds += np.sum(s * np.roll(s, -1, axis=1), axis=(1, 2), dtype=np.int64)
    return bonds, np.sum(s, axis=(1, 2), dtype=np.int64)


def onsager_energy(temperature: float) -> float:
    """Infinite-lattice energy per site, -coth 2K [1 + (2/pi)(2 tanh^2 2K - 1) K(k)], k = 2 sinh 2K / cosh^2 2K."""
    from scipy.special import ellipk

    _, _, t = _check(2, 2, temperature)
    K = 1.0 / t
    u = 2.0 * K
    coef = 2.0 * math.tanh(u) ** 2 - 1.0
    if abs(coef) < 1e-12:  # at T_c the elliptic integral diverges while its coefficient vanishes
        return -1.0 / math.tanh(u)
    k = 2.0 * math.sinh(u) / math.cosh(u) ** 2
    return -1.0 / math.tanh(u) * (1.0 + 2.0 / math.pi * coef * float(ellipk(k * k)))


def onsager_magnetization(temperature: float) -> float:
    """Spontaneous magnetization (1 - sinh^-4 2K)^(1/8) below T_c, 0 above."""
    _, _, t = _check(2, 2, temperature)
    if t >= T_C:
        return 0.0
    return (1.0 - math.sinh(2.0 / t) ** -4) ** 0.125
