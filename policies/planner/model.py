"""The planner network: a looped transformer over plan tokens with an observation/context prefix.

Architecture only. The prefix has one token per observation-history step (the normalized state vector) and,
when the domain context is used, one token for it; both are zero-padded to a common width ``cond_dim`` and
told apart by learned prefix-position embeddings. The network does not see the diffusion time ``t``
(SUBS-parametrized masked diffusion does not need it, as MDLM found), which is what makes reusing its output
across sampler steps exact.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from policies.planner.config import NetConfig
from simdiff.nets.looped_transformer import LoopedTransformer


class PlannerModel(nn.Module):
    """``(z (B, H) ids in [0, V], state_hist (B, To, Ds), context (B, Dc) | None, loops) -> (B, H, V + 1)``.

    ``V = vocab_size`` data tokens; id ``V`` is [MASK]; logits cover ``V + 1`` classes (mask last, removed by
    the SUBS parametrization in :mod:`simdiff.processes.masked`).
    """

    time_conditioned = False

    def __init__(self, net: NetConfig, vocab_size: int, plan_tokens: int, obs_horizon: int, state_dim: int,
                 context_dim: int = 0, default_loops: int = 1):
        super().__init__()
        self.vocab_size, self.plan_tokens = vocab_size, plan_tokens
        self.obs_horizon, self.state_dim, self.context_dim = obs_horizon, state_dim, context_dim
        self.mask_id = vocab_size
        self.cond_dim = max(state_dim, context_dim)
        self.n_cond = obs_horizon + (1 if context_dim else 0)
        self.net = LoopedTransformer(vocab_size=vocab_size + 1, seq_len=plan_tokens, d_model=net.d_model,
                                     n_heads=net.n_heads, n_prelude=net.n_prelude, n_loop=net.n_loop,
                                     n_coda=net.n_coda, mlp_ratio=net.mlp_ratio, cond_dim=self.cond_dim,
                                     max_cond=self.n_cond, default_loops=default_loops, dropout=net.dropout)

    def prefix(self, state_hist: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        """(B, To, Ds) and (B, Dc) | None -> (B, n_cond, cond_dim) prefix vectors."""
        B = state_hist.shape[0]
        if state_hist.shape[1:] != (self.obs_horizon, self.state_dim):
            raise ValueError(f"state_hist: expected (B, {self.obs_horizon}, {self.state_dim}), received "
                             f"{tuple(state_hist.shape)}")
        parts = [F.pad(state_hist, (0, self.cond_dim - self.state_dim))]
        if self.context_dim:
            if context is None or context.shape != (B, self.context_dim):
                got = None if context is None else tuple(context.shape)
                raise ValueError(f"context: expected ({B}, {self.context_dim}), received {got}")
            parts.append(F.pad(context, (0, self.cond_dim - self.context_dim))[:, None])
        return torch.cat(parts, dim=1)

    def forward(self, z: torch.Tensor, state_hist: torch.Tensor, context: torch.Tensor | None = None,
                loops: int | None = None) -> torch.Tensor:
        return self.net(z, self.prefix(state_hist.float(), None if context is None else context.float()), loops)

    def flops(self, loops: int | None = None, batch: int = 1) -> int:
        """Analytic matmul FLOPs of one forward pass (see :meth:`LoopedTransformer.flops`)."""
        return self.net.flops(loops=loops, n_cond=self.n_cond, batch=batch)

    def num_parameters(self) -> int:
        return self.net.num_parameters()


__all__ = ["PlannerModel"]
