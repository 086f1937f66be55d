"""Observables of 2D Ising ensembles, each with a standard error from a blocked jackknife.

Input: an ensemble of lattices, shape (N, L, L) (or (N, 1, L, L)), +-1 spins as int8 or any real field (the
formulas below apply to real fields too; discretize with :func:`as_spins` first when comparing spins).
Samples are assumed to be in Markov-chain order (chain-major is fine): errors come from a jackknife over
``n_blocks`` contiguous blocks (default min(N, 50)), which also absorbs short residual autocorrelation.

Definitions (torus, J = 1, per site, N_s = L^2 sites, m = sum s / N_s, e = -sum_<ij> s_i s_j / N_s):
  energy <e>; specific heat N_s (<e^2> - <e>^2) / T^2; |m| = <|m|>; m2 = <m^2>;
  susceptibility N_s (<m^2> - <|m|>^2) / T; Binder U4 = 1 - <m^4> / (3 <m^2>^2);
  G(r) = <s(x) s(x + r e_a)> averaged over sites x and both axes a, r = 0..L/2 (not connected);
  S(k) = <|sum_x s(x) e^{-i k.x}|^2> / N_s, averaged over shells round(|n|) = 1..L/2, k = 2 pi n / L;
  its log-slope d ln S / d ln k by least squares over a k range (default shells 1..max(2, L/4));
  G4c(l) = <s1 s2 s3 s4> - 2 G_side(l)^2 - G_diag(l)^2 on the corners (0,0), (l,0), (0,l), (l,l) of an l x l
  square, averaged over translations; G_side(l) = G(l), G_diag(l) averages the (l, l) and (l, -l) diagonals.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

_CHUNK = 256  # samples per FFT chunk: bounds the float64 work arrays


@dataclass(frozen=True)
class Estimate:
    """A scalar estimate and its standard error."""

    value: float
    stderr: float

    def to_dict(self) -> dict:
        return {"value": float(self.value), "stderr": float(self.stderr)}


@dataclass(frozen=True)
class Profile:
    """An estimate as a function of a coordinate ``x`` (r, |k| or l): arrays of equal length."""

    x: np.ndarray
    value: np.ndarray
    stderr: np.ndarray
    x_name: str

    def to_dict(self) -> dict:
        return {self.x_name: self.x.tolist(), "value": self.value.tolist(), "stderr": self.stderr.tolist()}


# ---------------------------------------------------------------------------------------------------------
# input and errors
# ---------------------------------------------------------------------------------------------------------


def as_lattices(x: np.ndarray, name: str = "spins") -> np.ndarray:
    """Check an ensemble of square lattices: (N, L, L) or (N, 1, L, L) -> (N, L, L), values finite."""
    x = np.asarray(x)
    if x.ndim == 4 and x.shape[1] == 1:
        x = x[:, 0]
    if x.ndim != 3 or x.shape[1] != x.shape[2] or x.shape[0] < 1 or x.shape[1] < 2:
        raise ValueError(f"{name}: expected shape (N, L, L) or (N, 1, L, L) with N >= 1, L >= 2, "
                         f"received {np.shape(x)}")
    if x.dtype == bool or not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise TypeError(f"{name}: expected a real numeric array, received dtype {x.dtype}")
    if np.issubdtype(x.dtype, np.floating) and not np.all(np.isfinite(x)):
        raise ValueError(f"{name}: expected finite values")
    return x


def as_spins(x: np.ndarray) -> np.ndarray:
    """Sign-discretize a real field to int8 +-1 spins, (N, L, L) or (N, 1, L, L) -> (N, L, L); 0 maps to +1."""
    x = as_lattices(x)
    return np.where(x >= 0, 1, -1).astype(np.int8)


def default_blocks(n: int) -> int:
    return max(1, min(n, 50))


def jackknife(fn: Callable[..., np.ndarray], arrays: Sequence[np.ndarray],
              n_blocks: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Blocked jackknife of ``fn(*means)`` where ``means`` are the sample means of per-sample ``arrays``.

    arrays: each (N, ...); fn must act elementwise or along the last axis so it also accepts a leading block
    axis. Returns (fn of the full means, standard error); the error is NaN when fewer than 2 blocks exist.
    """
    n = arrays[0].shape[0]
    if any(a.shape[0] != n for a in arrays):
        raise ValueError(f"arrays: expected the same number of samples, received {[a.shape[0] for a in arrays]}")
    n_blocks = default_blocks(n) if n_blocks is None else int(n_blocks)
    if not 1 <= n_blocks <= n:
        raise ValueError(f"n_blocks: expected an integer in [1, {n}], received {n_blocks}")
    edges = np.linspace(0, n, n_blocks + 1).round().astype(int)
    counts = np.diff(edges).astype(np.float64)
    sums = [np.add.reduceat(np.asarray(a, dtype=np.float64), edges[:-1], axis=0) for a in arrays]
    totals = [s.sum(axis=0) for s in sums]
    value = np.asarray(fn(*[t / n for t in totals]), dtype=np.float64)
    if n_blocks < 2:
        return value, np.full_like(value, np.nan)
    shape = (n_blocks,) + (1,) * (sums[0].ndim - 1)
    loo = [(t[None] - s) / (n - counts).reshape(shape) for t, s in zip(totals, sums)]
    thetas = np.asarray(fn(*loo), dtype=np.float64)
    err = np.sqrt((n_blocks - 1) / n_blocks * np.sum((thetas - thetas.mean(axis=0)) ** 2, axis=0))
    return value, err


