"""Scale-space spectral diffusion (SKILD, arXiv 2605.26032) as pure functions over tensors.

The forward process acts independently on each mode of an orthonormal transform of every channel:

    X_n(k) = sqrt(abar_n(k)) X_0(k) + sqrt(1 - abar_n(k)) sqrt(S0(k)) eps,    eps ~ N(0, 1)       (SKILD eq. fwd)
    abar_n(k) = exp(-max(k^2, k_c^2) lambda_n)                                                   (SKILD eq. abar)

so fine scales are attenuated first and the noise has the data's power-law spectrum
``S0(k) = C (k^2 + k0^2)^(-alpha)`` (fitted to the per-mode variance of the training set).

Mode transforms and wavenumber conventions (both describe the lattice as the unit square, so the same ``k``
means the same physical scale at every resolution, which is what makes super-resolution placement exact):

* ``"dct"``: orthonormal 2D DCT-II (Neumann boundaries, as in the paper). Mode ``(u, v)`` with ``u, v`` in
  ``0..L-1`` has wavenumber ``k = pi * (u, v)``. An ``R x R`` image resolves ``u, v < R``; its modes sit in the
  top-left ``R x R`` block of the ``L x L`` grid, scaled by ``L / R`` (orthonormal normalisation).
* ``"fft"``: the real orthonormal Fourier basis of a periodic lattice (the discrete Hartley transform
  ``H = Re F - Im F`` with ``F`` the unitary 2D DFT; real, orthonormal and its own inverse). Mode at signed
  integer frequency ``f = (f_u, f_v)`` (numpy ``fftfreq(L) * L`` ordering) has wavenumber ``k = 2 pi f``. For a
  stationary field ``Var H(f) = S(f)`` and different modes are uncorrelated, which is why it, not the DCT, is
  used on the torus. An ``R x R`` image resolves ``|f_u|, |f_v| <= R / 2``; placement into the ``L x L`` grid
  is trigonometric interpolation (even-``R`` Nyquist modes split between ``+-R/2``).

Schedules (``t = n / N``): linear ``lambda(t) = theta t / (lambda_i (1 - t) + lambda_f)^2`` and log-linear
``lambda(t) = t 10^(lambda_i + (lambda_f - lambda_i) t)``. Per-mode ``SNR = 1 / (exp(k^2 lambda) - 1)`` does not
depend on ``S0``; the resolved cutoff at threshold ``tau`` is ``k_tau = sqrt(ln(1 + 1/tau) / lambda)``.

Training predicts epsilon (the network sees pixel space) with the loss taken in mode space; sampling is
ancestral with the exact per-mode Gaussian posterior ``q(X_m | X_n, X_0)`` for any ``m < n`` (``m = n - 1`` is the
paper's sampler; larger jumps give the fewer-step variant, still exact given ``X_0``).

Shapes: images ``(B, C, L, L)``; per-mode tables (``k2``, ``S0``) ``(L, L)``; steps ``n`` ``(B,)`` integers.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor

Basis = Literal["dct", "fft"]
ScheduleKind = Literal["linear", "loglinear"]
BASES = ("dct", "fft")
SCHEDULES = ("linear", "loglinear")

# Bounds on k0^2 in the spectrum fit, as in the paper (keeps the DC mode's noise variance finite and sane).
K0SQ_BOUNDS = (math.pi / 2, 3.0)


# ----------------------------------------------------------------------------------------------------------
# Checks
# ----------------------------------------------------------------------------------------------------------

def _check_basis(basis: str) -> None:
    if basis not in BASES:
        raise ValueError(f"basis: expected one of {BASES}, received {basis!r}")


def _check_square(x: Tensor, name: str = "x") -> int:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, received {type(x).__name__}")
    if x.ndim < 2 or x.shape[-1] != x.shape[-2]:
        raise ValueError(f"{name}: expected shape (..., L, L) with square last two dims, received {tuple(x.shape)}")
    return int(x.shape[-1])


# ----------------------------------------------------------------------------------------------------------
# Mode transforms
# ----------------------------------------------------------------------------------------------------------

def dct_matrix(n: int, dtype: torch.dtype = torch.float64) -> Tensor:
    """Orthonormal DCT-II matrix ``(n, n)``: row ``u`` is ``c_u cos(pi u (2x + 1) / (2n))``."""
    if n < 1:
        raise ValueError(f"n: expected >= 1, received {n}")
    x = np.arange(n)
    u = np.arange(n)[:, None]
    m = np.sqrt(2.0 / n) * np.cos(np.pi * u * (2 * x + 1) / (2 * n))
    m[0] /= np.sqrt(2.0)
    return torch.as_tensor(m, dtype=dtype)


_DCT_CACHE: dict[tuple[int, torch.dtype, str], Tensor] = {}


def _dct(n: int, like: Tensor) -> Tensor:
    key = (n, like.dtype, str(like.device))
    if key not in _DCT_CACHE:
        _DCT_CACHE[key] = dct_matrix(n, torch.float64).to(dtype=like.dtype, device=like.device)
    return _DCT_CACHE[key]


def _hartley(x: Tensor) -> Tensor:
    f = torch.fft.fft2(x, norm="ortho")
    return f.real - f.imag


def to_modes(x: Tensor, basis: Basis) -> Tensor:
    """Pixel ``(..., L, L)`` -> modes ``(..., L, L)`` with the orthonormal per-channel transform of ``basis``."""
    _check_basis(basis)
    n = _check_square(x)
    if basis == "dct":
        c = _dct(n, x)
        return c @ x @ c.T
    return _hartley(x)


def from_modes(modes: Tensor, basis: Basis) -> Tensor:
    """Inverse of :func:`to_modes` (both transforms are orthonormal; the Hartley transform is its own inverse)."""
    _check_basis(basis)
    n = _check_square(modes, "modes")
    if basis == "dct":
        c = _dct(n, modes)
        return c.T @ modes @ c
    return _hartley(modes)


def mode_indices(L: int, basis: Basis) -> np.ndarray:
    """Per-axis integer mode indices ``(L,)``: ``0..L-1`` for DCT, signed ``fftfreq(L) * L`` for FFT."""
    _check_basis(basis)
    if basis == "dct":
        return np.arange(L)
    return np.rint(np.fft.fftfreq(L) * L).astype(np.int64)


def wavenumbers(L: int, basis: Basis, dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor]:
    """Wavenumber grids ``(kx, ky)``, each ``(L, L)``: ``pi * (u, v)`` (DCT) or ``2 pi * (f_u, f_v)`` (FFT)."""
    idx = mode_indices(L, basis).astype(np.float64)
    scale = math.pi if basis == "dct" else 2.0 * math.pi
    ku = torch.as_tensor(scale * idx, dtype=dtype)
    kx, ky = torch.meshgrid(ku, ku, indexing="ij")
    return kx, ky


def wavenumber_sq(L: int, basis: Basis, dtype: torch.dtype = torch.float64) -> Tensor:
    """``|k|^2`` on the ``(L, L)`` mode grid."""
    kx, ky = wavenumbers(L, basis, dtype)
    return kx**2 + ky**2


def max_resolved_wavenumber(R: int, basis: Basis) -> float:
    """Highest ``|k|`` present in an ``R x R`` image: the corner mode of its grid.

    DCT: ``sqrt(2) pi (R - 1)``. FFT: ``sqrt(2) 2 pi floor(R / 2)`` (the Nyquist corner for even ``R``).
    """
    _check_basis(basis)
    if R < 1:
        raise ValueError(f"R: expected >= 1, received {R}")
    if basis == "dct":
        return math.sqrt(2.0) * math.pi * (R - 1)
    return math.sqrt(2.0) * 2.0 * math.pi * (R // 2)


def known_mode_mask(R: int, L: int, basis: Basis) -> Tensor:
    """Bool ``(L, L)``: the modes of the ``L`` grid that an ``R x R`` input determines (see module doc)."""
    if not 1 <= R <= L:
        raise ValueError(f"R: expected 1 <= R <= L={L}, received {R}")
    idx = torch.as_tensor(mode_indices(L, basis))
    one = idx < R if basis == "dct" else idx.abs() <= R // 2
    return one[:, None] & one[None, :]


# ----------------------------------------------------------------------------------------------------------
# Resampling between resolutions (exact mode placement / truncation)
# ----------------------------------------------------------------------------------------------------------

def _fourier_placement(R: int, L: int) -> np.ndarray:
    """Complex ``(L, R)`` matrix mapping unitary R-point DFT coefficients onto the L-point frequency grid."""
    p = np.zeros((L, R), dtype=np.complex128)
    for j, f in enumerate(mode_indices(R, "fft")):
        if R % 2 == 0 and abs(f) == R // 2 and R < L:
            # The Nyquist coefficient is shared by +-R/2 at the higher resolution: split it so the result is real.
            p[R // 2, j] += 0.5
            p[L - R // 2, j] += 0.5
        else:
            p[f % L, j] = 1.0
    return p


def upsample_matrix(R: int, L: int, basis: Basis) -> Tensor:
    """Real ``(L, R)`` per-axis interpolation matrix: zero-padding the modes (DCT) or trigonometric
    interpolation (FFT). Applied on both axes: ``x_L = U x_R U^T``. Exact inverse: :func:`downsample_matrix`."""
    _check_basis(basis)
    if not 1 <= R <= L:
        raise ValueError(f"R: expected 1 <= R <= L={L}, received {R}")
    gain = math.sqrt(L / R)
    if basis == "dct":
        cl, cr = dct_matrix(L).numpy(), dct_matrix(R).numpy()
        return torch.as_tensor(gain * cl[:R, :].T @ cr)
    fl = np.fft.fft(np.eye(L), norm="ortho", axis=0)
    fr = np.fft.fft(np.eye(R), norm="ortho", axis=0)
    u = gain * (fl.conj().T @ _fourier_placement(R, L) @ fr)
    return torch.as_tensor(u.real.copy())


def downsample_matrix(L: int, R: int, basis: Basis) -> Tensor:
    """Real ``(R, L)`` ideal low-pass + decimation per axis; ``downsample_matrix(L,R) @ upsample_matrix(R,L) = I``."""
    _check_basis(basis)
    if not 1 <= R <= L:
        raise ValueError(f"R: expected 1 <= R <= L={L}, received {R}")
    gain = math.sqrt(R / L)
    if basis == "dct":
        cl, cr = dct_matrix(L).numpy(), dct_matrix(R).numpy()
        return torch.as_tensor(gain * cr.T @ cl[:R, :])
    fl = np.fft.fft(np.eye(L), norm="ortho", axis=0)
    fr = np.fft.fft(np.eye(R), norm="ortho", axis=0)
    # Transpose of the placement (Nyquist halves summed back), rescaled so the round trip is the identity.
    q = _fourier_placement(R, L).T.copy()
    if R % 2 == 0 and R < L:
        q[mode_indices(R, "fft") == -(R // 2)] *= 2.0
    d = gain * (fr.conj().T @ q @ fl)
    return torch.as_tensor(d.real.copy())


def spectral_resample(x: Tensor, size: int, basis: Basis) -> Tensor:
    """Resample ``(..., R, R)`` to ``(..., size, size)`` by mode placement (up) or mode truncation (down)."""
    R = _check_square(x)
    if size == R:
        return x.clone()
    m = upsample_matrix(R, size, basis) if size > R else downsample_matrix(R, size, basis)
    m = m.to(dtype=x.dtype, device=x.device)
    return m @ x @ m.T


def place_modes(x_low: Tensor, L: int, basis: Basis) -> tuple[Tensor, Tensor]:
    """Put the modes of a real low-resolution input ``(..., R, R)`` into the ``L x L`` mode grid.

    Returns ``(modes (..., L, L), known (L, L) bool)``; modes outside ``known`` are zero. The low-resolution
    modes are kept exactly: truncating back to ``R`` returns the input (see :func:`downsample_matrix`).
    """
    R = _check_square(x_low, "x_low")
    if not 1 <= R <= L:
        raise ValueError(f"x_low: expected an R x R input with 1 <= R <= L={L}, received R={R}")
    return to_modes(spectral_resample(x_low, L, basis), basis), known_mode_mask(R, L, basis)


# ----------------------------------------------------------------------------------------------------------
# Schedules, SNR and cutoff
# ----------------------------------------------------------------------------------------------------------

def lambda_linear(t: Tensor, theta: float, lambda_i: float, lambda_f: float) -> Tensor:
    """Linear schedule ``lambda(t) = theta t / (lambda_i (1 - t) + lambda_f)^2`` (SKILD)."""
    return theta * t / (lambda_i * (1.0 - t) + lambda_f) ** 2


def lambda_loglinear(t: Tensor, lambda_i: float, lambda_f: float) -> Tensor:
    """Log-linear schedule ``lambda(t) = t 10^(lambda_i + (lambda_f - lambda_i) t)`` (SKILD)."""
    return t * torch.pow(torch.as_tensor(10.0, dtype=t.dtype), lambda_i + (lambda_f - lambda_i) * t)


def make_lambdas(num_steps: int, kind: ScheduleKind, lambda_i: float, lambda_f: float,
                 theta: float = 1.0) -> Tensor:
    """``lambda_n`` for ``n = 0..N`` as float64 ``(N + 1,)``; ``lambda_0 = 0`` (clean data), strictly increasing."""
    if num_steps < 1:
        raise ValueError(f"num_steps: expected >= 1, received {num_steps}")
    t = torch.arange(num_steps + 1, dtype=torch.float64) / num_steps
    if kind == "linear":
        if theta <= 0 or lambda_f <= 0 or lambda_i < 0:
            raise ValueError(f"linear schedule: expected theta > 0, lambda_f > 0, lambda_i >= 0, received "
                             f"theta={theta}, lambda_i={lambda_i}, lambda_f={lambda_f}")
        lam = lambda_linear(t, theta, lambda_i, lambda_f)
    elif kind == "loglinear":
        lam = lambda_loglinear(t, lambda_i, lambda_f)
    else:
        raise ValueError(f"schedule: expected one of {SCHEDULES}, received {kind!r}")
    if not bool(torch.all(lam[1:] > lam[:-1])):
        raise ValueError(f"schedule {kind} with lambda_i={lambda_i}, lambda_f={lambda_f}, theta={theta} "
                         "is not strictly increasing in t; expected a schedule that noises more at every step")
    return lam


def snr(k2: Tensor, lam: Tensor | float) -> Tensor:
    """Per-mode signal-to-noise ratio ``1 / (exp(k^2 lambda) - 1)``; independent of ``S0``."""
    return 1.0 / torch.expm1(torch.as_tensor(k2) * lam)


def k_tau(lam: Tensor, tau: float) -> Tensor:
    """Resolved cutoff ``k_tau = sqrt(ln(1 + 1/tau) / lambda)``: modes below it have ``SNR > tau``."""
    if tau <= 0:
        raise ValueError(f"tau: expected > 0, received {tau}")
    return torch.sqrt(math.log1p(1.0 / tau) / lam)


def start_step(lambdas: Tensor, k_max: float, tau: float) -> int:
    """First step ``n0`` in ``1..N`` whose cutoff ``k_tau(n0) <= k_max``; ``N`` if none (pure generation)."""
    kt = k_tau(lambdas[1:], tau)
    hits = torch.nonzero(kt <= k_max)
    n_steps = lambdas.numel() - 1
    return int(hits[0, 0]) + 1 if hits.numel() else n_steps


# ----------------------------------------------------------------------------------------------------------
# Noise spectrum
# ----------------------------------------------------------------------------------------------------------

def power_spectrum(k2: Tensor, C: float, alpha: float, k0sq: float) -> Tensor:
    """``S0(k) = C (k^2 + k0^2)^(-alpha)``."""
    return C * (k2 + k0sq) ** (-alpha)


def mode_variance(x: Tensor, basis: Basis) -> Tensor:
    """Empirical per-mode variance ``(L, L)`` of ``x`` ``(N, C, L, L)`` (or ``(N, L, L)``), over samples and channels."""
    _check_square(x)
    modes = to_modes(x.to(torch.float64), basis).reshape(-1, x.shape[-2], x.shape[-1])
    return modes.var(dim=0, unbiased=True)


def fit_power_spectrum(k2: Tensor, var: Tensor, k0sq_bounds: tuple[float, float] = K0SQ_BOUNDS,
                       alpha_bounds: tuple[float, float] = (0.0, 5.0)) -> tuple[float, float, float]:
    """Fit ``(C, alpha, k0sq)`` of ``S0`` to a per-mode variance by least squares in log space.

    Modes that share a ``|k|^2`` are averaged first so every distinct scale counts once. ``k0^2`` is bounded to
    ``[pi/2, 3]`` as in the paper.
    """
    from scipy.optimize import least_squares

    k2n = torch.as_tensor(k2, dtype=torch.float64).flatten().numpy()
    vn = torch.as_tensor(var, dtype=torch.float64).flatten().numpy()
    if k2n.shape != vn.shape:
        raise ValueError(f"k2 and var: expected equal shapes, received {tuple(k2.shape)} and {tuple(var.shape)}")
    if np.any(vn <= 0) or not np.all(np.isfinite(vn)):
        raise ValueError("var: expected strictly positive, finite per-mode variances")
    uniq, inv = np.unique(np.round(k2n, 8), return_inverse=True)
    mean_v = np.bincount(inv, weights=vn) / np.bincount(inv)
    logv = np.log(mean_v)

    def resid(p: np.ndarray) -> np.ndarray:
        log_c, alpha, k0sq = p
        return log_c - alpha * np.log(uniq + k0sq) - logv

    lo = [-np.inf, alpha_bounds[0], k0sq_bounds[0]]
    hi = [np.inf, alpha_bounds[1], k0sq_bounds[1]]
    k0_init = 0.5 * (k0sq_bounds[0] + k0sq_bounds[1])
    x0 = np.array([float(logv.max()), 1.0, k0_init])
    sol = least_squares(resid, x0, bounds=(lo, hi))
    log_c, alpha, k0sq = sol.x
    return float(np.exp(log_c)), float(alpha), float(k0sq)


# ----------------------------------------------------------------------------------------------------------
# The process
# ----------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SpectralProcess:
    """Everything the forward process and samplers need, as tensors (build with :func:`make_process`).

    ``lambdas`` ``(N + 1,)`` float64; ``k2_eff = max(k^2, k_c^2)`` and ``s0`` are ``(L, L)`` float64.
    """

    basis: Basis
    L: int
    lambdas: Tensor
    k2_eff: Tensor
    s0: Tensor
    tau: float

    @property
    def num_steps(self) -> int:
        return self.lambdas.numel() - 1

    def to(self, device: torch.device | str) -> SpectralProcess:
        """The same process with its tables on ``device`` (``self`` when they are there already)."""
        device = torch.device(device)
        if self.lambdas.device == device:
            return self
        return dataclasses.replace(self, lambdas=self.lambdas.to(device), k2_eff=self.k2_eff.to(device),
                                   s0=self.s0.to(device))


def device_copies(proc: SpectralProcess) -> Callable[[torch.device], SpectralProcess]:
    """``get(device)``: ``proc`` with its tables on ``device``, copied once per device (for per-step loss code)."""
    copies: dict[torch.device, SpectralProcess] = {}

    def get(device: torch.device) -> SpectralProcess:
        if device not in copies:
            copies[device] = proc.to(device)
        return copies[device]
    return get


def make_process(L: int, basis: Basis, lambdas: Tensor, spectrum: tuple[float, float, float],
                 k_c: float = 0.0, tau: float = 0.1) -> SpectralProcess:
    """Build a :class:`SpectralProcess` for ``L x L`` images from a ``lambda`` table and ``S0`` = ``(C, alpha, k0sq)``."""
    _check_basis(basis)
    if L < 2:
        raise ValueError(f"L: expected >= 2, received {L}")
    if k_c < 0:
        raise ValueError(f"k_c: expected >= 0, received {k_c}")
    C, alpha, k0sq = spectrum
    if C <= 0 or k0sq <= 0:
        raise ValueError(f"spectrum: expected C > 0 and k0sq > 0, received C={C}, k0sq={k0sq}")
    k2 = wavenumber_sq(L, basis)
    lambdas = torch.as_tensor(lambdas, dtype=torch.float64)
    if lambdas.ndim != 1 or lambdas.numel() < 2 or float(lambdas[0]) != 0.0:
        raise ValueError("lambdas: expected a 1-D table (N + 1,) starting at lambda_0 = 0, "
                         f"received shape {tuple(lambdas.shape)}")
    return SpectralProcess(basis=basis, L=L, lambdas=lambdas, k2_eff=torch.clamp(k2, min=k_c**2),
                           s0=power_spectrum(k2, C, alpha, k0sq), tau=float(tau))


def _check_steps(proc: SpectralProcess, n: Tensor, batch: int) -> Tensor:
    n = torch.as_tensor(n)
    if n.ndim == 0:
        n = n.expand(batch)
    if n.shape != (batch,):
        raise ValueError(f"n: expected shape ({batch},) or a scalar, received {tuple(n.shape)}")
    if bool((n < 0).any()) or bool((n > proc.num_steps).any()):
        raise ValueError(f"n: expected steps in 0..{proc.num_steps}, received min {int(n.min())}, max {int(n.max())}")
    return n.long()


def log_abar(proc: SpectralProcess, n: Tensor) -> Tensor:
    """``log abar_n(k) = -max(k^2, k_c^2) lambda_n`` as ``(B, 1, L, L)`` float64 for steps ``n`` ``(B,)``."""
    lam = proc.lambdas[n.long()].reshape(-1, 1, 1, 1)
    return -proc.k2_eff * lam


def abar(proc: SpectralProcess, n: Tensor) -> Tensor:
    """``abar_n(k)`` as ``(B, 1, L, L)`` float64."""
    return torch.exp(log_abar(proc, n))


def marginal_std(proc: SpectralProcess, n: Tensor) -> tuple[Tensor, Tensor]:
    """``(sqrt(abar_n), sqrt((1 - abar_n) S0))``, each ``(B, 1, L, L)`` float64: the forward marginal's scales."""
    la = log_abar(proc, n)
    return torch.exp(0.5 * la), torch.sqrt(-torch.expm1(la) * proc.s0)


