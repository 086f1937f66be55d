"""The critic as an object: network + the base policy's observation normalization + checkpoints.

``Critic.from_policy(policy, cfg)`` builds a fresh critic from a trained diffusion policy;
``Critic.load(dir)`` rebuilds a saved one without the policy's weights (only its description: config,
normalizers, observation layout). Checkpoints are safetensors + JSON (``simdiff.checkpoint``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from policies.critic.adapter import EvalCounter
from policies.critic.config import CriticModelConfig
from policies.critic.model import CriticNet, critic_from_policy_net
from simdiff.errors import CheckpointError

CRITIC_KIND = "simdiff.drm_critic"
CRITIC_FORMAT = 1
CRITIC_DIR = "critic"


def _policy_shell(pmeta: dict) -> Any:
    """A DiffusionPolicy with random weights built from a policy description (for its normalization)."""
    from policies.diffusion.config import load_policy_config
    from policies.diffusion.normalizer import Normalizer
    from policies.diffusion.policy import DiffusionPolicy

    cfg = load_policy_config(pmeta["config"])
    return DiffusionPolicy(cfg, int(pmeta["obs_dim"]), int(pmeta["action_dim"]),
                           {k: tuple(v) for k, v in pmeta["obs_layout"].items()},
                           Normalizer.from_dict(pmeta["normalizers"]["obs"]),
                           Normalizer.from_dict(pmeta["normalizers"]["action"]), pmeta.get("dataset"))


class Critic:
    """Scores noisy action chunks: ``score(x_t (B, Tp, Da), t (B,), cond (B, C)) -> (B,)``."""

    def __init__(self, net: CriticNet, cfg: CriticModelConfig, policy: Any, policy_meta: dict,
                 counter: EvalCounter | None = None):
        self.net = net
        self.cfg = cfg
        self.policy = policy            # for obs_features (normalization) only
        self.policy_meta = policy_meta
        self.num_train_steps = int(policy.schedule.num_steps)
        self.counter = counter if counter is not None else EvalCounter()
        self.metrics: dict[str, Any] = {}
        self.source: str | None = None

    @classmethod
    def from_policy(cls, policy: Any, cfg: CriticModelConfig) -> Critic:
        net = critic_from_policy_net(policy.net, cfg, int(policy.action_dim))
        return cls(net, cfg, policy, policy.meta())

    # -- scoring -------------------------------------------------------------------------------------------
    def obs_features(self, obs_history: Tensor | np.ndarray) -> Tensor:
        """``(B, To, Do)`` raw observations -> ``(B, F)``, normalized as the base policy does."""
        return self.policy.obs_features(obs_history).to(next(self.net.parameters()).dtype)

    def condition(self, obs_feat: Tensor, task: Tensor | None = None) -> Tensor:
        return self.net.condition(obs_feat, task)

    def score(self, x_t: Tensor, t: Tensor | int, cond: Tensor) -> Tensor:
        """Scores ``(B,)`` of noisy normalized chunks ``x_t`` at step ``t`` (``-1`` means clean: scored at 0)."""
        b = x_t.shape[0]
        if isinstance(t, int):
            t = torch.full((b,), max(t, 0), dtype=torch.long)
        if cond.shape[0] != b:
            raise ValueError(f"cond: expected {b} rows (one per chunk), received {cond.shape[0]}")
        self.counter.critic += b
        return self.net.score_cond(x_t, t.clamp(min=0), cond)

    def score_obs(self, x_t: Tensor, t: Tensor | int, obs_history: Tensor | np.ndarray,
                  task: Tensor | None = None) -> Tensor:
        return self.score(x_t, t, self.condition(self.obs_features(obs_history), task))

    # -- checkpoints ---------------------------------------------------------------------------------------
    def save(self, path_dir: str | os.PathLike, metrics: dict | None = None) -> Path:
        from simdiff.checkpoint import module_tensors, save_checkpoint
        from simdiff.config import to_dict

        meta = {"kind": CRITIC_KIND, "critic_format": CRITIC_FORMAT, "model": to_dict(self.cfg),
                "policy": {k: v for k, v in self.policy_meta.items() if k != "metrics"},
                "policy_source": getattr(self.policy, "source", None), "metrics": dict(metrics or self.metrics)}
        return save_checkpoint(path_dir, module_tensors("critic", self.net), meta)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Critic:
        """Load from a critic checkpoint directory or a run directory holding ``critic/``."""
        from simdiff.checkpoint import load_checkpoint, load_module_tensors, resolve_checkpoint_dir
        from simdiff.config import load_config

        path = Path(path)
        src = resolve_checkpoint_dir(path / CRITIC_DIR) or resolve_checkpoint_dir(path)
        if src is None:
            raise CheckpointError(f"{path}: no critic checkpoint (expected {path / CRITIC_DIR}/meta.json or "
                                  f"{path}/meta.json)")
        tensors, meta = load_checkpoint(src)
        if meta.get("kind") != CRITIC_KIND or meta.get("critic_format") != CRITIC_FORMAT:
            raise CheckpointError(f"{src}: not a critic checkpoint of format {CRITIC_FORMAT} "
                                  f"(kind={meta.get('kind')!r}, format={meta.get('critic_format')!r})")
        try:
            cfg = load_config(CriticModelConfig, meta["model"])
            shell = _policy_shell(meta["policy"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{src}: critic metadata is incomplete or inconsistent ({exc})") from exc
        critic = cls(critic_from_policy_net(shell.net, cfg, int(shell.action_dim)), cfg, shell, meta["policy"])
        load_module_tensors(critic.net, "critic", tensors)
        critic.net.eval()
        critic.metrics = dict(meta.get("metrics") or {})
        critic.source = str(src)
        return critic


__all__ = ["Critic", "CRITIC_KIND", "CRITIC_DIR"]
