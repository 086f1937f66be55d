"""1D temporal U-Net with FiLM conditioning (Chi et al. 2023, Diffusion Policy, ``ConditionalUnet1D``).

The network denoises an action sequence ``x (B, T, Da)`` given a diffusion step ``t (B,)`` and a global
condition ``cond (B, Dc)`` (in the policy: the flattened observation history, the domain context and an
optional task embedding). Every residual block receives ``[step embedding, cond]`` and turns it into a
per-channel scale and bias applied after its first convolution (FiLM).

Layout, as in the paper's code: ``len(down_dims)`` resolution levels; each level has two conditional
residual blocks and a stride-2 downsampling (except the last); two blocks in the middle; the mirror image
on the way up with skip connections; a final conv block and a 1x1 projection back to ``Da`` channels.
Convolutions use kernel ``kernel_size`` (5), GroupNorm with ``n_groups`` (8) groups and Mish.

Architecture only: no loss, no sampler, no normalization of inputs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from simdiff.nets.embeddings import sinusoidal_embedding


class SinusoidalStepEmbedding(nn.Module):
    """Diffusion step ``t (B,)`` -> ``(B, dim)``: sinusoidal features, then a 2-layer MLP (Mish)."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.mlp = nn.Sequential(nn.Linear(dim, dim * 4), nn.Mish(), nn.Linear(dim * 4, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(sinusoidal_embedding(t, self.dim).to(self.mlp[0].weight.dtype))


# Convolutions with at least this many weights take the oneDNN path when no gradient is needed (see conv1d).
_ONEDNN_MIN_WEIGHTS = 4096


def conv1d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: int = 1,
           padding: int = 0) -> torch.Tensor:
    """``torch.conv1d``, computed for inference as a height-1 ``conv2d`` with a channels-last weight.

    Same math. Why: for 1-D convolutions at small batch PyTorch's CPU dispatch picks its im2col kernel
    (``_slow_conv2d_forward``); a channels-last weight routes the call to oneDNN instead, about 3x faster from
    32x32x5 weights up. Small convolutions (the input layer, 1x1 residual projections) and training keep
    the plain kernel, which is as fast there and whose backward pass is the well-trodden one.
    """
    if torch.is_grad_enabled() or weight.numel() < _ONEDNN_MIN_WEIGHTS:
        return torch.conv1d(x, weight, bias, stride, padding)
    w = weight.unsqueeze(2).contiguous(memory_format=torch.channels_last)
    return torch.conv2d(x.unsqueeze(2), w, bias, (1, stride), (0, padding)).squeeze(2)


