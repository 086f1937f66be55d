"""Gaussian diffusion as pure functions over tensors: schedules, forward marginal, loss, DDPM and DDIM.

Notation follows DDPM (Ho et al. 2020, "Denoising Diffusion Probabilistic Models"):

* discrete steps ``t = 0 .. N-1`` (0 is the least noisy), ``beta_t``, ``alpha_t = 1 - beta_t``,
  ``alpha_bar_t = prod_{s<=t} alpha_s``;
* forward marginal (Ho et al. eq. 4): ``x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps``;
* ancestral step (Ho et al. eqs. 6-7, Algorithm 2): sample the posterior ``q(x_{t-1} | x_t, x0_hat)`` with
  variance ``beta_tilde_t = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) beta_t``;
* DDIM (Song et al. 2021, "Denoising Diffusion Implicit Models", eq. 12) on a sub-sequence of steps, with
  ``sigma_t(eta)`` from their eq. 16 (``eta = 0`` deterministic, ``eta = 1`` DDPM-like);
* the cosine schedule is the squared-cosine ``alpha_bar`` of improved DDPM (Nichol & Dhariwal 2021, eq. 17)
  with offset ``s = 0.008`` and betas clipped at 0.999;
* ``v``-prediction (Salimans & Ho 2022): ``v = sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x0``.

Shapes: data ``x (B, ...)`` with any trailing shape; steps ``t`` are ``LongTensor (B,)`` (a Python int is
accepted by the single-step functions and broadcast to the batch). Schedules are computed in float64 and
stored as float32; per-step coefficients are moved to the data's device and dtype on use.

Step functions (``ddpm_step``, ``ddim_step`` and their ``*_mean_std`` variants) are differentiable and reusable
by other code (step-wise best-of-k search, step-wise GRPO); the sampling loops (``ddpm_sample``,
``ddim_sample``) run them under ``torch.no_grad``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

Prediction = Literal["epsilon", "v", "x0"]
ScheduleKind = Literal["linear", "cosine"]
ModelFn = Callable[[Tensor, Tensor], Tensor]
Callback = Callable[[dict], None]

_PREDICTIONS = ("epsilon", "v", "x0")
_COSINE_S = 0.008
_MAX_BETA = 0.999


# ----------------------------------------------------------------------------------------------- schedules
@dataclass(frozen=True, eq=False)
class GaussianSchedule:
    """Per-step coefficients of a discrete Gaussian diffusion, each a float32 tensor of shape ``(N,)``.

    Build with :func:`make_schedule` or :func:`schedule_from_betas` (which compute every derived quantity in
    float64 before rounding to float32).
    """

    kind: str
    betas: Tensor
    alphas: Tensor
    alpha_bars: Tensor
    #: ``alpha_bar_{t-1}`` with ``alpha_bar_{-1} = 1``
    alpha_bars_prev: Tensor
    #: ``beta_tilde_t`` (Ho et al. eq. 7); exactly 0 at ``t = 0``
    posterior_variance: Tensor

    def __post_init__(self) -> None:
        n = self.betas.shape[0]
        for name in ("betas", "alphas", "alpha_bars", "alpha_bars_prev", "posterior_variance"):
            v = getattr(self, name)
            if not isinstance(v, Tensor) or v.shape != (n,):
                got = tuple(v.shape) if isinstance(v, Tensor) else type(v).__name__
                raise ValueError(f"GaussianSchedule.{name}: expected a tensor of shape ({n},), received {got}")

    @property
    def num_steps(self) -> int:
        return int(self.betas.shape[0])

    @property
    def device(self) -> torch.device:
        return self.betas.device

    def to(self, device: torch.device | str) -> GaussianSchedule:
        """The same schedule with its tensors on ``device`` (avoids a host-device copy per step)."""
        return GaussianSchedule(self.kind, *(getattr(self, n).to(device) for n in (
            "betas", "alphas", "alpha_bars", "alpha_bars_prev", "posterior_variance")))


def schedule_from_betas(betas: Tensor, kind: str = "custom") -> GaussianSchedule:
    """Build a schedule from ``betas (N,)`` in (0, 1); derived quantities are computed in float64."""
    if not isinstance(betas, Tensor) or betas.ndim != 1 or betas.numel() < 1:
        raise ValueError(f"betas: expected a non-empty 1-D tensor, received {betas!r}")
    b = betas.detach().to("cpu", torch.float64)
    if not bool(((b > 0) & (b < 1)).all()):
        raise ValueError(f"betas: expected values in (0, 1), received min {b.min().item()}, max {b.max().item()}")
    alphas = 1.0 - b
    alpha_bars = torch.cumprod(alphas, dim=0)
    alpha_bars_prev = torch.cat([torch.ones(1, dtype=torch.float64), alpha_bars[:-1]])
    post_var = (1.0 - alpha_bars_prev) / (1.0 - alpha_bars) * b
    f32 = torch.float32
    return GaussianSchedule(kind, b.to(f32), alphas.to(f32), alpha_bars.to(f32), alpha_bars_prev.to(f32),
                            post_var.to(f32))


def make_schedule(kind: ScheduleKind, num_steps: int, beta_start: float = 1e-4,
                  beta_end: float = 2e-2) -> GaussianSchedule:
    """A ``linear`` (Ho et al. 2020) or ``cosine`` (Nichol & Dhariwal 2021) schedule with ``num_steps`` steps.

    ``beta_start`` / ``beta_end`` apply to the linear schedule only. Ho et al. use 1e-4 .. 2e-2 for N = 1000;
    for short schedules (N ~ 100) scale them up (or use ``cosine``) so that ``alpha_bar_{N-1}`` is near 0.
    """
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps: expected an int >= 1, received {num_steps!r}")
    if kind == "linear":
        if not (0.0 < beta_start <= beta_end < 1.0):
            raise ValueError(f"linear schedule: expected 0 < beta_start <= beta_end < 1, "
                             f"received beta_start={beta_start!r}, beta_end={beta_end!r}")
        betas = torch.linspace(beta_start, beta_end, num_steps, dtype=torch.float64)
    elif kind == "cosine":
        # alpha_bar(u) = cos^2(pi/2 (u + s)/(1 + s)), u = t/N; beta_t = 1 - alpha_bar(t+1)/alpha_bar(t).
        u = torch.arange(num_steps + 1, dtype=torch.float64) / num_steps
        f = torch.cos((u + _COSINE_S) / (1.0 + _COSINE_S) * math.pi / 2.0) ** 2
        # Clipping at 0.999 (as in the paper) avoids a singular last step where alpha_bar reaches 0.
        betas = (1.0 - f[1:] / f[:-1]).clamp(min=0.0, max=_MAX_BETA)
        betas = betas.clamp(min=1e-12)  # the first beta can round to 0 for huge N; keep the schedule valid
    else:
        raise ValueError(f"kind: expected 'linear' or 'cosine', received {kind!r}")
    return schedule_from_betas(betas, kind)


# ------------------------------------------------------------------------------------------------- helpers
def _check_prediction(prediction: str) -> None:
    if prediction not in _PREDICTIONS:
        raise ValueError(f"prediction: expected one of {_PREDICTIONS}, received {prediction!r}")


def _as_steps(t: Tensor | int, x: Tensor, schedule: GaussianSchedule, name: str = "t",
              lo: int = 0) -> Tensor:
    """Validate ``t`` (int or LongTensor (B,)) against ``x (B, ...)``; return a LongTensor (B,) on x's device."""
    batch = x.shape[0]
    if isinstance(t, int) and not isinstance(t, bool):
        t = torch.full((batch,), t, dtype=torch.long, device=x.device)
    if not isinstance(t, Tensor) or t.dtype not in (torch.int64, torch.int32) or t.shape != (batch,):
        got = f"{t.dtype} tensor of shape {tuple(t.shape)}" if isinstance(t, Tensor) else repr(t)
        raise ValueError(f"{name}: expected an int or an integer tensor of shape ({batch},), received {got}")
    n = schedule.num_steps
    if t.numel() and (int(t.min()) < lo or int(t.max()) > n - 1):
        raise ValueError(f"{name}: expected steps in [{lo}, {n - 1}], received min {int(t.min())}, "
                         f"max {int(t.max())}")
    return t.to(device=x.device, dtype=torch.long)


