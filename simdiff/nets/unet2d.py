"""A small 2D U-Net for lattices and images (architecture only).

Residual blocks (GroupNorm, SiLU, 3x3 conv) with the diffusion time added after the first conv, strided-conv
downsampling and nearest-neighbour upsampling, skip connections by concatenation. ``circular=True`` pads every
convolution periodically, which makes the network exactly translation-equivariant on a torus (Ising lattices);
``circular=False`` zero-pads (images).

Shapes: ``forward(x (B, C_in, L, L), t (B,) float) -> (B, C_out, L, L)``; ``L`` must be divisible by
``2 ** (len(channel_mults) - 1)``. ``t`` is a continuous time in [0, 1] (scaled by 1000 before the sinusoidal
features, so the embedding resolves single steps of a 1000-step schedule).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from simdiff.nets.embeddings import sinusoidal_embedding


def _groups(channels: int) -> int:
    # GroupNorm needs groups dividing the channel count; 8 groups where possible, fewer for thin layers.
    for g in (8, 4, 2, 1):
        if channels % g == 0:
            return g
    return 1


def _conv3(cin: int, cout: int, circular: bool, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, padding_mode="circular" if circular else "zeros")


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, time_dim: int, circular: bool, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(cin), cin)
        self.conv1 = _conv3(cin, cout, circular)
        self.time = nn.Linear(time_dim, cout)
        self.norm2 = nn.GroupNorm(_groups(cout), cout)
        self.drop = nn.Dropout(dropout)
        self.conv2 = _conv3(cout, cout, circular)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:
        h = self.conv1(nn.functional.silu(self.norm1(x)))
        h = h + self.time(temb)[:, :, None, None]
        h = self.conv2(self.drop(nn.functional.silu(self.norm2(h))))
        return h + self.skip(x)


class UNet2D(nn.Module):
    """U-Net with ``len(channel_mults)`` resolutions, ``num_res_blocks`` residual blocks per resolution."""

    def __init__(self, in_channels: int = 1, out_channels: int = 1, base_channels: int = 32,
                 channel_mults: tuple[int, ...] = (1, 2, 2), num_res_blocks: int = 1, time_dim: int = 128,
                 circular: bool = True, dropout: float = 0.0) -> None:
        super().__init__()
        for name, v in (("in_channels", in_channels), ("out_channels", out_channels),
                        ("base_channels", base_channels), ("num_res_blocks", num_res_blocks),
                        ("time_dim", time_dim)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}: expected an int >= 1, received {v!r}")
        if not channel_mults or any(int(m) < 1 for m in channel_mults):
            raise ValueError(f"channel_mults: expected a non-empty tuple of ints >= 1, received {channel_mults!r}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.levels = len(channel_mults)
        self.time_dim = time_dim
        self.time_mlp = nn.Sequential(nn.Linear(time_dim, time_dim), nn.SiLU(), nn.Linear(time_dim, time_dim))
        self.stem = _conv3(in_channels, base_channels, circular)

        chans = [base_channels * int(m) for m in channel_mults]
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        skips, c = [], base_channels
        for i, ch in enumerate(chans):
            blocks = nn.ModuleList()
            for _ in range(num_res_blocks):
                blocks.append(ResBlock(c, ch, time_dim, circular, dropout))
                c = ch
            self.down.append(blocks)
            skips.append(c)
            if i < self.levels - 1:
                self.downsample.append(_conv3(c, c, circular, stride=2))
        self.mid = nn.ModuleList([ResBlock(c, c, time_dim, circular, dropout),
                                  ResBlock(c, c, time_dim, circular, dropout)])
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i in reversed(range(self.levels)):
            blocks = nn.ModuleList()
            for j in range(num_res_blocks):
                cin = c + skips[i] if j == 0 else c
                blocks.append(ResBlock(cin, chans[i], time_dim, circular, dropout))
                c = chans[i]
            self.up.append(blocks)
            if i > 0:
                self.upsample.append(_conv3(c, c, circular))
        self.out_norm = nn.GroupNorm(_groups(c), c)
        self.out = _conv3(c, out_channels, circular)
        # Start as the zero map: the first loss is the target's variance and early training is stable.
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"x: expected (B, {self.in_channels}, L, L), received {tuple(x.shape)}")
        mult = 2 ** (self.levels - 1)
        if x.shape[-1] % mult or x.shape[-2] % mult:
            raise ValueError(f"x: expected L divisible by {mult} for {self.levels} resolutions, "
                             f"received {tuple(x.shape[-2:])}")
        if t.ndim != 1 or t.shape[0] != x.shape[0]:
            raise ValueError(f"t: expected shape ({x.shape[0]},), received {tuple(t.shape)}")
        temb = self.time_mlp(sinusoidal_embedding(t.float() * 1000.0, self.time_dim).to(x.dtype))
        h = self.stem(x)
        skips = []
        for i, blocks in enumerate(self.down):
            for blk in blocks:
                h = blk(h, temb)
            skips.append(h)
            if i < self.levels - 1:
                h = self.downsample[i](h)
        for blk in self.mid:
            h = blk(h, temb)
        for j, blocks in enumerate(self.up):
            level = self.levels - 1 - j
            h = torch.cat([h, skips[level]], dim=1)
            for blk in blocks:
                h = blk(h, temb)
            if level > 0:
                h = self.upsample[j](nn.functional.interpolate(h, scale_factor=2, mode="nearest"))
        return self.out(nn.functional.silu(self.out_norm(h)))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["UNet2D", "ResBlock", "count_parameters"]