def corrupt(proc: SpectralProcess, x0_modes: Tensor, n: Tensor, noise: Tensor) -> Tensor:
    """Forward marginal ``X_n = sqrt(abar_n) X_0 + sqrt(1 - abar_n) sqrt(S0) eps`` in mode space.

    ``x0_modes`` and ``noise`` ``(B, C, L, L)``; ``n`` ``(B,)`` integer steps. Returns ``X_n`` in ``x0``'s dtype.
    """
    if x0_modes.shape != noise.shape:
        raise ValueError(f"noise: expected shape {tuple(x0_modes.shape)}, received {tuple(noise.shape)}")
    if x0_modes.ndim != 4 or x0_modes.shape[-1] != proc.L or x0_modes.shape[-2] != proc.L:
        raise ValueError(f"x0_modes: expected (B, C, {proc.L}, {proc.L}), received {tuple(x0_modes.shape)}")
    n = _check_steps(proc, n, x0_modes.shape[0])
    a, s = marginal_std(proc, n)
    return (a * x0_modes + s * noise).to(x0_modes.dtype)


def loss(eps_pred_pixels: Tensor, eps_modes: Tensor, basis: Basis) -> Tensor:
    """Unreduced epsilon loss ``(B,)``: mean over channels and modes of ``|T(eps_hat) - eps|^2`` (SKILD training).

    The network predicts in pixel space; ``T`` is the orthonormal mode transform.
    """
    if eps_pred_pixels.shape != eps_modes.shape or eps_modes.ndim != 4:
        raise ValueError("eps_pred_pixels and eps_modes: expected equal shapes (B, C, L, L), received "
                         f"{tuple(eps_pred_pixels.shape)} and {tuple(eps_modes.shape)}")
    diff = to_modes(eps_pred_pixels, basis) - eps_modes
    return diff.pow(2).flatten(1).mean(dim=1)