def _scalar(fn, arrays, n_blocks) -> Estimate:
    v, e = jackknife(fn, arrays, n_blocks)
    return Estimate(float(v), float(e))


def _identity(x):
    return x


# ---------------------------------------------------------------------------------------------------------
# per-sample quantities
# ---------------------------------------------------------------------------------------------------------


def energy_per_site(spins: np.ndarray) -> np.ndarray:
    """(N, L, L) -> (N,) energy per site -sum_<ij> s_i s_j / L^2 over the torus bonds."""
    s = as_lattices(spins)
    if np.issubdtype(s.dtype, np.integer):
        s = s.astype(np.int64) if s.dtype.itemsize > 1 else s
        pair = s * (np.roll(s, -1, axis=2) + np.roll(s, -1, axis=1))
        bonds = pair.sum(axis=(1, 2), dtype=np.int64).astype(np.float64)
    else:
        s = s.astype(np.float64)
        bonds = (s * (np.roll(s, -1, axis=2) + np.roll(s, -1, axis=1))).sum(axis=(1, 2))
    return -bonds / (s.shape[1] * s.shape[2])


def magnetization_per_site(spins: np.ndarray) -> np.ndarray:
    """(N, L, L) -> (N,) mean spin."""
    s = as_lattices(spins)
    return s.sum(axis=(1, 2), dtype=np.float64) / (s.shape[1] * s.shape[2])


def _chunks(s: np.ndarray):
    for lo in range(0, s.shape[0], _CHUNK):
        yield s[lo:lo + _CHUNK].astype(np.float64)


def two_point_per_sample(spins: np.ndarray, r_max: int | None = None) -> np.ndarray:
    """(N, L, L) -> (N, r_max + 1): per-sample G(r) along the axes, r = 0..r_max (default L // 2)."""
    s = as_lattices(spins)
    L = s.shape[1]
    r_max = _check_r_max(r_max, L)
    out = np.empty((s.shape[0], r_max + 1))
    lo = 0
    for x in _chunks(s):
        g = np.zeros((x.shape[0], L))
        for axis in (1, 2):
            f = np.fft.rfft(x, axis=axis)
            c = np.fft.irfft(f * np.conj(f), n=L, axis=axis)  # c[..., r] = sum_x s(x) s(x + r) along the axis
            g += _lag_sum(c, axis)
        out[lo:lo + x.shape[0]] = g[:, :r_max + 1] / (2.0 * L * L)
        lo += x.shape[0]
    return out


def _lag_sum(c: np.ndarray, axis: int) -> np.ndarray:
    """Sum a (n, L, L) lag-resolved correlation over the non-lag spatial axis: -> (n, L) indexed by lag."""
    return c.sum(axis=2) if axis == 1 else c.sum(axis=1)


