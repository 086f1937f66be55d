"""Several critics of one base policy read as one: the mean of their Bradley-Terry scores.

A single critic ranks two samples of the base policy only about two times in three correctly, and much of what it
gets wrong is its own idiosyncratic error (an accident of its training noise and batch order). Averaging the
scores of critics trained with different seeds or on different preference data cancels part of that error and
keeps what they agree on. Bradley-Terry scores are log-odds up to one additive constant per critic, so their mean
ranks candidates as a sum of log-odds would; the constants only shift every score alike.

:class:`EnsembleNet` has :class:`~policies.critic.model.CriticNet`'s interface (``condition``, ``score_cond``,
``forward``, ``obs_feat_dim``, ``action_dim``, ``task_embed``), so a :class:`~policies.critic.scorer.Critic`
built around it works with every sampler, GRPO, the accuracy measurement and the cost count (its cost is the
sum of its members'). It is assembled from saved critics (:func:`load_critics`), never saved as one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import Tensor, nn

from policies.critic.model import CriticNet, CriticNetView
from policies.critic.scorer import Critic


class EnsembleNet(CriticNetView):
    """``(x_t (B, Tp, Da), t (B,), obs_feat (B, F), task (B,) | None) -> mean member score (B,)``."""

    def __init__(self, members: list[CriticNet]):
        if len(members) < 2:
            raise ValueError(f"members: expected at least 2 critic networks, received {len(members)}")
        super().__init__(members[0])
        first = members[0]
        for i, m in enumerate(members[1:], start=1):
            got = (m.obs_feat_dim, m.action_dim, m.task_embed is None)
            want = (first.obs_feat_dim, first.action_dim, first.task_embed is None)
            if got != want:
                raise ValueError(f"members[{i}]: expected (obs_feat_dim, action_dim, no task embedding) = {want} "
                                 f"as members[0], received {got}")
        self.members = nn.ModuleList(members)
        with torch.no_grad():   # each member's condition width, to split the concatenated condition
            dtype = next(first.parameters()).dtype
            probe = None if first.task_embed is None else torch.zeros(1, dtype=torch.long)
            self.widths = [int(m.condition(torch.zeros(1, m.obs_feat_dim, dtype=dtype), probe).shape[1])
                           for m in members]

    def condition(self, obs_feat: Tensor, task: Tensor | None = None) -> Tensor:
        """Every member's global condition, concatenated ``(B, sum C_m)``."""
        return torch.cat([m.condition(obs_feat, task) for m in self.members], dim=-1)

    def member_scores(self, x: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        """Each member's scores ``(M, B)`` given the concatenated condition of :meth:`condition`."""
        if cond.ndim != 2 or cond.shape[1] != sum(self.widths):
            raise ValueError(f"cond: expected shape (B, {sum(self.widths)}) (the members' conditions), received "
                             f"{tuple(cond.shape)}")
        parts = torch.split(cond, self.widths, dim=1)
        return torch.stack([m.score_cond(x, t, c) for m, c in zip(self.members, parts)])

    def score_cond(self, x: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        return self.member_scores(x, t, cond).mean(dim=0)


def ensemble_critic(critics: list[Critic]) -> Critic:
    """One :class:`Critic` whose score is the mean of ``critics``' (all made from the same base policy)."""
    if len(critics) == 1:
        return critics[0]
    for i, c in enumerate(critics[1:], start=1):
        if not same_policy(c, critics[0]):
            raise ValueError(f"critics[{i}] ({c.source}): expected a critic of the same base policy as "
                             f"{critics[0].source} (same config, normalizers and dataset), received another")
    first = critics[0]
    ens = Critic(EnsembleNet([c.net for c in critics]).eval(), first.cfg, first.policy, first.policy_meta)
    ens.metrics = {"members": [c.source for c in critics]}
    ens.source = ",".join(str(c.source) for c in critics)
    return ens


def load_critics(spec: str | os.PathLike | list) -> Critic:
    """A critic from one checkpoint, or the mean-score ensemble of several: a list of paths, or one string of
    comma-separated paths (``"critic_a,critic_b"``)."""
    paths = [p for p in (spec if isinstance(spec, list) else str(spec).split(",")) if str(p).strip()]
    if not paths:
        raise ValueError(f"critic: expected one or more checkpoint paths, received {spec!r}")
    return ensemble_critic([Critic.load(Path(str(p).strip())) for p in paths])


def same_policy(a: Critic, b: Critic) -> bool:
    """Whether two critics were made from the same base policy (its config, normalizers and dataset)."""
    def identity(c: Critic) -> str:   # as JSON, so a saved critic (lists) and a fresh one (tuples) compare
        return json.dumps({k: c.policy_meta.get(k) for k in ("config", "normalizers", "dataset")}, sort_keys=True,
                          default=str)

    return identity(a) == identity(b)


__all__ = ["EnsembleNet", "ensemble_critic", "load_critics", "same_policy"]
