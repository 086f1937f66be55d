"""Sampling a decentralized diffusion model: routed mixtures of expert predictions.

If the data are a mixture ``p(x0) = sum_k pi_k p_k(x0)`` and expert ``k`` is the exact denoiser of cluster
``k``, the exact denoiser of the mixture at ``(x_t, t)`` is the posterior-weighted sum (DDM, McAllister et al.
2025; Paris 2.0)::

    eps(x_t, t) = sum_k p(k | x_t, t) eps_k(x_t, t)

and the same holds for ``x0`` and ``v`` predictions: for a fixed ``(x_t, t)`` each is an affine function of the
score with weights summing to one. The router's softmax estimates ``p(k | x_t, t)``. Routing modes:

* ``full``: every expert, weighted by the router (exact with a Bayes-optimal router);
* ``top1``: the router's argmax only (DDM's usual choice: one expert evaluation per step);
* ``top2``: the two most probable experts, their weights renormalised to sum to one (Paris).

:func:`mixture_fn` turns expert functions and a router into one denoiser with the signature the samplers
expect, evaluating each expert only on the rows routed to it. It serves every process whose network predicts
epsilon or x0: the Gaussian process (``gaussian.ddim_sample`` / ``ddpm_sample``), SKILD's spectral process
(``spectral.sample``; experts predict pixel-space epsilon), and the diffusion policy (:class:`MixturePolicy`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from simdiff.pipelines.ddm.config import ROUTINGS

ExpertFn = Callable[..., Tensor]      # (x (B, ...), t (B,), *cond (B, ...)) -> prediction like x
RouterFn = Callable[..., Tensor]      # (x (B, ...), t (B,), *cond (B, ...)) -> probabilities (B, K)


def check_routing(routing: str) -> str:
    if routing not in ROUTINGS:
        raise ValueError(f"routing: expected one of {', '.join(ROUTINGS)}, received {routing!r}")
    return routing


def routing_weights(probs: Tensor, routing: str) -> Tensor:
    """Expert weights ``(B, K)`` from router probabilities ``(B, K)`` (rows sum to one).

    ``full``: the probabilities; ``top1``: one-hot at the argmax (ties: lowest index); ``top2``: the two largest
    probabilities renormalised (``K = 1``: the single expert).
    """
    check_routing(routing)
    if probs.ndim != 2 or probs.shape[1] < 1:
        raise ValueError(f"probs: expected (B, K) router probabilities, received {tuple(probs.shape)}")
    if bool((probs < 0).any()) or not bool(torch.isfinite(probs).all()):
        raise ValueError("probs: expected finite, non-negative router probabilities")
    if routing == "full":
        return probs / probs.sum(dim=1, keepdim=True)
    k = 1 if routing == "top1" else min(2, probs.shape[1])
    # stable sort: equal probabilities go to the lower expert index, so routing is deterministic
    order = torch.sort(probs, dim=1, descending=True, stable=True).indices[:, :k]
    if k == 1:
        return torch.zeros_like(probs).scatter_(1, order, 1.0)
    w = torch.zeros_like(probs).scatter_(1, order, probs.gather(1, order))
    total = w.sum(dim=1, keepdim=True)
    # both chosen probabilities underflowed to 0: share the weight equally between them
    even = torch.zeros_like(probs).scatter_(1, order, 1.0 / k)
    return torch.where(total > 0, w / total.clamp(min=torch.finfo(probs.dtype).tiny), even)


def combine(preds: Sequence[Tensor], weights: Tensor) -> Tensor:
    """``sum_k weights[:, k] * preds[k]`` for ``preds[k] (B, ...)`` and ``weights (B, K)``, in float64."""
    if len(preds) != weights.shape[1]:
        raise ValueError(f"preds: expected {weights.shape[1]} expert predictions, received {len(preds)}")
    out = torch.zeros(preds[0].shape, dtype=torch.float64, device=preds[0].device)
    for k, p in enumerate(preds):
        if p.shape != preds[0].shape:
            raise ValueError(f"preds[{k}]: expected shape {tuple(preds[0].shape)}, received {tuple(p.shape)}")
        out += weights[:, k].to(torch.float64).reshape((-1,) + (1,) * (p.ndim - 1)) * p.to(torch.float64)
    return out


@dataclass
class MixtureStats:
    """Bookkeeping of a routed sampler: expert evaluations (rows) and summed routing weights per expert."""

    num_experts: int
    calls: int = 0                           #: denoiser calls (sampler steps x batches)
    rows: int = 0                            #: rows the denoiser was called on
    evals: list[int] = field(default_factory=list)       #: rows each expert was evaluated on
    weight: list[float] = field(default_factory=list)    #: summed routing weight of each expert

    def __post_init__(self) -> None:
        self.evals = self.evals or [0] * self.num_experts
        self.weight = self.weight or [0.0] * self.num_experts

    def summary(self) -> dict:
        total = max(self.rows, 1)
        return {"calls": self.calls, "rows": self.rows, "expert_evals_per_row": sum(self.evals) / total,
                "evals": list(self.evals), "mean_weight": [w / total for w in self.weight]}


def mixture_fn(experts: Sequence[ExpertFn], router: RouterFn, routing: str,
               stats: MixtureStats | None = None) -> ExpertFn:
    """One denoiser ``fn(x, t, *cond)`` from ``experts[k](x, t, *cond)`` and ``router(x, t, *cond) -> (B, K)``.

    Each expert runs only on the rows whose routing weight for it is positive (``full``: all rows; ``top1``:
    one expert per row). The result has ``x``'s dtype; the weighted sum is formed in float64.
    """
    check_routing(routing)
    if not experts:
        raise ValueError("experts: expected at least one expert function, received none")

    def fn(x: Tensor, t: Tensor, *cond: Tensor) -> Tensor:
        probs = router(x, t, *cond)
        if probs.shape != (x.shape[0], len(experts)):
            raise ValueError(f"router: expected probabilities ({x.shape[0]}, {len(experts)}), received "
                             f"{tuple(probs.shape)}")
        w = routing_weights(probs.to(torch.float64), routing)
        out = torch.zeros(x.shape, dtype=torch.float64, device=x.device)
        for k, expert in enumerate(experts):
            rows = torch.nonzero(w[:, k] > 0).flatten()
            if rows.numel() == 0:
                continue
            if rows.numel() == x.shape[0]:
                pred = expert(x, t, *cond)
            else:
                pred = expert(x[rows], t[rows], *(c[rows] for c in cond))
            if pred.shape != (rows.numel(),) + tuple(x.shape[1:]):
                raise ValueError(f"expert {k}: expected a prediction of shape {(rows.numel(),) + tuple(x.shape[1:])}, "
                                 f"received {tuple(pred.shape)}")
            wk = w[rows, k].reshape((-1,) + (1,) * (x.ndim - 1))
            out[rows] += wk * pred.to(torch.float64)
            if stats is not None:
                stats.evals[k] += int(rows.numel())
        if stats is not None:
            stats.calls += 1
            stats.rows += int(x.shape[0])
            for k in range(len(experts)):
                stats.weight[k] += float(w[:, k].sum())
        return out.to(x.dtype)
    return fn


# ------------------------------------------------------------------------------------------ diffusion policy
class MixturePolicy:
    """K diffusion-policy experts (shared normalizers) and a chunk router, sampled as one policy.

    Exposes what the batched evaluation runner needs (``horizons``, ``obs_dim``, ``action_dim``,
    ``predict_action``, ``batch_policy``), so ``simdiff.pipelines.evaluate.evaluate`` scores it like any
    policy. Sampling follows the experts' sampler settings (DDIM or DDPM) with the routed mixture of their
    predictions at every step.
    """

    def __init__(self, experts: Sequence, router: torch.nn.Module, routing: str) -> None:
        check_routing(routing)
        if not experts:
            raise ValueError("experts: expected at least one DiffusionPolicy, received none")
        ref = experts[0]
        for k, e in enumerate(experts[1:], start=1):
            same = (e.obs_dim == ref.obs_dim and e.action_dim == ref.action_dim and e.horizons == ref.horizons
                    and e.obs_normalizer.to_dict() == ref.obs_normalizer.to_dict()
                    and e.action_normalizer.to_dict() == ref.action_normalizer.to_dict()
                    and torch.equal(e.schedule.alpha_bars, ref.schedule.alpha_bars)
                    and e.cfg.noise.prediction == ref.cfg.noise.prediction)
            if not same:
                raise ValueError(f"experts: expert {k} differs from expert 0 in its dimensions, horizons, "
                                 "normalizers, schedule or prediction; a mixture needs them shared")
        self.experts = list(experts)
        self.router = router.eval()
        self.routing = routing
        self.stats = MixtureStats(len(experts))
        self.source = f"ddm[{routing}]"

    @property
    def horizons(self) -> tuple[int, int, int]:
        return self.experts[0].horizons

    @property
    def obs_dim(self) -> int:
        return self.experts[0].obs_dim

    @property
    def action_dim(self) -> int:
        return self.experts[0].action_dim

    def _denoiser(self) -> ExpertFn:
        n = self.experts[0].schedule.num_steps
        nets = [e.net.eval() for e in self.experts]

        def expert_fn(net):
            return lambda x, t, feat: net(x, t, feat)

        def router_fn(x: Tensor, t: Tensor, feat: Tensor) -> Tensor:
            from simdiff.pipelines.ddm.router import router_probs

            return router_probs(self.router, x.float(), gaussian_time(t, n), feat.float())
        return mixture_fn([expert_fn(net) for net in nets], router_fn, self.routing, self.stats)

    @torch.inference_mode()
    def predict_action(self, obs_history: Tensor | np.ndarray, generator=None, task=None,
                       full: bool = False) -> Tensor:
        """``(B, To, Do)`` raw observations -> ``(B, Ta, Da)`` actions (``(B, Tp, Da)`` if ``full``)."""
        from policies.diffusion.policy import ddim_plan, ddim_update, draw_noise
        from simdiff.processes import gaussian as G

        if task is not None:
            raise ValueError("task: the decentralized policy is not task-conditioned, received task ids")
        ref = self.experts[0]
        feat = ref.obs_features(obs_history)
        b = feat.shape[0]
        To, Tp, Ta = self.horizons
        x = draw_noise((b, Tp, self.action_dim), generator, feat.dtype)
        fn = self._denoiser()
        noise = ref.cfg.noise
        if noise.sampler == "ddim":
            for coef in ddim_plan(ref.schedule, ref.inference_steps):
                t = torch.full((b,), coef[0], dtype=torch.long)
                x = ddim_update(fn(x, t, feat), x, coef, noise.prediction, noise.clip)   # 1. mix, 2. step
        else:
            for step in range(ref.schedule.num_steps - 1, -1, -1):
                t = torch.full((b,), step, dtype=torch.long)
                mean, std = G.ddpm_step_mean_std(fn(x, t, feat), x, t, ref.schedule, noise.prediction, noise.clip)
                x = mean + std * draw_noise(tuple(x.shape), generator, x.dtype)
        actions = ref.action_normalizer.unnormalize(x)
        return actions if full else actions[:, To - 1:To - 1 + Ta]

    def batch_policy(self, task: int | None = None):
        from policies.diffusion.policy import DiffusionBatchPolicy

        return DiffusionBatchPolicy(self, task)


def gaussian_time(t: Tensor, num_steps: int) -> Tensor:
    """Continuous time ``(t + 1) / N`` in ``(0, 1]`` of discrete Gaussian steps ``t = 0 .. N-1`` (router input)."""
    return (t.to(torch.float32) + 1.0) / num_steps


__all__ = ["check_routing", "routing_weights", "combine", "MixtureStats", "mixture_fn", "MixturePolicy",
           "gaussian_time", "ExpertFn", "RouterFn"]
