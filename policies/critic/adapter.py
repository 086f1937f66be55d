"""The critic's only contact points with the diffusion policy: its denoiser, conditioning and DDIM plan.

:class:`PolicyDenoiser` wraps a ``policies.diffusion.policy.DiffusionPolicy`` (or any network with the same
``condition`` / ``unet`` layout) and exposes exactly what the critic's samplers need: observation features,
the global condition, one counted denoiser call, the DDIM step plan and the map from a normalized chunk
to env actions. An API change in the policy is one edit here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from simdiff.processes import gaussian as G

Generators = torch.Generator | Sequence[torch.Generator] | None


@dataclass
class EvalCounter:
    """Network evaluations, counted per batch row (one row through the denoiser = one denoiser evaluation)."""

    denoiser: int = 0
    critic: int = 0
    chunks: int = 0     #: action chunks produced

    def as_dict(self, critic_cost: float = 1.0) -> dict[str, float]:
        per = max(self.chunks, 1)
        equiv = self.denoiser + critic_cost * self.critic
        return {"denoiser_evals": self.denoiser, "critic_evals": self.critic, "chunks": self.chunks,
                "denoiser_evals_per_chunk": self.denoiser / per, "critic_evals_per_chunk": self.critic / per,
                "equiv_denoiser_evals_per_chunk": equiv / per, "critic_cost": critic_cost}


def row_randn(generators: Generators, batch: int, shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
    """Gaussian noise ``(batch, *shape)``; with one generator per row, row ``i`` draws from ``generators[i]``
    only, so a row's noise does not depend on which other rows share the batch."""
    if generators is None or isinstance(generators, torch.Generator):
        return torch.randn((batch, *shape), generator=generators).to(dtype)
    gens = list(generators)
    if len(gens) != batch:
        raise ValueError(f"generators: expected one per row ({batch}), received {len(gens)}")
    return torch.stack([torch.randn(shape, generator=g) for g in gens]).to(dtype)


class PolicyDenoiser:
    """A diffusion policy's denoiser as the critic's samplers use it.

    ``net`` defaults to the policy's inference network (EMA when present); GRPO passes the network it
    fine-tunes. ``inference_steps`` defaults to the policy's. Every :meth:`predict` adds its batch size to
    ``counter.denoiser``.
    """

    def __init__(self, policy: Any, inference_steps: int | None = None, counter: EvalCounter | None = None,
                 net: torch.nn.Module | None = None):
        for name in ("obs_features", "action_normalizer", "schedule", "cfg", "horizons", "net"):
            if not hasattr(policy, name):
                raise TypeError(f"policy: expected a DiffusionPolicy (missing .{name}), received {type(policy).__name__}")
        self.policy = policy
        self.net = net if net is not None else policy.net
        self.schedule = policy.schedule
        self.prediction = policy.cfg.noise.prediction
        self.clip = policy.cfg.noise.clip
        self.steps = int(inference_steps or policy.inference_steps)
        if not 1 <= self.steps <= self.schedule.num_steps:
            raise ValueError(f"inference_steps: expected 1..{self.schedule.num_steps}, received {self.steps}")
        self.counter = counter if counter is not None else EvalCounter()
        To, Tp, Ta = policy.horizons
        self.obs_horizon, self.pred_horizon, self.action_horizon = To, Tp, Ta
        self.action_dim = int(policy.action_dim)
        self.obs_dim = int(policy.obs_dim)

    @property
    def chunk_shape(self) -> tuple[int, int]:
        return (self.pred_horizon, self.action_dim)

    @property
    def num_train_steps(self) -> int:
        return self.schedule.num_steps

    @property
    def dtype(self) -> torch.dtype:
        return next(self.net.parameters()).dtype

    def plan(self) -> list[tuple[int, int]]:
        """``(t, t_prev)`` per DDIM step, noisiest first; ``t_prev = -1`` is clean data."""
        ts = G.ddim_timesteps(self.schedule.num_steps, self.steps).tolist()
        return [(t, ts[i + 1] if i + 1 < len(ts) else -1) for i, t in enumerate(ts)]

    def obs_features(self, obs_history: Tensor | np.ndarray) -> Tensor:
        """``(B, To, Do)`` raw observations -> ``(B, F)`` (the policy's normalization)."""
        return self.policy.obs_features(obs_history)

    def condition(self, obs_feat: Tensor, task: Tensor | None = None) -> Tensor:
        # the policy's default task where none is given (a source-token policy acts with its expert token)
        ids = getattr(self.policy, "task_ids", None)
        return self.net.condition(obs_feat, task if ids is None else ids(task, obs_feat.shape[0]))

    def predict(self, x: Tensor, t: int | Tensor, cond: Tensor) -> Tensor:
        """Network output ``(B, Tp, Da)`` for ``x (B, Tp, Da)`` at step ``t`` (int or ``(B,)``)."""
        b = x.shape[0]
        tt = torch.full((b,), int(t), dtype=torch.long) if isinstance(t, int) else t
        self.counter.denoiser += b
        return self.net.unet(x, tt, cond)

    def step_mean_std(self, out: Tensor, x: Tensor, t: int, t_prev: int, eta: float) -> tuple[Tensor, Tensor]:
        """Mean ``(B, Tp, Da)`` and std ``(B, 1, 1)`` of the DDIM step ``x_t -> x_{t_prev}``."""
        return G.ddim_step_mean_std(out, x, t, t_prev, self.schedule, self.prediction, eta, self.clip)

    def step_std(self, t: int, t_prev: int, eta: float) -> float:
        """The (data-independent) std of the DDIM step ``t -> t_prev`` with ``eta``."""
        z = torch.zeros((1, *self.chunk_shape), dtype=self.dtype)
        return float(self.step_mean_std(z, z, t, t_prev, eta)[1].max())

    def to_actions(self, x0: Tensor, full: bool = False) -> Tensor:
        """Normalized chunk ``(B, Tp, Da)`` -> env actions ``(B, Ta, Da)`` (``(B, Tp, Da)`` if ``full``)."""
        a = self.policy.action_normalizer.unnormalize(x0)
        To, Ta = self.obs_horizon, self.action_horizon
        return a if full else a[:, To - 1:To - 1 + Ta]


def sample_chunks(den: PolicyDenoiser, cond: Tensor, eta: float, generators: Generators) -> Tensor:
    """Plain DDIM sampling (Song et al. eq. 12) of normalized chunks ``(B, Tp, Da)`` under ``torch.no_grad``.

    Denoiser calls are counted by ``den``; chunks are counted by the caller (a best-of-k keeps one of k).
    """
    b = cond.shape[0]
    with torch.no_grad():
        x = row_randn(generators, b, den.chunk_shape, den.dtype)
        for t, t_prev in den.plan():
            out = den.predict(x, t, cond)                                     # 1. predict
            mean, std = den.step_mean_std(out, x, t, t_prev, eta)             # 2. step
            x = mean + std * row_randn(generators, b, den.chunk_shape, den.dtype) if eta > 0 else mean
    return x


__all__ = ["EvalCounter", "PolicyDenoiser", "row_randn", "sample_chunks"]