X0_FLOOR = 1e-4


def predict_x0(proc: SpectralProcess, x_n: Tensor, eps_hat: Tensor, n: Tensor, eps_error: float = 0.0,
               floor: float = X0_FLOOR) -> Tensor:
    """``x0_hat`` from an epsilon prediction, in mode space (float64).

    Exact inversion: ``x0_hat = (X_n - sqrt(S0) sqrt(1 - abar_n) eps_hat) / sqrt(abar_n)``. Deviation, for
    robustness: with ``y = X_n - sqrt((1 - abar_n) S0) eps_hat = a X_0 + sqrt((1 - a^2) S0) (eps - eps_hat)``,
    ``a = sqrt(abar_n)``, and an error ``eps - eps_hat`` of variance ``eps_error^2`` per mode, the linear MMSE
    estimate under the Gaussian prior ``X_0 ~ N(0, S0)`` is

        x0_hat = a y / (a^2 + (1 - a^2) eps_error^2 + floor^2),

    i.e. the exact inversion for every resolved mode (``a^2 >> eps_error^2``) and a shrinkage to the prior mean 0
    for modes still buried in noise, where ``1 / a`` would amplify the network's error into huge fine-scale
    garbage (which pixel-space clipping then spreads over all modes). ``floor`` only guards ``abar_n``
    underflowing to 0 (``k^2 lambda > 745``). ``eps_error = 0`` is the exact posterior of the paper.
    """
    n = _check_steps(proc, n, x_n.shape[0])
    if eps_error < 0 or floor < 0:
        raise ValueError(f"eps_error, floor: expected >= 0, received {eps_error}, {floor}")
    la = log_abar(proc, n)
    a, s = marginal_std(proc, n)
    denom = torch.exp(la) - torch.expm1(la) * eps_error**2 + floor**2
    return (x_n.double() - s * eps_hat.double()) * (a / denom)