def _gather(values: Tensor, t: Tensor, x: Tensor) -> Tensor:
    """``values[t]`` reshaped to ``(B, 1, ..., 1)`` so it broadcasts against ``x (B, ...)``."""
    out = values.to(device=x.device)[t].to(x.dtype)
    return out.reshape((x.shape[0],) + (1,) * (x.ndim - 1))


def _check_same_shape(**tensors: Tensor) -> None:
    items = list(tensors.items())
    ref_name, ref = items[0]
    if ref.ndim < 1:
        raise ValueError(f"{ref_name}: expected a batched tensor (B, ...), received a scalar")
    for name, v in items[1:]:
        if v.shape != ref.shape:
            raise ValueError(f"{name}: expected shape {tuple(ref.shape)} (same as {ref_name}), "
                             f"received {tuple(v.shape)}")


# ------------------------------------------------------------------------------ forward process and targets
def corrupt(x0: Tensor, t: Tensor, noise: Tensor, schedule: GaussianSchedule) -> Tensor:
    """Sample the forward marginal ``q(x_t | x0)`` (Ho et al. eq. 4) for ``x0, noise (B, ...)``, ``t (B,)``."""
    _check_same_shape(x0=x0, noise=noise)
    t = _as_steps(t, x0, schedule)
    ab = _gather(schedule.alpha_bars, t, x0)
    return ab.sqrt() * x0 + (1.0 - ab).sqrt() * noise