class Conv1dBlock(nn.Module):
    """Conv1d -> GroupNorm -> Mish, length preserving."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, n_groups: int):
        super().__init__()
        self.conv = nn.Conv1d(c_in, c_out, kernel_size, padding=kernel_size // 2)
        self.norm = nn.GroupNorm(n_groups, c_out)
        self._pad, self._groups, self._eps = kernel_size // 2, n_groups, self.norm.eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Direct tensor ops on the submodules' parameters: at batch 1 the Python overhead of module calls
        # and functional wrappers is a visible share of the action-chunk latency.
        conv, norm = self.conv, self.norm
        h = conv1d(x, conv.weight, conv.bias, 1, self._pad)
        return nn.functional.mish(torch.group_norm(h, self._groups, norm.weight, norm.bias, self._eps))


class ConditionalResidualBlock1D(nn.Module):
    """Two conv blocks with FiLM (per-channel scale and bias) between them, plus a residual connection.

    The FiLM parameters, a pair ``scale, bias`` of shape ``(B, c_out, 1)``, are computed by the parent
    network (see ``ConditionalUnet1D.film_terms``) so that they can be cached across denoising steps.
    """

    def __init__(self, c_in: int, c_out: int, cond_dim: int, kernel_size: int, n_groups: int):
        super().__init__()
        self.c_out = c_out
        self.block1 = Conv1dBlock(c_in, c_out, kernel_size, n_groups)
        self.block2 = Conv1dBlock(c_out, c_out, kernel_size, n_groups)
        self.film = nn.Linear(cond_dim, 2 * c_out)  # applied to Mish([step embedding, cond])
        self.residual = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else None

    def forward(self, x: torch.Tensor, film: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        scale, bias = film
        # .forward() instead of __call__: these inner modules carry no hooks, and the call overhead counts.
        h = self.block2.forward(torch.addcmul(bias, self.block1.forward(x), scale))
        res = self.residual
        return h + (x if res is None else conv1d(x, res.weight, res.bias))


class ConditionalUnet1D(nn.Module):
    """Denoiser ``(x (B, T, Da), t (B,), cond (B, Dc) | None) -> (B, T, Da)``.

    ``T`` must be divisible by ``2 ** (len(down_dims) - 1)`` (each downsampling halves it); every entry of
    ``down_dims`` must be divisible by ``n_groups``.
    """

    def __init__(
        self,
        action_dim: int,
        global_cond_dim: int,
        down_dims: Sequence[int] = (256, 512, 1024),
        step_embed_dim: int = 256,
        kernel_size: int = 5,
        n_groups: int = 8,
    ):
        super().__init__()
        down_dims = tuple(int(d) for d in down_dims)
        if action_dim < 1:
            raise ValueError(f"action_dim: expected >= 1, received {action_dim}")
        if global_cond_dim < 0:
            raise ValueError(f"global_cond_dim: expected >= 0, received {global_cond_dim}")
        if not down_dims:
            raise ValueError("down_dims: expected at least one level, received ()")
        bad = [d for d in down_dims if d % n_groups]
        if bad:
            raise ValueError(f"down_dims: expected multiples of n_groups={n_groups}, received {down_dims}")
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size: expected an odd number, received {kernel_size}")
        self.action_dim = action_dim
        self.global_cond_dim = global_cond_dim
        self.down_dims = down_dims
        self.step_encoder = SinusoidalStepEmbedding(step_embed_dim)
        cond_dim = step_embed_dim + global_cond_dim

        def block(c_in: int, c_out: int) -> ConditionalResidualBlock1D:
            return ConditionalResidualBlock1D(c_in, c_out, cond_dim, kernel_size, n_groups)

        dims = (action_dim, *down_dims)
        levels = list(zip(dims[:-1], dims[1:]))
        self.down = nn.ModuleList()
        for i, (c_in, c_out) in enumerate(levels):
            last = i == len(levels) - 1
            self.down.append(nn.ModuleList([
                block(c_in, c_out), block(c_out, c_out),
                nn.Conv1d(c_out, c_out, 3, stride=2, padding=1) if not last else None,
            ]))
        mid = down_dims[-1]
        self.mid = nn.ModuleList([block(mid, mid), block(mid, mid)])
        self.up = nn.ModuleList()
        # Every up level upsamples: the down path halves len(down_dims) - 1 times and the up path
        # doubles as often (the highest-resolution skip is not reused, as in the reference implementation).
        for c_in, c_out in reversed(levels[1:]):
            self.up.append(nn.ModuleList([
                block(2 * c_out, c_in), block(c_in, c_in),
                nn.ConvTranspose1d(c_in, c_in, 4, stride=2, padding=1),
            ]))
        self.final_block = Conv1dBlock(down_dims[0], down_dims[0], kernel_size, n_groups)
        self.final_proj = nn.Conv1d(down_dims[0], action_dim, 1)

    @property
    def horizon_multiple(self) -> int:
        """Sequence lengths must be a multiple of this (one halving per downsampling)."""
        return 2 ** (len(self.down_dims) - 1)

    def _blocks(self) -> list[ConditionalResidualBlock1D]:
        return [m for m in self.modules() if isinstance(m, ConditionalResidualBlock1D)]

    def _check_cond(self, cond: torch.Tensor | None, b: int | None) -> None:
        if not self.global_cond_dim:
            return
        if cond is None or cond.ndim != 2 or cond.shape[1] != self.global_cond_dim or (
                b is not None and cond.shape[0] != b):
            got = None if cond is None else tuple(cond.shape)
            raise ValueError(f"cond: expected shape ({b if b is not None else 'B'}, {self.global_cond_dim}), "
                             f"received {got}")

    def film_terms(self, t: torch.Tensor, cond: torch.Tensor | None) -> tuple[list, list]:
        """Split FiLM inputs: per-step terms ``(K, 2C, 1)`` for ``t (K,)`` and per-row terms ``(B, 2C, 1)``.

        FiLM is ``Linear(Mish([step, cond]))``; as Mish acts elementwise this equals
        ``W_step Mish(step) + W_cond Mish(cond) + b``. Samplers compute the cond terms once per action
        chunk and the step terms once per timestep, then add them (``film_at``): the conditioning work
        leaves the denoising loop, which matters at batch 1 where per-op overhead dominates.
        """
        self._check_cond(cond, None)
        step = nn.functional.mish(self.step_encoder(t))
        ds = step.shape[-1]
        step_terms, cond_terms = [], []
        for blk in self._blocks():
            w, b = blk.film.weight, blk.film.bias
            step_terms.append(nn.functional.linear(step, w[:, :ds]).unsqueeze(-1))
            if self.global_cond_dim:
                cond_in = nn.functional.mish(cond.to(w.dtype))
                cond_terms.append(nn.functional.linear(cond_in, w[:, ds:], b).unsqueeze(-1))
            else:
                cond_terms.append(b.view(1, -1, 1))
        return step_terms, cond_terms

    @staticmethod
    def film_at(step_terms: list, cond_terms: list, k: int | torch.Tensor) -> list[tuple]:
        """FiLM ``(scale, bias)`` pairs for step index ``k`` (int: shared by all rows; ``(B,)``: per row)."""
        pick = (lambda s: s[k:k + 1]) if isinstance(k, int) else (lambda s: s[k])
        return [(c + pick(s)).chunk(2, dim=1) for s, c in zip(step_terms, cond_terms)]

    @staticmethod
    def film_steps(step_terms: list, cond_terms: list) -> list[list[tuple]]:
        """FiLM ``(scale, bias)`` pairs for every step at once: ``out[k][block]``, each ``(B, C, 1)``.

        Four tensor ops per block instead of two per block and step; memory ``K * B * 2C`` per block.
        """
        per_block = []
        for s, c in zip(step_terms, cond_terms):
            scale, bias = (c.unsqueeze(0) + s.unsqueeze(1)).chunk(2, dim=2)   # (K, B, C, 1) each
            per_block.append(list(zip(scale.unbind(0), bias.unbind(0))))
        return [list(block_films) for block_films in zip(*per_block)]

    def forward(self, x: torch.Tensor, t: torch.Tensor | None = None, cond: torch.Tensor | None = None,
                film: list[tuple[torch.Tensor, torch.Tensor]] | None = None) -> torch.Tensor:
        """``x (B, T, Da)``, ``t (B,)`` or ``()``, ``cond (B, Dc)`` -> ``(B, T, Da)``.

        Pass ``film`` (from ``film_at``) instead of ``t``/``cond`` to reuse precomputed conditioning.
        """
        if x.ndim != 3 or x.shape[-1] != self.action_dim:
            raise ValueError(f"x: expected shape (B, T, {self.action_dim}), received {tuple(x.shape)}")
        b, horizon = x.shape[0], x.shape[1]
        if horizon % self.horizon_multiple:
            raise ValueError(f"x: expected T divisible by {self.horizon_multiple}, received T={horizon}")
        if film is None:
            if t is None:
                raise ValueError("forward: expected either t (and cond) or film, received neither")
            if t.ndim == 0:
                t = t.expand(b)
            if t.shape != (b,):
                raise ValueError(f"t: expected shape ({b},) or (), received {tuple(t.shape)}")
            self._check_cond(cond, b)
            step_terms, cond_terms = self.film_terms(t, cond)
            film = [(c + s).chunk(2, dim=1) for s, c in zip(step_terms, cond_terms)]
        films = iter(film)
        h = x.transpose(1, 2)  # (B, Da, T): channels are action dims, convolution runs over time
        skips = []
        for res1, res2, downsample in self.down:
            h = res2.forward(res1.forward(h, next(films)), next(films))
            skips.append(h)
            if downsample is not None:
                h = conv1d(h, downsample.weight, downsample.bias, 2, 1)
        for res in self.mid:
            h = res.forward(h, next(films))
        for res1, res2, upsample in self.up:
            h = torch.cat([h, skips.pop()], dim=1)
            h = upsample(res2.forward(res1.forward(h, next(films)), next(films)))
        return self.final_proj(self.final_block.forward(h)).transpose(1, 2)
