"""The critic network: a diffusion policy's denoiser cut after its first blocks, pooled, and a scalar head.

DRM (arXiv 2605.25661) builds its reward model from a pretrained diffusion backbone with the last blocks
skipped, a small conv stack, global average pooling and an MLP to a scalar. Here the backbone is the
policy's 1D temporal U-Net (``simdiff.nets.unet1d.ConditionalUnet1D``): its conditional residual blocks are
laid out in forward order (down path with skip pushes and downsampling, middle, up path with skip
concatenation and upsampling) as a small *program*; the critic copies the program up to the last kept block
together with the step encoder and the optional task embedding, so it reads the same inputs as the
denoiser: noisy chunk ``x_t (B, Tp, Da)``, step ``t (B,)``, observation features ``(B, F)`` and task ids.

Architecture only: no loss, no sampling. Build it with :func:`critic_from_policy_net`.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from policies.critic.config import CriticModelConfig

# Program ops over the U-Net: ("res", block), ("skip", None), ("resample", module), ("cat", None).
Op = tuple[str, nn.Module | None]


def unet_program(unet: nn.Module) -> list[Op]:
    """The forward pass of a ``ConditionalUnet1D`` as a flat list of ops, up to (not including) the final
    conv block and output projection. Mirrors ``ConditionalUnet1D.forward``; a test checks the two agree."""
    for name in ("down", "mid", "up", "step_encoder"):
        if not hasattr(unet, name):
            raise TypeError(f"unet: expected a ConditionalUnet1D (with .{name}), received {type(unet).__name__}")
    ops: list[Op] = []
    for res1, res2, down in unet.down:
        ops += [("res", res1), ("res", res2), ("skip", None), ("resample", down)]
    for res in unet.mid:
        ops.append(("res", res))
    for res1, res2, up in unet.up:
        ops += [("cat", None), ("res", res1), ("res", res2), ("resample", up)]
    return ops


def count_blocks(ops: list[Op]) -> int:
    return sum(1 for kind, _ in ops if kind == "res")


def truncate_program(ops: list[Op], keep: int) -> list[Op]:
    """The ops up to and including the ``keep``-th residual block (features are read right after it)."""
    n = count_blocks(ops)
    if not 1 <= keep <= n:
        raise ValueError(f"keep: expected 1..{n} residual blocks, received {keep}")
    seen = 0
    for i, (kind, _) in enumerate(ops):
        seen += kind == "res"
        if seen == keep:
            return ops[:i + 1]
    raise AssertionError("unreachable")  # pragma: no cover


def film_input(step_encoder: nn.Module, t: Tensor, cond: Tensor | None) -> Tensor:
    """``Mish([step embedding, cond])`` ``(B, Ds + Dc)``: what every block's FiLM layer reads (as in the U-Net)."""
    step = step_encoder(t)
    z = step if cond is None or cond.shape[1] == 0 else torch.cat([step, cond.to(step.dtype)], dim=-1)
    return nn.functional.mish(z)


def run_program(ops: list[Op], x: Tensor, z: Tensor) -> Tensor:
    """Run ``ops`` on ``x (B, T, Da)`` with FiLM input ``z (B, Dz)``; returns features ``(B, C, T')``."""
    h = x.transpose(1, 2)
    skips: list[Tensor] = []
    for kind, mod in ops:
        if kind == "res":
            scale, bias = mod.film(z).unsqueeze(-1).chunk(2, dim=1)
            h = mod(h, (scale, bias))
        elif kind == "skip":
            skips.append(h)
        elif kind == "resample":
            # the last down level has no downsampling (None, or Identity in older U-Nets)
            h = h if mod is None else mod(h)
        elif kind == "cat":
            h = torch.cat([h, skips.pop()], dim=1)
        else:  # pragma: no cover - ops are built by unet_program only
            raise ValueError(f"unknown op {kind!r}")
    return h