def prediction_target(x0: Tensor, noise: Tensor, t: Tensor, schedule: GaussianSchedule,
                      prediction: Prediction) -> Tensor:
    """The regression target for ``prediction``: ``noise``, ``x0``, or ``v = sqrt(ab) eps - sqrt(1-ab) x0``."""
    _check_prediction(prediction)
    _check_same_shape(x0=x0, noise=noise)
    if prediction == "epsilon":
        return noise
    if prediction == "x0":
        return x0
    t = _as_steps(t, x0, schedule)
    ab = _gather(schedule.alpha_bars, t, x0)
    return ab.sqrt() * noise - (1.0 - ab).sqrt() * x0


def to_x0_eps(model_out: Tensor, x_t: Tensor, t: Tensor, schedule: GaussianSchedule,
              prediction: Prediction) -> tuple[Tensor, Tensor]:
    """Convert a network output to ``(x0_hat, eps_hat)``, both shaped like ``x_t (B, ...)``."""
    _check_prediction(prediction)
    _check_same_shape(x_t=x_t, model_out=model_out)
    t = _as_steps(t, x_t, schedule)
    ab = _gather(schedule.alpha_bars, t, x_t)
    s_ab, s_1m = ab.sqrt(), (1.0 - ab).sqrt()
    if prediction == "epsilon":
        return (x_t - s_1m * model_out) / s_ab, model_out
    if prediction == "x0":
        return model_out, (x_t - s_ab * model_out) / s_1m
    # v-parameterisation: x0 = sqrt(ab) x_t - sqrt(1-ab) v, eps = sqrt(1-ab) x_t + sqrt(ab) v.
    return s_ab * x_t - s_1m * model_out, s_1m * x_t + s_ab * model_out


def loss(model_out: Tensor, x0: Tensor, noise: Tensor, t: Tensor, schedule: GaussianSchedule,
         prediction: Prediction) -> Tensor:
    """Unreduced per-sample MSE ``(B,)`` between ``model_out`` and the ``prediction`` target (Ho et al. eq. 14
    for ``epsilon``), averaged over the non-batch dimensions. Weighting and reduction are the caller's."""
    target = prediction_target(x0, noise, t, schedule, prediction)
    _check_same_shape(target=target, model_out=model_out)
    return (model_out - target).pow(2).reshape(model_out.shape[0], -1).mean(dim=1)