def _check_r_max(r_max: int | None, L: int) -> int:
    if r_max is None:
        return L // 2
    if isinstance(r_max, bool) or not isinstance(r_max, (int, np.integer)) or not 0 <= r_max <= L // 2:
        raise ValueError(f"r_max: expected an integer in [0, {L // 2}], received {r_max!r}")
    return int(r_max)


def shells(L: int) -> tuple[np.ndarray, np.ndarray]:
    """Radial shells of the L x L Fourier grid: (shell index per mode (L, L), mean |k| per shell 1..L//2).

    Mode n = (n_x, n_y) with wrapped integers; shell round(|n|); shell 0 (k = 0) and shells beyond L // 2 (not
    full circles) get index -1. Entry q - 1 of the |k| array belongs to shell q.
    """
    n = np.fft.fftfreq(L, d=1.0 / L)
    radius = np.hypot(n[:, None], n[None, :])
    shell = np.rint(radius).astype(int)
    shell[(shell == 0) | (shell > L // 2)] = -1
    k = np.array([2 * np.pi / L * radius[shell == q].mean() for q in range(1, L // 2 + 1)])
    return shell, k


def structure_factor_per_sample(spins: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, L, L) -> (|k| (Q,), (N, Q) radially averaged |FFT(s)|^2 / L^2), Q = L // 2 shells."""
    s = as_lattices(spins)
    L = s.shape[1]
    shell, k = shells(L)
    q = L // 2
    weights = np.zeros((L * L, q))
    flat = shell.ravel()
    ok = flat >= 0
    weights[np.nonzero(ok)[0], flat[ok] - 1] = 1.0
    weights /= weights.sum(axis=0, keepdims=True)
    out = np.empty((s.shape[0], q))
    lo = 0
    for x in _chunks(s):
        power = np.abs(np.fft.fft2(x)) ** 2 / (L * L)
        out[lo:lo + x.shape[0]] = power.reshape(x.shape[0], -1) @ weights
        lo += x.shape[0]
    return k, out


def four_point_terms_per_sample(spins: np.ndarray, ls: Sequence[int]) -> tuple[np.ndarray, ...]:
    """(N, L, L) -> (four, side, diag), each (N, len(ls)): per-sample plaquette product, side and diagonal
    two-point functions for each square side l."""
    s = as_lattices(spins)
    L = s.shape[1]
    ls = check_sides(ls, L)
    n = s.shape[0]
    four, side, diag = (np.empty((n, len(ls))) for _ in range(3))
    work = s.astype(np.int64) if np.issubdtype(s.dtype, np.integer) else s.astype(np.float64)
    sites = L * L
    for q, ell in enumerate(ls):
        right = np.roll(work, -ell, axis=2)
        down = np.roll(work, -ell, axis=1)
        pair = work * right  # s(x, y) s(x + l, y)
        four[:, q] = (pair * np.roll(pair, -ell, axis=1)).sum(axis=(1, 2)) / sites
        side[:, q] = ((pair + work * down).sum(axis=(1, 2))) / (2.0 * sites)
        d1 = work * np.roll(down, -ell, axis=2)
        d2 = work * np.roll(down, ell, axis=2)
        diag[:, q] = (d1 + d2).sum(axis=(1, 2)) / (2.0 * sites)
    return four, side, diag


def default_sides(L: int) -> list[int]:
    """Square sides 1, 2, 4, ... up to max(1, L // 4)."""
    out, side = [], 1
    while side <= max(1, L // 4):
        out.append(side)
        side *= 2
    return out


def check_sides(ls: Sequence[int] | None, L: int) -> list[int]:
    if ls is None:
        return default_sides(L)
    ls = [int(v) for v in ls]
    if not ls or any(v < 1 or v > L // 2 for v in ls):
        raise ValueError(f"ls: expected square sides in [1, {L // 2}], received {ls}")
    return ls


# ---------------------------------------------------------------------------------------------------------
# estimators
# ---------------------------------------------------------------------------------------------------------


def _beta(temperature: float) -> float:
    t = float(temperature)
    if not math.isfinite(t) or t <= 0:
        raise ValueError(f"temperature: expected a finite number > 0, received {temperature!r}")
    return 1.0 / t


def energy(spins: np.ndarray, n_blocks: int | None = None) -> Estimate:
    """Energy per site <e>."""
    return _scalar(_identity, [energy_per_site(spins)], n_blocks)


def specific_heat(spins: np.ndarray, temperature: float, n_blocks: int | None = None) -> Estimate:
    """Specific heat per site L^2 (<e^2> - <e>^2) / T^2."""
    beta = _beta(temperature)
    e = energy_per_site(spins)
    sites = np.asarray(spins).shape[-1] ** 2
    return _scalar(lambda a, b: beta * beta * sites * (b - a * a), [e, e * e], n_blocks)


def abs_magnetization(spins: np.ndarray, n_blocks: int | None = None) -> Estimate:
    """<|m|>."""
    return _scalar(_identity, [np.abs(magnetization_per_site(spins))], n_blocks)


def magnetization_squared(spins: np.ndarray, n_blocks: int | None = None) -> Estimate:
    """<m^2>."""
    return _scalar(_identity, [magnetization_per_site(spins) ** 2], n_blocks)


def susceptibility(spins: np.ndarray, temperature: float, n_blocks: int | None = None) -> Estimate:
    """Finite-lattice susceptibility per site L^2 (<m^2> - <|m|>^2) / T."""
    beta = _beta(temperature)
    m = magnetization_per_site(spins)
    sites = np.asarray(spins).shape[-1] ** 2
    return _scalar(lambda a, b: beta * sites * (b - a * a), [np.abs(m), m * m], n_blocks)


def _binder(m2, m4):
    return 1.0 - m4 / (3.0 * m2 * m2)


def binder_cumulant(spins: np.ndarray, n_blocks: int | None = None) -> Estimate:
    """U4 = 1 - <m^4> / (3 <m^2>^2)."""
    m2 = magnetization_per_site(spins) ** 2
    return _scalar(_binder, [m2, m2 * m2], n_blocks)


def two_point(spins: np.ndarray, r_max: int | None = None, n_blocks: int | None = None) -> Profile:
    """G(r) along the axes, r = 0..r_max (default L // 2)."""
    g = two_point_per_sample(spins, r_max)
    v, e = jackknife(_identity, [g], n_blocks)
    return Profile(np.arange(g.shape[1]), v, e, "r")


def structure_factor(spins: np.ndarray, n_blocks: int | None = None) -> Profile:
    """Radially averaged S(k) on shells 1..L//2 (x = mean |k| of the shell)."""
    k, sk = structure_factor_per_sample(spins)
    v, e = jackknife(_identity, [sk], n_blocks)
    return Profile(k, v, e, "k")


def _fit_mask(k: np.ndarray, k_range: tuple[float, float] | None) -> np.ndarray:
    """Shells used by the slope fit: ``k_range[0] < |k| <= k_range[1]``, by default shells 1..max(2, L/4)
    (|k| up to about pi/2, where the lattice has not yet bent the continuum power law)."""
    if k_range is None:
        mask = np.arange(k.size) < max(2, k.size // 2)
        lo, hi = 0.0, float(k[mask][-1]) if mask.any() else 0.0
    else:
        lo, hi = float(k_range[0]), float(k_range[1])
        mask = (k > lo * (1 - 1e-9)) & (k <= hi * (1 + 1e-9))
    if mask.sum() < 2 or k.size < 2:
        raise ValueError(f"k_range: expected at least 2 shells with {lo:g} < |k| <= {hi:g}, "
                         f"found {int(min(mask.sum(), k.size))} (shells at |k| = {np.round(k, 3).tolist()})")
    return mask


def log_slope(k: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Least-squares slope of ln(values) against ln(k) along the last axis (leading axes broadcast)."""
    x = np.log(k)
    x = x - x.mean()
    with np.errstate(divide="ignore", invalid="ignore"):
        y = np.log(values)
    return (y * x).sum(axis=-1) / (x * x).sum()


def structure_factor_slope(spins: np.ndarray, k_range: tuple[float, float] | None = None,
                           n_blocks: int | None = None) -> Estimate:
    """Slope of ln S(k) against ln |k| over shells with k_range[0] < |k| <= k_range[1] (default: shells
    1..max(2, L/4), |k| up to about pi/2).

    At T_c and small k the exact exponent is -7/4 (S ~ k^-(2 - eta), eta = 1/4); finite L bends it.
    """
    k, sk = structure_factor_per_sample(spins)
    mask = _fit_mask(k, k_range)
    return _scalar(lambda s: log_slope(k[mask], s), [sk[:, mask]], n_blocks)


def _g4c(four, side, diag):
    return four - 2.0 * side * side - diag * diag


def four_point_connected(spins: np.ndarray, ls: Sequence[int] | None = None,
                         n_blocks: int | None = None) -> Profile:
    """G4c(l) = <s1 s2 s3 s4> - 2 G_side(l)^2 - G_diag(l)^2 for square sides ``ls`` (default 1, 2, 4, ..)."""
    s = as_lattices(spins)
    ls = check_sides(ls, s.shape[1])
    v, e = jackknife(_g4c, list(four_point_terms_per_sample(s, ls)), n_blocks)
    return Profile(np.array(ls), v, e, "l")


SCALARS = ("energy", "specific_heat", "abs_m", "m2", "susceptibility", "binder")
PROFILES = ("two_point", "structure_factor", "four_point_connected")


def summary(spins: np.ndarray, temperature: float | None = None, n_blocks: int | None = None,
            ls: Sequence[int] | None = None, k_range: tuple[float, float] | None = None) -> dict:
    """Every observable as plain JSON: {name: {"value", "stderr"}} for scalars, {name: {x, "value", "stderr"}}
    for profiles. specific_heat and susceptibility need ``temperature`` and are left out without it; the
    structure factor slope is left out when the fit range has fewer than 2 shells."""
    s = as_lattices(spins)
    L = s.shape[1]
    e = energy_per_site(s)
    m = magnetization_per_site(s)
    m2 = m * m
    out: dict = {
        "n_samples": int(s.shape[0]),
        "L": int(L),
        "n_blocks": default_blocks(s.shape[0]) if n_blocks is None else int(n_blocks),
        "energy": _scalar(_identity, [e], n_blocks).to_dict(),
    }
    if temperature is not None:
        beta = _beta(temperature)
        out["temperature"] = float(temperature)
        out["specific_heat"] = _scalar(lambda a, b: beta * beta * L * L * (b - a * a), [e, e * e],
                                       n_blocks).to_dict()
    out["abs_m"] = _scalar(_identity, [np.abs(m)], n_blocks).to_dict()
    out["m2"] = _scalar(_identity, [m2], n_blocks).to_dict()
    if temperature is not None:
        out["susceptibility"] = _scalar(lambda a, b: beta * L * L * (b - a * a), [np.abs(m), m2],
                                        n_blocks).to_dict()
    out["binder"] = _scalar(_binder, [m2, m2 * m2], n_blocks).to_dict()
    g = two_point_per_sample(s)
    v, err = jackknife(_identity, [g], n_blocks)
    out["two_point"] = Profile(np.arange(g.shape[1]), v, err, "r").to_dict()
    k, sk = structure_factor_per_sample(s)
    v, err = jackknife(_identity, [sk], n_blocks)
    out["structure_factor"] = Profile(k, v, err, "k").to_dict()
    try:
        mask = _fit_mask(k, k_range)
    except ValueError:
        mask = None
    if mask is not None:
        out["structure_factor_slope"] = _scalar(lambda x: log_slope(k[mask], x), [sk[:, mask]],
                                                n_blocks).to_dict()
    sides = check_sides(ls, L)
    v, err = jackknife(_g4c, list(four_point_terms_per_sample(s, sides)), n_blocks)
    out["four_point_connected"] = Profile(np.array(sides), v, err, "l").to_dict()
    return out
