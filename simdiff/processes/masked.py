"""Masked (absorbing-state) discrete diffusion, MDLM-style (Sahoo et al. 2024, "Simple and Effective Masked
Diffusion Language Models").

Tokens live in ``{0, ..., V-1}``; one extra id, ``mask_id`` (conventionally ``V``), is the absorbing [MASK]
state. A denoiser maps ``(z_t, t, cond)`` to logits over ``V + 1`` classes, the mask class last.

Pieces, each a pure function over tensors; the MDLM equations they implement are written out (by name rather
than by number, since numbering differs between versions of the paper):

* schedule: log-linear ``alpha_t = 1 - (1 - eps) t`` (MDLM's "log-linear" noise,
  ``sigma(t) = -log(1 - (1 - eps) t)``), ``eps = 1e-3``;
* :func:`corrupt` draws from the forward marginal ``q(z_t | x) = Cat(z_t; alpha_t x + (1 - alpha_t) m)``
  independently per position (absorbing prior ``pi = m``, the one-hot of [MASK]);
* :func:`subs_log_probs` is the SUBS parametrization: ``<x_theta(z_t), m> = 0`` ("zero masking probabilities")
  and ``x_theta(z_t) = z_t`` where ``z_t != m`` ("carry-over unmasking");
* :func:`loss` is the continuous-time NELBO
  ``L = E_q int_0^1 alpha'_t / (1 - alpha_t) sum_l 1[z_t^l = m] log <x_theta^l(z_t, t), x^l> dt``, whose weight
  ``-alpha'_t / (1 - alpha_t)`` is exactly ``1 / t`` for the log-linear schedule; one Monte Carlo sample of t
  per sequence, returned unreduced per sample, in nats per token;
* :func:`sample_t` draws ``t ~ U[eps, 1]`` with MDLM's antithetic (stratified, "low-discrepancy") sampler;
* :func:`sample` is the ancestral sampler with the SUBS reverse step
  ``p_theta(z_s | z_t) = Cat(z_s; [(1 - alpha_s) m + (alpha_s - alpha_t) x_theta(z_t)] / (1 - alpha_t))`` for a
  masked ``z_t`` (an unmasked one is copied): a masked position becomes token ``v`` with probability
  ``x_theta(v) (alpha_s - alpha_t) / (1 - alpha_t)`` and stays masked with ``(1 - alpha_s) / (1 - alpha_t)``.
  Denoiser outputs are reused for rows whose ``z`` did not change (MDLM's caching, exact only for a denoiser
  that ignores ``t``); optional confidence-ordered unmasking (LLaDA-style low-confidence remasking);
* :func:`nll_bound` evaluates the continuous-time NELBO of given data with the integral over t done in closed
  form (Monte Carlo only over which positions are masked) and :func:`nll_bound_quadrature` by Gauss-Legendre
  quadrature over t; :func:`nats_to_bits` converts.

The bound in :func:`nll_bound` is taken over the full mask-rate range ``[0, 1]``, so it upper-bounds
``-log p_theta(x)`` of the continuous-time (many-step) sampler started from the all-[MASK] sequence: the prior
term vanishes.
The training loss with ``t in [eps, 1]`` covers the mask rates ``[(1-eps) eps, 1 - eps]`` and thus differs
from it by ``O(eps)`` (MDLM neglects the same prior/reconstruction terms).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

EPS = 1e-3

Cond = torch.Tensor | Mapping[str, torch.Tensor] | None
Denoiser = Callable[[torch.Tensor, torch.Tensor, Any], torch.Tensor]


# ----------------------------------------------------------------------------------------------- schedule
def alpha(t: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Log-linear schedule ``alpha_t = 1 - (1 - eps) t``: probability that a token is still unmasked at t."""
    return 1.0 - (1.0 - eps) * t