class CriticNet(nn.Module):
    """``(x_t (B, Tp, Da), t (B,), obs_feat (B, F), task (B,) | None) -> score (B,)``.

    ``ops`` is a truncated U-Net program (its modules are registered here, so they train and save with the
    critic); ``step_encoder`` and ``task_embed`` are copies of the policy's.
    """

    def __init__(self, ops: list[Op], step_encoder: nn.Module, task_embed: nn.Module | None, obs_feat_dim: int,
                 action_dim: int, feat_channels: int, cfg: CriticModelConfig):
        super().__init__()
        self.kinds = [k for k, _ in ops]
        self.blocks = nn.ModuleList([m if m is not None else nn.Identity() for _, m in ops])
        self.step_encoder = step_encoder
        self.task_embed = task_embed
        self.obs_feat_dim = int(obs_feat_dim)
        self.action_dim = int(action_dim)
        layers: list[nn.Module] = []
        c = feat_channels
        for _ in range(cfg.head_convs):
            groups = 8 if cfg.head_channels % 8 == 0 else 1
            layers += [nn.Conv1d(c, cfg.head_channels, 3, stride=2, padding=1),
                       nn.GroupNorm(groups, cfg.head_channels), nn.Mish()]
            c = cfg.head_channels
        self.head_conv = nn.Sequential(*layers)
        self.pool = cfg.pool
        pooled = c * (2 if cfg.pool == "meanmax" else 1)
        self.head = nn.Sequential(nn.Linear(pooled, cfg.head_hidden), nn.Mish(), nn.Linear(cfg.head_hidden, 1))
        if cfg.freeze_backbone:
            for m in (self.blocks, self.step_encoder, self.task_embed):
                if m is not None:
                    m.requires_grad_(False)

    def _ops(self) -> list[Op]:
        return list(zip(self.kinds, self.blocks))

    def condition(self, obs_feat: Tensor, task: Tensor | None = None) -> Tensor:
        """``(B, F)`` observation features (+ task ids ``(B,)``) -> global condition, as the policy builds it."""
        if obs_feat.ndim != 2 or obs_feat.shape[1] != self.obs_feat_dim:
            raise ValueError(f"obs_feat: expected shape (B, {self.obs_feat_dim}), received {tuple(obs_feat.shape)}")
        if self.task_embed is None:
            if task is not None:
                raise ValueError("task: this critic has no task embedding, received task ids")
            return obs_feat
        if task is None or task.shape != (obs_feat.shape[0],):
            got = None if task is None else tuple(task.shape)
            raise ValueError(f"task: expected integer ids of shape ({obs_feat.shape[0]},), received {got}")
        return torch.cat([obs_feat, self.task_embed(task).to(obs_feat.dtype)], dim=-1)

    def features(self, x: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        """Truncated-backbone features ``(B, C, T')``."""
        if x.ndim != 3 or x.shape[-1] != self.action_dim:
            raise ValueError(f"x: expected shape (B, Tp, {self.action_dim}), received {tuple(x.shape)}")
        if t.shape != (x.shape[0],):
            raise ValueError(f"t: expected shape ({x.shape[0]},), received {tuple(t.shape)}")
        return run_program(self._ops(), x, film_input(self.step_encoder, t, cond))

    def score_cond(self, x: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        """Scores ``(B,)`` given a precomputed global condition ``cond (B, C)`` (see :meth:`condition`)."""
        h = self.head_conv(self.features(x, t, cond))
        pooled = h.mean(dim=-1) if self.pool == "mean" else torch.cat([h.mean(dim=-1), h.amax(dim=-1)], dim=-1)
        return self.head(pooled).squeeze(-1)

    def forward(self, x: Tensor, t: Tensor, obs_feat: Tensor, task: Tensor | None = None) -> Tensor:
        return self.score_cond(x, t, self.condition(obs_feat, task))


class CriticNetView(nn.Module):
    """Base of networks made from a critic network (ensembles, mirror averages): they keep
    :class:`CriticNet`'s interface -- ``obs_feat_dim``, ``action_dim``, ``task_embed`` from ``inner`` and
    ``forward`` = ``score_cond(x, t, condition(obs_feat, task))`` -- and define ``condition`` and
    ``score_cond`` themselves, so samplers, GRPO, accuracy and the cost count use them unchanged."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.obs_feat_dim, self.action_dim = inner.obs_feat_dim, inner.action_dim
        self.task_embed = inner.task_embed     # read for its presence (the cost count builds task ids)

    def forward(self, x: Tensor, t: Tensor, obs_feat: Tensor, task: Tensor | None = None) -> Tensor:
        return self.score_cond(x, t, self.condition(obs_feat, task))


def _feature_channels(ops: list[Op]) -> int:
    """Channels of the features read after the last op (the last residual block's output width)."""
    for kind, mod in reversed(ops):
        if kind == "res":
            return int(mod.c_out)
    raise ValueError("ops: expected at least one residual block")  # pragma: no cover


def critic_from_policy_net(policy_net: nn.Module, cfg: CriticModelConfig, action_dim: int) -> CriticNet:
    """A :class:`CriticNet` initialised from a ``DiffusionPolicyNet`` (``.unet``, ``.task_embed``,
    ``.obs_feat_dim``): its blocks up to the cut are deep-copied, the head is fresh."""
    unet = getattr(policy_net, "unet", None)
    if unet is None:
        raise TypeError(f"policy_net: expected a DiffusionPolicyNet (with .unet), received {type(policy_net).__name__}")
    ops = unet_program(unet)
    n = count_blocks(ops)
    if cfg.drop_blocks >= n:
        raise ValueError(f"model.drop_blocks: expected at most {n - 1} (the denoiser has {n} residual blocks), "
                         f"received {cfg.drop_blocks}")
    kept = truncate_program(ops, n - cfg.drop_blocks)
    kept = [(k, copy.deepcopy(m) if m is not None else None) for k, m in kept]
    task_embed = copy.deepcopy(policy_net.task_embed) if getattr(policy_net, "task_embed", None) is not None else None
    net = CriticNet(kept, copy.deepcopy(unet.step_encoder), task_embed, int(policy_net.obs_feat_dim), action_dim,
                    _feature_channels(kept), cfg)
    return net.to(next(policy_net.parameters()).dtype)


def count_flops(fn) -> int:
    """FLOPs of the tensor ops run by ``fn()`` (``torch.utils.flop_counter``: matmuls and convolutions, which
    dominate a 1D U-Net; counted at the ATen level, so functional calls inside modules are included)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        fn()
    return int(counter.get_total_flops())


def critic_cost_ratio(policy_net: nn.Module, critic: CriticNet, horizon: int) -> float:
    """FLOPs of one critic call over one denoiser call (batch 1, sequence length ``horizon``): the cost of a
    critic evaluation in denoiser evaluations."""
    x = torch.zeros(1, horizon, critic.action_dim, dtype=next(critic.parameters()).dtype)
    t = torch.zeros(1, dtype=torch.long)
    feat = torch.zeros(1, critic.obs_feat_dim, dtype=x.dtype)
    task = torch.zeros(1, dtype=torch.long) if critic.task_embed is not None else None
    den = count_flops(lambda: policy_net(x, t, feat, task))
    crit = count_flops(lambda: critic(x, t, feat, task))
    return crit / max(den, 1)


__all__ = ["CriticNet", "CriticNetView", "critic_from_policy_net", "unet_program", "truncate_program", "run_program",
           "film_input", "count_blocks", "count_flops", "critic_cost_ratio"]
