"""A critic made exactly invariant to a mirror symmetry of the task, by averaging over the reflection.

Where a world maps onto itself under a reflection (``env.unwrapped.mirror``: per-entry signs of observation
and action; Push-v0 reflects y -> -y), the true value of an action chunk at a state equals that of the
reflected chunk at the reflected state. A learned critic need not respect that: any part of its score that
changes sign under the reflection is an error, and a systematic one (e.g. "pushing towards +y is better",
whatever the state). Selection among a handful of candidates barely notices such a bias; gradient ascent
on the critic (step-wise GRPO) follows it at every state, all the way. Averaging the score of a sample and of
its reflection removes exactly that part::

    s_sym(x_t, t, o) = (s(x_t, t, o) + s(M_a x_t, t, M_o o)) / 2

Both maps are applied where the critic reads its inputs: the policy's normalized observation features and
the normalized (noisy) chunk. Normalization is affine, so each reflection is an affine map there too,
``f -> A f + b`` with diagonal ``A`` of signs; it is derived numerically from the policy's own feature and
action maps and verified on random inputs (:func:`affine_sign_map`). For a noisy chunk
``x_t = sqrt(ab_t) x_0 + sqrt(1 - ab_t) eps`` the offset scales with ``sqrt(ab_t)``, since only the clean part
carries it. The cost is two critic calls per score.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from policies.critic.model import CriticNetView
from policies.critic.scorer import Critic


def affine_sign_map(fn: Callable[[np.ndarray], np.ndarray], sign: np.ndarray, shape: tuple[int, ...],
                    seed: int = 0, tol: float = 1e-4) -> tuple[np.ndarray, np.ndarray]:
    """``(A, b)`` with ``fn(sign * v) == A * fn(v) + b`` for every ``v`` of ``shape`` (``A`` entries +-1), found
    from two random inputs and checked on a third; raises ValueError when ``fn`` is not such a map."""
    rng = np.random.default_rng(seed)
    v1, v2, v3 = (rng.normal(size=shape).astype(np.float32) for _ in range(3))
    f1, f2, f3 = (np.asarray(fn(v), dtype=np.float64) for v in (v1, v2, v3))
    m1, m2, m3 = (np.asarray(fn(sign * v), dtype=np.float64) for v in (v1, v2, v3))
    d, dm = f1 - f2, m1 - m2
    const = (np.abs(d) < 1e-8) & (np.abs(dm) < 1e-8)        # a feature that ignores its input stays put
    if np.any((np.abs(d) < 1e-8) & ~const):
        raise ValueError("affine_sign_map: a feature ignores its input but not the reflected one")
    a = np.where(const, 1.0, np.sign(dm / np.where(const, 1.0, d)))
    b = m1 - a * f1
    err = float(np.abs(m3 - (a * f3 + b)).max())
    if not np.allclose(np.abs(dm), np.abs(d), rtol=tol, atol=tol) or err > tol * max(1.0, float(np.abs(m3).max())):
        raise ValueError(f"affine_sign_map: the reflection is not a sign flip plus offset of the features "
                         f"(max error {err:.2e}); the policy's normalization is not affine per entry")
    return a.astype(np.float32), b.astype(np.float32)


class MirrorNet(CriticNetView):
    """A critic network averaged over a reflection: ``CriticNet``'s interface (``condition``, ``score_cond``,
    ``forward``, ``obs_feat_dim``, ``action_dim``, ``task_embed``)."""

    def __init__(self, net: nn.Module, feat_sign: Tensor, feat_offset: Tensor, act_sign: Tensor,
                 act_offset: Tensor, alpha_bars: Tensor):
        super().__init__(net)
        self.net = net
        for name, v in (("feat_sign", feat_sign), ("feat_offset", feat_offset), ("act_sign", act_sign),
                        ("act_offset", act_offset), ("alpha_bars", alpha_bars)):
            self.register_buffer(name, v.clone(), persistent=False)

    def condition(self, obs_feat: Tensor, task: Tensor | None = None) -> Tensor:
        """The condition of the state and of its reflection, side by side ``(B, 2 C)``."""
        mirrored = obs_feat * self.feat_sign.to(obs_feat.dtype) + self.feat_offset.to(obs_feat.dtype)
        return torch.cat([self.net.condition(obs_feat, task), self.net.condition(mirrored, task)], dim=-1)

    def mirror_chunk(self, x: Tensor, t: Tensor) -> Tensor:
        """The reflection of noisy normalized chunks ``x (B, Tp, Da)`` at steps ``t (B,)``."""
        ab = self.alpha_bars.to(x.dtype)[t.clamp(min=0)].view(-1, 1, 1)
        return x * self.act_sign.to(x.dtype) + ab.sqrt() * self.act_offset.to(x.dtype)

    def score_cond(self, x: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        if cond.ndim != 2 or cond.shape[1] % 2:
            raise ValueError(f"cond: expected (B, 2 C) from MirrorNet.condition, received {tuple(cond.shape)}")
        c, cm = cond.chunk(2, dim=1)
        return 0.5 * (self.net.score_cond(x, t, c) + self.net.score_cond(self.mirror_chunk(x, t), t, cm))


def env_mirror(env_id: str) -> dict[str, np.ndarray] | None:
    """The world's mirror symmetry (``{"obs": signs, "action": signs}``), or None if it declares none."""
    from envs import make

    env = make(env_id)
    try:
        return getattr(env.unwrapped, "mirror", None)
    finally:
        env.close()


def mirror_critic(critic: Critic, mirror: dict[str, Any]) -> Critic:
    """``critic`` averaged over ``mirror`` (see the module docstring); the base policy's normalization defines
    where the reflection acts."""
    policy = critic.policy
    To = policy.horizons[0]
    obs_sign = np.asarray(mirror["obs"], dtype=np.float32)
    act_sign = np.asarray(mirror["action"], dtype=np.float32)
    if obs_sign.shape != (policy.obs_dim,) or act_sign.shape != (policy.action_dim,):
        raise ValueError(f"mirror: expected signs of shape ({policy.obs_dim},) and ({policy.action_dim},) for this "
                         f"policy, received {obs_sign.shape} and {act_sign.shape}")
    with torch.no_grad():
        fa, fb = affine_sign_map(lambda o: policy.obs_features(o).numpy(), obs_sign, (3, To, policy.obs_dim))
        norm = policy.action_normalizer
        aa, ab = affine_sign_map(lambda a: norm.normalize(torch.as_tensor(a)).numpy(),
                                 act_sign, (3, policy.horizons[1], policy.action_dim))
    # in normalized units: features f -> fa f + fb, chunks x -> aa x + ab (every row of the probes agrees)
    net = MirrorNet(critic.net, torch.as_tensor(fa[0]), torch.as_tensor(fb[0]), torch.as_tensor(aa[0]),
                    torch.as_tensor(ab[0]), policy.schedule.alpha_bars.detach().cpu()).eval()
    out = Critic(net, critic.cfg, policy, critic.policy_meta, counter=critic.counter)
    out.metrics = {**critic.metrics, "mirror": True}
    out.source = f"{critic.source} (mirror-averaged)"
    return out


__all__ = ["MirrorNet", "affine_sign_map", "env_mirror", "mirror_critic"]
