"""Integrated autocorrelation time with Sokal's automatic window.

Convention (Sokal 1997, "Monte Carlo methods in statistical mechanics"): tau_int = 1/2 + sum_{t>=1} rho(t), so
independent data have tau_int = 1/2 and the variance of a mean of n correlated samples is 2 tau_int sigma^2 / n.
The sum is cut at the smallest window W with W >= c tau_int(W); the estimate is trusted when the series is at
least 50 tau_int long.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class AutocorrTime:
    """tau: integrated time (1/2 for independent data); stderr: Madras-Sokal error tau sqrt(2 (2W + 1) / n);
    window: W; n: samples per chain; chains: number of chains; reliable: window found and n >= 50 tau."""

    tau: float
    stderr: float
    window: int
    n: int
    chains: int
    reliable: bool

    def to_dict(self) -> dict:
        return asdict(self)


def _as_chains(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2:
        raise ValueError(f"x: expected shape (n,) or (chains, n), received {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("x: expected finite values")
    return x


def autocorrelation(x: np.ndarray) -> np.ndarray:
    """Normalized autocorrelation rho(t), t = 0..n-1, of (n,) or (chains, n) data (per-chain mean removed,
    autocovariances averaged over chains). All-constant data give rho = [1, 0, 0, ...]."""
    x = _as_chains(x)
    n = x.shape[1]
    centered = x - x.mean(axis=1, keepdims=True)
    size = 1 << (2 * n - 1).bit_length()  # zero padding: a linear, not circular, correlation
    f = np.fft.rfft(centered, n=size, axis=1)
    acov = np.fft.irfft(f * np.conj(f), n=size, axis=1)[:, :n].mean(axis=0) / n
    rho = np.zeros(n)
    if acov[0] > 0:
        rho = acov / acov[0]
    else:
        rho[0] = 1.0
    return rho


def integrated_time(x: np.ndarray, c: float = 6.0, min_length: float = 50.0) -> AutocorrTime:
    """Integrated autocorrelation time of (n,) or (chains, n) data (rows are independent chains)."""
    x = _as_chains(x)
    chains, n = x.shape
    if n < 2:
        return AutocorrTime(float("nan"), float("nan"), 0, n, chains, False)
    rho = autocorrelation(x)
    taus = 0.5 + np.cumsum(rho[1:])  # taus[W - 1] = tau_int with window W
    windows = np.arange(1, n)
    ok = windows >= c * taus
    found = bool(ok.any())
    w = int(windows[np.argmax(ok)]) if found else n - 1
    # Anticorrelated data (tau < 1/2) are kept as measured; only a non-positive sum is clipped.
    tau = max(float(taus[w - 1]), 1.0 / n)
    stderr = tau * math.sqrt(2.0 * (2 * w + 1) / (n * chains))
    return AutocorrTime(tau, stderr, w, n, chains, found and n >= min_length * tau)


def effective_sample_size(x: np.ndarray) -> float:
    """Number of independent samples worth of (n,) or (chains, n) data: chains * n / (2 tau_int)."""
    t = integrated_time(x)
    return float(t.chains * t.n / (2.0 * t.tau)) if math.isfinite(t.tau) else float("nan")