# ------------------------------------------------------------------------------------------ single steps
def _x0_eps_clipped(model_out: Tensor, x_t: Tensor, t: Tensor, schedule: GaussianSchedule,
                    prediction: Prediction, clip: float | None) -> tuple[Tensor, Tensor]:
    x0_hat, eps_hat = to_x0_eps(model_out, x_t, t, schedule, prediction)
    if clip is not None:
        if clip <= 0:
            raise ValueError(f"clip: expected a positive bound or None, received {clip!r}")
        x0_hat = x0_hat.clamp(-clip, clip)
        # Keep eps consistent with the clipped x0 so the DDIM update stays on the same trajectory family.
        ab = _gather(schedule.alpha_bars, t, x_t)
        eps_hat = (x_t - ab.sqrt() * x0_hat) / (1.0 - ab).sqrt()
    return x0_hat, eps_hat


def _ddpm_posterior(model_out: Tensor, x_t: Tensor, t: Tensor | int, schedule: GaussianSchedule,
                    prediction: Prediction, clip: float | None) -> tuple[Tensor, Tensor, Tensor]:
    t = _as_steps(t, x_t, schedule)
    x0_hat, _ = _x0_eps_clipped(model_out, x_t, t, schedule, prediction, clip)
    ab, ab_prev = _gather(schedule.alpha_bars, t, x_t), _gather(schedule.alpha_bars_prev, t, x_t)
    beta, alpha = _gather(schedule.betas, t, x_t), _gather(schedule.alphas, t, x_t)
    # Posterior mean of q(x_{t-1} | x_t, x0) (Ho et al. eq. 7).
    mean = (ab_prev.sqrt() * beta / (1.0 - ab)) * x0_hat + (alpha.sqrt() * (1.0 - ab_prev) / (1.0 - ab)) * x_t
    std = _gather(schedule.posterior_variance, t, x_t).sqrt()
    return mean, std, x0_hat


def ddpm_step_mean_std(model_out: Tensor, x_t: Tensor, t: Tensor | int, schedule: GaussianSchedule,
                       prediction: Prediction, clip: float | None = None) -> tuple[Tensor, Tensor]:
    """Mean ``(B, ...)`` and std ``(B, 1, ..., 1)`` of the ancestral step ``p(x_{t-1} | x_t)``.

    The std is ``sqrt(beta_tilde_t)``, which is 0 at ``t = 0``: the last step is deterministic.
    """
    mean, std, _ = _ddpm_posterior(model_out, x_t, t, schedule, prediction, clip)
    return mean, std


def ddpm_step(model_out: Tensor, x_t: Tensor, t: Tensor | int, schedule: GaussianSchedule,
              prediction: Prediction, generator: torch.Generator | None = None,
              clip: float | None = None) -> Tensor:
    """One ancestral DDPM step ``x_t -> x_{t-1}`` (Ho et al. Algorithm 2, posterior variance beta_tilde).

    ``clip`` clamps ``x0_hat`` to ``[-clip, clip]`` before forming the posterior mean (as in Ho et al.'s
    released sampler for data in [-1, 1]). No noise is added at ``t = 0``.
    """
    mean, std = ddpm_step_mean_std(model_out, x_t, t, schedule, prediction, clip)
    noise = torch.randn(x_t.shape, generator=generator, device=x_t.device, dtype=x_t.dtype)
    return mean + std * noise