def posterior(proc: SpectralProcess, x_n: Tensor, x0: Tensor, n: Tensor, m: Tensor) -> tuple[Tensor, Tensor]:
    """Exact per-mode Gaussian posterior ``q(X_m | X_n, X_0)`` for ``m < n``: returns ``(mean, var)`` (float64).

    With ``Sigma_j = S0 (1 - abar_j)``, ``A = sqrt(abar_n / abar_m)``, ``G = A Sigma_m / Sigma_n`` (SKILD sampler):
    ``mean = (sqrt(abar_m) - G sqrt(abar_n)) x0 + G X_n`` and ``var = Sigma_m - (A Sigma_m)^2 / Sigma_n``.
    ``m = n - 1`` is the paper's step; any ``m < n`` is exact too (the forward process is Markov per mode).
    """
    b = x_n.shape[0]
    n, m = _check_steps(proc, n, b), _check_steps(proc, m, b)
    if bool((m >= n).any()):
        raise ValueError("m: expected m < n for every sample")
    la_n, la_m = log_abar(proc, n), log_abar(proc, m)
    one_minus_n = -torch.expm1(la_n)   # 1 - abar_n, accurate when abar_n is close to 1
    one_minus_m = -torch.expm1(la_m)
    sig_n, sig_m = proc.s0 * one_minus_n, proc.s0 * one_minus_m
    a2 = torch.exp(la_n - la_m)        # A^2 = abar_n / abar_m
    # Modes that are never noised (k = 0 with k_c = 0) have Sigma_n = 0: their posterior is a point mass at X_n.
    safe = sig_n > 0
    g = torch.where(safe, torch.sqrt(a2) * sig_m / torch.where(safe, sig_n, 1.0), torch.ones_like(sig_n))
    mean = (torch.exp(0.5 * la_m) - g * torch.exp(0.5 * la_n)) * x0.double() + g * x_n.double()
    var = torch.where(safe, sig_m - a2 * sig_m**2 / torch.where(safe, sig_n, 1.0), torch.zeros_like(sig_n))
    # sig_m - (A sig_m)^2 / sig_n = sig_m (1 - abar_n/abar_m) (1 - abar_m) / (1 - abar_n) >= 0; clamp rounding.
    return mean, var.clamp(min=0.0)