def alpha_prime(t: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """``d alpha_t / dt = -(1 - eps)`` (constant for the log-linear schedule)."""
    return torch.full_like(t, -(1.0 - eps))


def elbo_weight(t: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """NELBO weight ``-alpha'_t / (1 - alpha_t)`` (continuous-time NELBO); ``1 / t`` for the log-linear schedule."""
    return -alpha_prime(t, eps) / (1.0 - alpha(t, eps))


def sample_t(n: int, generator: torch.Generator | None = None, eps: float = EPS, antithetic: bool = True,
             device: torch.device | str | None = None) -> torch.Tensor:
    """``(n,)`` times in ``[eps, 1]``.

    With ``antithetic`` the uniforms are stratified as in MDLM's code ("antithetic sampling"):
    ``u_i = (u / n + i / n) mod 1`` with a single shared ``u``, so the batch covers ``[0, 1)`` evenly and the
    variance of the batch-mean loss drops; each ``u_i`` is still marginally uniform.
    """
    if n < 1:
        raise ValueError(f"n: expected a positive batch size, received {n}")
    if not 0.0 < eps < 1.0:
        raise ValueError(f"eps: expected a value in (0, 1), received {eps}")
    if antithetic:
        u = torch.rand(1, generator=generator, device=device)
        u = (u / n + torch.arange(n, device=device) / n) % 1.0
    else:
        u = torch.rand(n, generator=generator, device=device)
    return eps + (1.0 - eps) * u


# ----------------------------------------------------------------------------------------- forward process
def _check_tokens(name: str, x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.dtype not in (torch.int64, torch.int32):
        got = f"{tuple(x.shape)} {x.dtype}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name}: expected an integer tensor of shape (B, L), received {got}")


def _check_t(t: torch.Tensor, batch: int) -> None:
    if not isinstance(t, torch.Tensor) or t.shape != (batch,):
        got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
        raise ValueError(f"t: expected shape ({batch},), received {got}")


def corrupt(x0: torch.Tensor, t: torch.Tensor, mask_id: int, generator: torch.Generator | None = None,
            eps: float = EPS) -> torch.Tensor:
    """Draw ``z_t ~ q(z_t | x0) = Cat(alpha_t x0 + (1 - alpha_t) m)``: each position masked independently w.p. ``1 - alpha_t``.

    ``x0``: (B, L) clean token ids in ``[0, mask_id)``; ``t``: (B,). Returns ``z_t``: (B, L).
    """
    _check_tokens("x0", x0)
    _check_t(t, x0.shape[0])
    if (x0 == mask_id).any():
        raise ValueError(f"x0: expected clean tokens, received a [MASK] (id {mask_id})")
    p_mask = (1.0 - alpha(t, eps))[:, None]
    u = torch.rand(x0.shape, generator=generator, device=x0.device)
    return torch.where(u < p_mask, torch.full_like(x0, mask_id), x0)


def subs_log_probs(logits: torch.Tensor, z_t: torch.Tensor, mask_id: int) -> torch.Tensor:
    """SUBS parametrization (MDLM): log ``x_theta(z_t, t)`` of shape (B, L, V + 1).

    1. zero masking probability: the [MASK] logit is set to ``-inf`` before the softmax;
    2. carry-over unmasking: an unmasked position puts all its mass on its own token.
    """
    _check_tokens("z_t", z_t)
    if logits.shape[:2] != z_t.shape or logits.shape[-1] != mask_id + 1:
        raise ValueError(f"logits: expected shape {(*z_t.shape, mask_id + 1)} (V + 1 classes, mask last), "
                         f"received {tuple(logits.shape)}")
    logits = logits.float().clone()
    logits[..., mask_id] = -math.inf
    logp = F.log_softmax(logits, dim=-1)
    copied = torch.full_like(logp, -math.inf).scatter_(-1, z_t.unsqueeze(-1), 0.0)
    return torch.where((z_t == mask_id).unsqueeze(-1), logp, copied)


def loss(logits: torch.Tensor, x0: torch.Tensor, z_t: torch.Tensor, t: torch.Tensor, mask_id: int,
         eps: float = EPS) -> torch.Tensor:
    """Continuous-time NELBO estimate (MDLM, one t per sequence), unreduced: (B,) in nats per token.

    ``sum_l 1[z_t^l = m] * (-log p_theta(x0^l | z_t)) * w(t) / L`` with ``w(t) = -alpha'_t/(1-alpha_t) = 1/t``.
    Unmasked positions contribute exactly zero under SUBS (carry-over), so only masked ones are summed.
    ``logits``: (B, L, V + 1); ``x0``, ``z_t``: (B, L); ``t``: (B,).
    """
    _check_tokens("x0", x0)
    _check_t(t, x0.shape[0])
    if z_t.shape != x0.shape:
        raise ValueError(f"z_t: expected shape {tuple(x0.shape)}, received {tuple(z_t.shape)}")
    if logits.shape != (*x0.shape, mask_id + 1):
        raise ValueError(f"logits: expected shape {(*x0.shape, mask_id + 1)}, received {tuple(logits.shape)}")
    masked = z_t == mask_id
    # Log-softmax with the mask class removed (SUBS zero-masking) evaluated only at the target token.
    logp = F.log_softmax(logits[..., :mask_id].float(), dim=-1)
    nll = -logp.gather(-1, x0.unsqueeze(-1)).squeeze(-1)
    nll = torch.where(masked, nll, torch.zeros_like(nll))
    return elbo_weight(t, eps) * nll.sum(dim=1) / x0.shape[1]


# ---------------------------------------------------------------------------------------------- sampling
def _index_cond(cond: Cond, rows: torch.Tensor) -> Cond:
    if cond is None:
        return None
    if isinstance(cond, torch.Tensor):
        return cond[rows]
    return {k: v[rows] for k, v in cond.items()}


def _check_cond(cond: Cond, batch: int) -> None:
    items = [] if cond is None else [("cond", cond)] if isinstance(cond, torch.Tensor) else list(cond.items())
    for name, v in items:
        if not isinstance(v, torch.Tensor) or v.shape[0] != batch:
            got = tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
            raise ValueError(f"cond[{name}]: expected a tensor with leading dimension {batch}, received {got}")


Generators = torch.Generator | Sequence[torch.Generator | None] | None


def _uniform(shape: tuple[int, ...], generator: Generators, dtype: torch.dtype = torch.float32,
             device: torch.device | str | None = None) -> torch.Tensor:
    """Uniforms of ``shape`` (B, ...). With one generator per row, row ``b`` draws from ``generator[b]`` only,
    so a sample does not depend on which other rows share the batch."""
    if generator is None or isinstance(generator, torch.Generator):
        return torch.rand(shape, generator=generator, dtype=dtype, device=device)
    return torch.stack([torch.rand(shape[1:], generator=g, dtype=dtype, device=device) for g in generator])


def _gumbel_argmax(logp: torch.Tensor, temperature: float, u: torch.Tensor | None) -> torch.Tensor:
    """Categorical draw by Gumbel-max from uniforms ``u`` (shape of ``logp``). float64 noise: float32 Gumbel
    truncation measurably lowers the effective temperature of masked-diffusion samplers (Zheng et al. 2024)."""
    if temperature == 0.0:
        return logp.argmax(-1)
    g = -torch.log(-torch.log(u.clamp_min(1e-300)))
    return (logp.double() / temperature + g).argmax(-1)


def _candidates(logp: torch.Tensor, where: torch.Tensor, temperature: float,
                generator: Generators) -> torch.Tensor:
    """Draws ``x0 ~ p_theta`` at the positions ``where`` (B, L): returns (n_where,) token ids.

    A single generator draws only at ``where`` (cheap); per-row generators draw a full row each so every row
    consumes its own stream identically whatever the rest of the batch does."""
    if temperature == 0.0:
        return logp[where].argmax(-1)
    if generator is None or isinstance(generator, torch.Generator):
        u = torch.rand(logp[where].shape, generator=generator, dtype=torch.float64, device=logp.device)
        return _gumbel_argmax(logp[where], temperature, u)
    u = _uniform(tuple(logp.shape), generator, torch.float64, logp.device)
    return _gumbel_argmax(logp, temperature, u)[where]


def _reveal_confident(masked: torch.Tensor, conf: torch.Tensor, keep_ratio: float) -> torch.Tensor:
    """Reveal the most confident masked positions so that ``round(n_masked * keep_ratio)`` stay masked."""
    n_masked = masked.sum(1)
    n_reveal = n_masked - torch.round(n_masked * keep_ratio).long()
    conf = torch.where(masked, conf, torch.full_like(conf, -math.inf))
    rank = conf.argsort(dim=1, descending=True).argsort(dim=1)
    return masked & (rank < n_reveal[:, None])


@torch.no_grad()
def sample(denoiser: Denoiser, shape: tuple[int, int], *, mask_id: int, num_steps: int,
           generator: Generators = None, cond: Cond = None, eps: float = EPS,
           order: Literal["random", "confidence"] = "random", cache: bool = True, temperature: float = 1.0,
           device: torch.device | str | None = None,
           callback: Callable[[dict], None] | None = None) -> torch.Tensor:
    """Ancestral sampling from all-[MASK] at ``t = 1`` to ``t = 0`` in ``num_steps`` uniform steps (MDLM's ancestral sampler).

    ``denoiser(z, t, cond) -> logits`` with ``z``: (b, L) ids, ``t``: (b,), logits (b, L, mask_id + 1); it
    may be called on a subset of rows (``cond`` is indexed along dim 0 accordingly). Returns (B, L) token ids,
    none equal to ``mask_id``.

    ``order="random"`` is the exact ancestral step; ``"confidence"`` reveals, per row, the same expected number
    of positions but chooses the ones whose sampled token has the highest probability (not an exact
    sampler of the model's distribution; a quality heuristic as in LLaDA). ``cache=True`` reuses the last
    denoiser output for rows whose ``z`` did not change; this is exact only when the denoiser ignores ``t``,
    so a denoiser with attribute ``time_conditioned = True`` is refused. ``callback`` receives a dict
    ``{"step", "t", "s", "z", "rows_evaluated"}`` after every step (e.g. to count function evaluations).
    ``generator`` is one ``torch.Generator`` or a sequence of B (one per row, ``None`` entries use the global
    RNG): per-row generators make each row's sample independent of the batch it is drawn in.
    """
    B, L = shape
    if B < 1 or L < 1:
        raise ValueError(f"shape: expected (B, L) with B, L >= 1, received {shape}")
    if num_steps < 1:
        raise ValueError(f"num_steps: expected >= 1, received {num_steps}")
    if order not in ("random", "confidence"):
        raise ValueError(f"order: expected 'random' or 'confidence', received {order!r}")
    if temperature < 0:
        raise ValueError(f"temperature: expected >= 0, received {temperature}")
    if cache and getattr(denoiser, "time_conditioned", False):
        raise ValueError("cache=True reuses outputs across times, which is only valid for a denoiser that "
                         "ignores t; this denoiser is time_conditioned: pass cache=False")
    _check_cond(cond, B)
    if not (generator is None or isinstance(generator, torch.Generator)) and len(generator) != B:
        raise ValueError(f"generator: expected one generator or a sequence of {B}, received {len(generator)}")
    z = torch.full((B, L), mask_id, dtype=torch.long, device=device)
    logp = torch.zeros(B, L, mask_id, device=device)
    stale = torch.ones(B, dtype=torch.bool, device=device)
    ts = torch.linspace(1.0, 0.0, num_steps + 1, dtype=torch.float64)
    for i in range(num_steps):
        t, s = float(ts[i]), float(ts[i + 1])
        # 1. evaluate the denoiser only on rows whose z changed since their last evaluation.
        rows = torch.nonzero(stale if cache else torch.ones_like(stale)).squeeze(1)
        if rows.numel():
            tt = torch.full((rows.numel(),), t, device=device)
            out = denoiser(z[rows], tt, _index_cond(cond, rows))
            if out.shape != (rows.numel(), L, mask_id + 1):
                raise ValueError(f"denoiser output: expected shape {(rows.numel(), L, mask_id + 1)}, "
                                 f"received {tuple(out.shape)}")
            logp[rows] = F.log_softmax(out[..., :mask_id].float(), dim=-1)  # SUBS: no mass on [MASK]
        masked = z == mask_id
        # 2. reveal w.p. (alpha_s - alpha_t)/(1 - alpha_t) = (t - s)/t: eps cancels, and s = 0 reveals all.
        a_t, a_s = alpha(torch.tensor(t), eps), alpha(torch.tensor(s), eps)
        reveal_p = float((a_s - a_t) / (1.0 - a_t))
        cand = z.clone()
        if order == "random":
            # 3. draw x0 ~ p_theta(. | z_t) only where a position is revealed (the others stay masked).
            reveal = masked & (_uniform((B, L), generator, device=z.device) < reveal_p)
            cand[reveal] = _candidates(logp, reveal, temperature, generator)
        else:
            # 3'. draw x0 at every masked position, keep the most confident ones.
            cand[masked] = _candidates(logp, masked, temperature, generator)
            conf = logp.gather(-1, cand.clamp_max(mask_id - 1).unsqueeze(-1)).squeeze(-1)
            reveal = _reveal_confident(masked, conf, 1.0 - reveal_p)
        # 4. carry over unmasked tokens (SUBS); mark changed rows stale.
        z = torch.where(reveal, cand, z)
        stale = reveal.any(dim=1)
        if callback is not None:
            callback({"step": i, "t": t, "s": s, "z": z, "rows_evaluated": int(rows.numel())})
    return z


# ------------------------------------------------------------------------------------------- NLL bounds
def nats_to_bits(x: torch.Tensor | float) -> torch.Tensor | float:
    return x / math.log(2.0)


def _masked_nll(denoiser: Denoiser, x0: torch.Tensor, masked: torch.Tensor, t: torch.Tensor, cond: Cond,
                mask_id: int) -> torch.Tensor:
    """(B, L) ``-log p_theta(x0 | z)`` at masked positions, 0 elsewhere, for ``z = x0`` with ``masked`` hidden."""
    z = torch.where(masked, torch.full_like(x0, mask_id), x0)
    logits = denoiser(z, t, cond)
    if logits.shape != (*x0.shape, mask_id + 1):
        raise ValueError(f"denoiser output: expected shape {(*x0.shape, mask_id + 1)}, "
                         f"received {tuple(logits.shape)}")
    logp = F.log_softmax(logits[..., :mask_id].float(), dim=-1)
    nll = -logp.gather(-1, x0.unsqueeze(-1)).squeeze(-1)
    return torch.where(masked, nll, torch.zeros_like(nll))


@torch.no_grad()
def nll_bound(denoiser: Denoiser, x0: torch.Tensor, *, mask_id: int, cond: Cond = None,
              num_samples: int = 1, generator: torch.Generator | None = None, eps: float = EPS) -> torch.Tensor:
    """Continuous-time NELBO of ``x0`` (B, L), integrated exactly over t: (B,) nats per token.

    With mask rate ``m = 1 - alpha_t`` the continuous-time NELBO over ``m in [0, 1]`` is
    ``int_0^1 (1/m) E_{z~q_m}[sum_masked -log p] dm``. Conditioning on the number ``k`` of masked positions,
    ``int_0^1 (1/m) C(L,k) m^k (1-m)^(L-k) dm * k = 1``, so the integral is exactly
    ``sum_{k=1}^{L} E_{S: |S|=k}[mean_{l in S} -log p(x^l | x with S masked)]`` (the any-order
    autoregressive form). We average ``num_samples`` random subsets per ``k`` (one per row): L denoiser calls
    per sample, unbiased, no time-discretization error. ``t`` passed to the denoiser is the ``t`` whose mean
    mask rate is ``k / L``; the identity is exact for a denoiser that ignores ``t`` (as MDLM's SUBS models).
    """
    _check_tokens("x0", x0)
    _check_cond(cond, x0.shape[0])
    if num_samples < 1:
        raise ValueError(f"num_samples: expected >= 1, received {num_samples}")
    B, L = x0.shape
    total = torch.zeros(B, dtype=torch.float64, device=x0.device)
    for _ in range(num_samples):
        # A uniform random permutation per row: the first k ranks form a uniform k-subset.
        rank = torch.rand(B, L, generator=generator, device=x0.device).argsort(1).argsort(1)
        for k in range(1, L + 1):
            t = torch.full((B,), min(1.0, (k / L) / (1.0 - eps)), device=x0.device)
            nll = _masked_nll(denoiser, x0, rank < k, t, cond, mask_id)
            total += nll.sum(1).double() / k
    return (total / (num_samples * L)).float()


@torch.no_grad()
def nll_bound_quadrature(denoiser: Denoiser, x0: torch.Tensor, *, mask_id: int, cond: Cond = None,
                         num_nodes: int = 16, num_samples: int = 4, generator: torch.Generator | None = None,
                         eps: float = EPS) -> torch.Tensor:
    """The same NELBO by Gauss-Legendre quadrature over the mask rate ``m in [0, 1]`` (the denoiser sees
    ``t = m / (1 - eps)``, so ``m = 1 - alpha_t``) with ``num_samples`` Monte Carlo masks per node:
    (B,) nats per token.

    For a denoiser that ignores ``t`` the integrand ``F(m)/m`` is a polynomial of degree ``L - 1`` in ``m``,
    so ``num_nodes >= L / 2`` integrates it exactly in expectation. Also valid for time-conditioned denoisers.
    """
    _check_tokens("x0", x0)
    _check_cond(cond, x0.shape[0])
    B, L = x0.shape
    if num_nodes < 1 or num_samples < 1:
        raise ValueError(f"num_nodes, num_samples: expected >= 1, received {num_nodes}, {num_samples}")
    nodes, weights = np.polynomial.legendre.leggauss(num_nodes)
    m_nodes = (nodes + 1.0) / 2.0  # mask rates in (0, 1)
    total = torch.zeros(B, dtype=torch.float64, device=x0.device)
    for m, w in zip(m_nodes.tolist(), (weights / 2.0).tolist()):
        t = torch.full((B,), m / (1.0 - eps), device=x0.device)
        acc = torch.zeros(B, dtype=torch.float64, device=x0.device)
        for _ in range(num_samples):
            masked = torch.rand(B, L, generator=generator, device=x0.device) < m
            acc += _masked_nll(denoiser, x0, masked, t, cond, mask_id).sum(1).double()
        total += w * acc / (num_samples * m)
    return (total / L).float()


__all__ = ["EPS", "alpha", "alpha_prime", "elbo_weight", "sample_t", "corrupt", "subs_log_probs", "loss",
           "sample", "nll_bound", "nll_bound_quadrature", "nats_to_bits"]