def ddim_step_mean_std(model_out: Tensor, x_t: Tensor, t: Tensor | int, t_prev: Tensor | int,
                       schedule: GaussianSchedule, prediction: Prediction, eta: float = 0.0,
                       clip: float | None = None) -> tuple[Tensor, Tensor]:
    """Mean ``(B, ...)`` and std ``(B, 1, ..., 1)`` of the DDIM step ``x_t -> x_{t_prev}`` (Song et al. eq. 12).

    ``t_prev = -1`` stands for clean data (``alpha_bar = 1``). ``sigma = eta sqrt((1 - ab_prev)/(1 - ab))
    sqrt(1 - ab/ab_prev)`` (their eq. 16); with ``eta = 0`` the std is 0 and the step is deterministic.
    """
    if not (eta >= 0.0):
        raise ValueError(f"eta: expected a value >= 0, received {eta!r}")
    t = _as_steps(t, x_t, schedule)
    t_prev = _as_steps(t_prev, x_t, schedule, name="t_prev", lo=-1)
    if bool((t_prev >= t).any()):
        raise ValueError("t_prev: expected every t_prev < t (sampling goes from noisy to clean)")
    x0_hat, eps_hat = _x0_eps_clipped(model_out, x_t, t, schedule, prediction, clip)
    ab = _gather(schedule.alpha_bars, t, x_t)
    ab_ext = torch.cat([torch.ones(1, dtype=schedule.alpha_bars.dtype, device=schedule.device),
                        schedule.alpha_bars])
    ab_prev = _gather(ab_ext, t_prev + 1, x_t)
    sigma = eta * ((1.0 - ab_prev) / (1.0 - ab)).sqrt() * (1.0 - ab / ab_prev).sqrt()
    # Direction pointing to x_t; clamp guards a tiny negative from rounding when eta ~ 1.
    dir_coef = (1.0 - ab_prev - sigma**2).clamp(min=0.0).sqrt()
    mean = ab_prev.sqrt() * x0_hat + dir_coef * eps_hat
    return mean, sigma


def ddim_step(model_out: Tensor, x_t: Tensor, t: Tensor | int, t_prev: Tensor | int,
              schedule: GaussianSchedule, prediction: Prediction, eta: float = 0.0,
              generator: torch.Generator | None = None, clip: float | None = None) -> Tensor:
    """One DDIM step ``x_t -> x_{t_prev}`` (Song et al. eq. 12); noise is drawn only when ``eta > 0``."""
    mean, std = ddim_step_mean_std(model_out, x_t, t, t_prev, schedule, prediction, eta, clip)
    if eta == 0.0:
        return mean
    noise = torch.randn(x_t.shape, generator=generator, device=x_t.device, dtype=x_t.dtype)
    return mean + std * noise


