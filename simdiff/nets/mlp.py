"""A residual MLP denoiser for low-dimensional data (toy problems, tests, small state spaces)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from simdiff.nets.embeddings import sinusoidal_embedding


class _ResBlock(nn.Module):
    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.net = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def forward(self, h: Tensor, temb: Tensor) -> Tensor:
        # The step embedding is added inside every block so depth does not wash the conditioning out.
        return h + self.net(torch.nn.functional.silu(self.norm(h) + temb))


class DenoiserMLP(nn.Module):
    """``(x (B, D), t (B,), cond (B, C) | None) -> (B, D)``: a residual MLP with a sinusoidal step embedding.

    Architecture only: what the output means (epsilon, v or x0) is decided by the loss it is trained with.

    Args:
        data_dim: ``D``, size of each data vector.
        hidden: width of the residual stream.
        depth: number of residual blocks.
        time_dim: size of the sinusoidal step features fed to the step MLP.
        cond_dim: ``C``, size of an optional global condition concatenated to the input (0 = unconditional).
    """

    def __init__(self, data_dim: int, hidden: int = 128, depth: int = 3, time_dim: int = 64,
                 cond_dim: int = 0) -> None:
        super().__init__()
        for name, v, lo in (("data_dim", data_dim, 1), ("hidden", hidden, 1), ("depth", depth, 0),
                            ("time_dim", time_dim, 2), ("cond_dim", cond_dim, 0)):
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ValueError(f"DenoiserMLP {name}: expected an int >= {lo}, received {v!r}")
        self.data_dim, self.cond_dim, self.time_dim = data_dim, cond_dim, time_dim
        self.time_mlp = nn.Sequential(nn.Linear(time_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.in_proj = nn.Linear(data_dim + cond_dim, hidden)
        self.blocks = nn.ModuleList(_ResBlock(hidden) for _ in range(depth))
        self.out_norm = nn.LayerNorm(hidden)
        self.out_proj = nn.Linear(hidden, data_dim)

    def forward(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        if x.ndim != 2 or x.shape[1] != self.data_dim:
            raise ValueError(f"x: expected shape (B, {self.data_dim}), received {tuple(x.shape)}")
        if t.shape != (x.shape[0],):
            raise ValueError(f"t: expected shape ({x.shape[0]},), received {tuple(t.shape)}")
        if self.cond_dim:
            if cond is None or cond.shape != (x.shape[0], self.cond_dim):
                got = None if cond is None else tuple(cond.shape)
                raise ValueError(f"cond: expected shape ({x.shape[0]}, {self.cond_dim}), received {got}")
            x = torch.cat([x, cond], dim=1)
        elif cond is not None:
            raise ValueError("cond: this DenoiserMLP was built with cond_dim=0, received a condition")
        temb = self.time_mlp(sinusoidal_embedding(t, self.time_dim).to(x.dtype))
        h = self.in_proj(x)
        for block in self.blocks:
            h = block(h, temb)
        return self.out_proj(torch.nn.functional.silu(self.out_norm(h)))


__all__ = ["DenoiserMLP"]