def sample_step(proc: SpectralProcess, x_n: Tensor, eps_hat: Tensor, n: Tensor, m: Tensor,
                generator: torch.Generator | None = None, clip_x0: float | None = None,
                eps_error: float = 0.0, pinned: tuple[Tensor, Tensor] | None = None) -> Tensor:
    """One ancestral step ``X_n -> X_m`` (modes, float64) with the exact posterior around ``x0_hat``.

    ``clip_x0`` clamps ``x0_hat`` in pixel space to ``[-clip_x0, clip_x0]`` (data range known, e.g. spins), the
    usual guard for data of known range; ``eps_error`` regularises ``x0_hat`` (see :func:`predict_x0`).
    ``pinned = (mask (L, L) bool, x0 (B, C, L, L))``: on the masked modes ``X_0`` is known, so the posterior is
    taken around it instead of the network's ``x0_hat`` (conditioning by replacement, exact for a Markov
    forward process that acts on each mode separately). No noise is added when ``m = 0``.
    """
    b = x_n.shape[0]
    n, m = _check_steps(proc, n, b), _check_steps(proc, m, b)
    x0 = predict_x0(proc, x_n, eps_hat, n, eps_error=eps_error)
    if clip_x0 is not None:
        x0 = to_modes(from_modes(x0, proc.basis).clamp(-clip_x0, clip_x0), proc.basis)
    if pinned is not None:
        mask, x0_known = pinned
        if tuple(x0_known.shape) != tuple(x0.shape) or tuple(mask.shape) != (proc.L, proc.L):
            raise ValueError(f"pinned: expected a ({proc.L}, {proc.L}) mask and x0 of shape {tuple(x0.shape)}, "
                             f"received {tuple(mask.shape)} and {tuple(x0_known.shape)}")
        x0 = torch.where(mask.to(x0.device), x0_known.to(x0), x0)
    mean, var = posterior(proc, x_n, x0, n, m)
    noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
    last = (m == 0).reshape(-1, 1, 1, 1)
    return mean + torch.where(last, torch.zeros_like(var), var.sqrt()) * noise


