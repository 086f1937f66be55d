"""Embeddings of diffusion steps (and other scalars) for conditioning networks."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def sinusoidal_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Transformer-style sinusoidal features (Vaswani et al. 2017) of ``t (B,)`` -> ``(B, dim)`` float32.

    Layout ``[sin(t w_0) .. sin(t w_{h-1}), cos(t w_0) .. cos(t w_{h-1})]`` with ``h = dim // 2`` and
    ``w_i = max_period^(-i/h)``; an odd ``dim`` is padded with one zero column. ``t`` may be integer steps or
    continuous times (scale continuous ``t`` in [0, 1] up, e.g. by 1000, so the high frequencies are used).
    """
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ValueError(f"dim: expected an int >= 1, received {dim!r}")
    if not isinstance(t, Tensor) or t.ndim != 1:
        got = f"shape {tuple(t.shape)}" if isinstance(t, Tensor) else type(t).__name__
        raise ValueError(f"t: expected a 1-D tensor (B,), received {got}")
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / max(half, 1))
    args = t.to(torch.float32)[:, None] * freqs[None, :]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=-1)
    if dim % 2:
        emb = torch.nn.functional.pad(emb, (0, 1))
    return emb


__all__ = ["sinusoidal_embedding"]
