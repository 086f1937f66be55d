"""The diffusion policy's network: a conditional 1D U-Net plus an optional task-id embedding.

Architecture only. The global condition is ``[observation features, task embedding]`` where the observation
features (flattened normalized state history + domain context) are built by the policy.
"""

from __future__ import annotations

import torch
from torch import nn

from policies.diffusion.config import ModelConfig
from simdiff.nets.unet1d import ConditionalUnet1D


class DiffusionPolicyNet(nn.Module):
    """``(x (B, Tp, Da), t (B,), obs_feat (B, F), task (B,) | None) -> (B, Tp, Da)``."""

    def __init__(self, cfg: ModelConfig, action_dim: int, obs_feat_dim: int):
        super().__init__()
        self.obs_feat_dim = obs_feat_dim
        self.num_tasks = cfg.num_tasks
        self.task_embed = nn.Embedding(cfg.num_tasks, cfg.task_embed_dim) if cfg.num_tasks else None
        cond_dim = obs_feat_dim + (cfg.task_embed_dim if cfg.num_tasks else 0)
        self.unet = ConditionalUnet1D(action_dim, cond_dim, cfg.resolved_down_dims(),
                                      cfg.resolved_step_embed_dim(), cfg.kernel_size, cfg.n_groups)

    def condition(self, obs_feat: torch.Tensor, task: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, F)`` observation features (+ task ids ``(B,)``) -> global condition ``(B, C)``."""
        if obs_feat.ndim != 2 or obs_feat.shape[1] != self.obs_feat_dim:
            raise ValueError(f"obs_feat: expected shape (B, {self.obs_feat_dim}), received {tuple(obs_feat.shape)}")
        if self.task_embed is None:
            if task is not None:
                raise ValueError("task: this network has no task embedding (model.num_tasks = 0), received task ids")
            return obs_feat
        if task is None or task.shape != (obs_feat.shape[0],):
            got = None if task is None else tuple(task.shape)
            raise ValueError(f"task: expected integer ids of shape ({obs_feat.shape[0]},), received {got}")
        if bool((task < 0).any() or (task >= self.num_tasks).any()):
            raise ValueError(f"task: expected ids in [0, {self.num_tasks - 1}], received {task.tolist()[:8]}")
        return torch.cat([obs_feat, self.task_embed(task).to(obs_feat.dtype)], dim=-1)

    def forward(self, x: torch.Tensor, t: torch.Tensor, obs_feat: torch.Tensor,
                task: torch.Tensor | None = None) -> torch.Tensor:
        return self.unet(x, t, self.condition(obs_feat, task))


__all__ = ["DiffusionPolicyNet"]