def step_sequence(n_start: int, num_steps: int | None = None) -> list[int]:
    """Decreasing steps ``[n_start, ..., 0]`` with ``num_steps`` jumps (``None``: every step, the paper's sampler)."""
    if n_start < 1:
        raise ValueError(f"n_start: expected >= 1, received {n_start}")
    if num_steps is None or num_steps >= n_start:
        return list(range(n_start, -1, -1))
    if num_steps < 1:
        raise ValueError(f"num_steps: expected >= 1, received {num_steps}")
    seq = np.unique(np.rint(np.linspace(0, n_start, num_steps + 1)).astype(int))[::-1]
    return [int(s) for s in seq]


EpsFn = Callable[[Tensor, Tensor], Tensor]


def prior_sample(proc: SpectralProcess, shape: tuple[int, ...], n: int, generator: torch.Generator | None = None,
                 known_modes: Tensor | None = None, known: Tensor | None = None,
                 known_var: Tensor | None = None) -> Tensor:
    """A draw of ``X_n`` (modes, float64 ``shape = (B, C, L, L)``).

    Without ``known_modes`` this is the generation prior ``sqrt(S0) eps`` (exact at ``n = N`` when ``abar_N ~ 0``).
    With ``known_modes`` (the estimate of ``X_0`` on the modes a low-resolution input determines) and ``known``
    (bool ``(L, L)``): if ``X_0 ~ N(known_modes, known_var)`` on the known modes (``known_var`` ``(L, L)``, default
    0: the input's modes are taken as exact), ``X_n ~ N(a known_modes, a^2 known_var + (1 - a^2) S0)`` there,
    ``a = sqrt(abar_n)``; unknown modes get ``sqrt(S0) eps``, the Gaussian model's marginal for a mode we have no
    information on, so nothing above the input's resolution comes from anywhere but the noise.
    """
    eps = torch.randn(shape, generator=generator, dtype=torch.float64)
    if known_modes is None:
        return proc.s0.sqrt() * eps
    if known is None:
        raise ValueError("known: expected a bool (L, L) mask together with known_modes")
    if tuple(known_modes.shape) != tuple(shape):
        raise ValueError(f"known_modes: expected shape {tuple(shape)}, received {tuple(known_modes.shape)}")
    nn = torch.full((shape[0],), n, dtype=torch.long)
    a, s = marginal_std(proc, nn)
    var = s * s
    if known_var is not None:
        if tuple(known_var.shape) != (proc.L, proc.L) or bool((known_var < 0).any()):
            raise ValueError(f"known_var: expected non-negative variances ({proc.L}, {proc.L}), received "
                             f"{tuple(known_var.shape)}")
        var = var + a * a * known_var.double()
    forward = a * known_modes.double() + var.sqrt() * eps
    return torch.where(known, forward, proc.s0.sqrt() * eps)