def gaussian_step_logprob(x_prev: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """``log N(x_prev; mean, std^2 I)`` summed over non-batch dimensions -> ``(B,)``.

    For policy-gradient fine-tuning on sampler steps (e.g. GRPO): take ``mean, std`` from
    :func:`ddpm_step_mean_std` or :func:`ddim_step_mean_std` (``eta > 0``). ``std`` broadcasts against
    ``mean`` and must be positive.
    """
    _check_same_shape(x_prev=x_prev, mean=mean)
    std = torch.as_tensor(std, dtype=mean.dtype, device=mean.device)
    if bool((std <= 0).any()):
        raise ValueError("std: expected positive values (a deterministic step, e.g. DDIM eta=0 or DDPM t=0, "
                         "has no density)")
    std = std.expand_as(mean)
    lp = -0.5 * ((x_prev - mean) / std) ** 2 - std.log() - 0.5 * math.log(2.0 * math.pi)
    return lp.reshape(lp.shape[0], -1).sum(dim=1)


def ddim_timesteps(num_train_steps: int, num_steps: int) -> Tensor:
    """``num_steps`` evenly spaced steps from ``num_train_steps - 1`` down to 0, as a descending LongTensor.

    The first sampled step is always the noisiest training step, so ``x_T ~ N(0, I)`` matches the forward
    process; ``num_steps == num_train_steps`` gives every step.
    """
    for name, v in (("num_train_steps", num_train_steps), ("num_steps", num_steps)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name}: expected an int >= 1, received {v!r}")
    if num_steps > num_train_steps:
        raise ValueError(f"num_steps: expected at most num_train_steps={num_train_steps}, received {num_steps}")
    if num_steps == 1:
        return torch.tensor([num_train_steps - 1], dtype=torch.long)
    k = torch.arange(num_steps, dtype=torch.long)
    # round((N-1) k / (n-1)) in exact integer arithmetic (round half up) -> strictly increasing for n <= N.
    ts = (2 * (num_train_steps - 1) * k + (num_steps - 1)) // (2 * (num_steps - 1))
    return ts.flip(0)


# ------------------------------------------------------------------------------------------ sampling loops
def _initial_noise(shape: tuple[int, ...], generator: torch.Generator | None, x_T: Tensor | None) -> Tensor:
    if x_T is not None:
        if tuple(x_T.shape) != tuple(shape):
            raise ValueError(f"x_T: expected shape {tuple(shape)}, received {tuple(x_T.shape)}")
        return x_T.clone()
    device = generator.device if generator is not None else torch.device("cpu")
    return torch.randn(tuple(shape), generator=generator, device=device)


@torch.no_grad()
def ddpm_sample(model_fn: ModelFn, shape: tuple[int, ...], schedule: GaussianSchedule, prediction: Prediction,
                generator: torch.Generator | None, clip: float | None = None, callback: Callback | None = None,
                x_T: Tensor | None = None) -> Tensor:
    """Ancestral sampling over all ``N`` steps (Ho et al. Algorithm 2). Returns ``x_0`` of ``shape``.

    ``model_fn(x_t (B, ...), t LongTensor (B,)) -> model_out``. Noise comes from ``generator`` only (on the
    generator's device when ``x_T`` is not given). ``callback`` receives ``{"i", "t", "x", "x0_hat"}`` after
    each step (``x`` is the new, less noisy sample).
    """
    _check_prediction(prediction)
    x = _initial_noise(shape, generator, x_T)
    for i, step in enumerate(range(schedule.num_steps - 1, -1, -1)):
        t = torch.full((x.shape[0],), step, dtype=torch.long, device=x.device)
        out = model_fn(x, t)                                                                 # 1. predict
        mean, std, x0_hat = _ddpm_posterior(out, x, t, schedule, prediction, clip)           # 2. posterior
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        x = mean + std * noise                                                               # 3. sample
        if callback is not None:
            callback({"i": i, "t": step, "x": x, "x0_hat": x0_hat})
    return x


@torch.no_grad()
def ddim_sample(model_fn: ModelFn, shape: tuple[int, ...], schedule: GaussianSchedule, prediction: Prediction,
                num_steps: int, generator: torch.Generator | None, eta: float = 0.0, clip: float | None = None,
                callback: Callback | None = None, x_T: Tensor | None = None) -> Tensor:
    """DDIM sampling on ``num_steps`` evenly spaced steps (Song et al. eq. 12). Returns ``x_0`` of ``shape``.

    Same ``model_fn`` / ``callback`` contract as :func:`ddpm_sample`; ``eta = 0`` is deterministic given ``x_T``.
    """
    _check_prediction(prediction)
    steps = ddim_timesteps(schedule.num_steps, num_steps).tolist()
    x = _initial_noise(shape, generator, x_T)
    for i, step in enumerate(steps):
        prev = steps[i + 1] if i + 1 < len(steps) else -1
        t = torch.full((x.shape[0],), step, dtype=torch.long, device=x.device)
        out = model_fn(x, t)                                                                 # 1. predict
        x_new = ddim_step(out, x, t, prev, schedule, prediction, eta, generator, clip)       # 2. step
        if callback is not None:
            x0_hat, _ = _x0_eps_clipped(out, x, t, schedule, prediction, clip)
            callback({"i": i, "t": step, "x": x_new, "x0_hat": x0_hat})
        x = x_new
    return x


__all__ = [
    "GaussianSchedule", "make_schedule", "schedule_from_betas", "corrupt", "prediction_target", "to_x0_eps",
    "loss", "ddpm_step", "ddpm_step_mean_std", "ddim_step", "ddim_step_mean_std", "ddim_timesteps",
    "gaussian_step_logprob", "ddpm_sample", "ddim_sample",
]