def sample(proc: SpectralProcess, eps_fn: EpsFn, x_start: Tensor, n_start: int, num_steps: int | None = None,
           generator: torch.Generator | None = None, clip_x0: float | None = None,
           callback: Callable[[int, Tensor], None] | None = None, eps_error: float | Tensor = 0.0,
           pinned: tuple[Tensor, Tensor] | None = None) -> Tensor:
    """Ancestral sampling loop from ``X_{n_start}`` (modes) to ``X_0``; returns pixels ``(B, C, L, L)`` float32.

    ``eps_fn(x_pixels float32 (B, C, L, L), n (B,) long) -> eps_hat`` in pixel space (the network).
    ``num_steps`` < ``n_start`` jumps between a subsequence of steps with the exact posterior (fewer-step variant).
    ``clip_x0`` and ``eps_error`` (a float, or a table ``(N + 1,)`` indexed by step), ``pinned`` (modes whose
    ``X_0`` is known): see :func:`sample_step` and :func:`predict_x0`.
    """
    if x_start.ndim != 4:
        raise ValueError(f"x_start: expected (B, C, L, L), received {tuple(x_start.shape)}")
    if not 1 <= n_start <= proc.num_steps:
        raise ValueError(f"n_start: expected 1..{proc.num_steps}, received {n_start}")
    x = x_start.double()
    b = x.shape[0]
    seq = step_sequence(n_start, num_steps)
    if isinstance(eps_error, Tensor) and eps_error.shape != (proc.num_steps + 1,):
        raise ValueError(f"eps_error: expected a float or a table ({proc.num_steps + 1},) over steps, received "
                         f"shape {tuple(eps_error.shape)}")
    for i, (n, m) in enumerate(zip(seq[:-1], seq[1:])):
        nn = torch.full((b,), n, dtype=torch.long)
        # 1. the network sees pixel space and predicts eps in pixel space
        with torch.no_grad():
            eps_pix = eps_fn(from_modes(x, proc.basis).float(), nn)
        # 2. its mode-space eps gives x0_hat; 3. draw X_m from the exact posterior around x0_hat
        x = sample_step(proc, x, to_modes(eps_pix.double(), proc.basis), nn, torch.full((b,), m, dtype=torch.long),
                        generator=generator, clip_x0=clip_x0,
                        eps_error=float(eps_error[n]) if isinstance(eps_error, Tensor) else eps_error,
                        pinned=pinned)
        if callback is not None:
            callback(i, x)
    return from_modes(x, proc.basis).float()


__all__ = [
    "BASES", "SCHEDULES", "K0SQ_BOUNDS", "SpectralProcess", "device_copies", "dct_matrix", "to_modes", "from_modes",
    "mode_indices",
    "wavenumbers", "wavenumber_sq", "max_resolved_wavenumber", "known_mode_mask", "upsample_matrix",
    "downsample_matrix", "spectral_resample", "place_modes", "lambda_linear", "lambda_loglinear", "make_lambdas",
    "snr", "k_tau", "start_step", "power_spectrum", "mode_variance", "fit_power_spectrum", "make_process",
    "log_abar", "abar", "marginal_std", "corrupt", "loss", "X0_FLOOR", "predict_x0", "posterior", "sample_step",
    "step_sequence", "prior_sample", "sample",
]
