"""Per-dimension affine normalizers fitted from data and stored as JSON (no pickle).

``y = x * scale + offset``, inverted by ``x = (y - offset) / scale``:

* ``minmax`` maps each dimension's data range ``[lo, hi]`` onto ``[-1, 1]`` (Diffusion Policy's "limits" mode;
  actions then match the sampler's clip range);
* ``meanstd`` maps to zero mean and unit standard deviation.

A dimension that is constant in the data (e.g. a domain parameter fixed at level 0) gets ``scale = 1`` and is
only centered, so it neither divides by zero nor blows up values seen later outside the data range.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor

Mode = Literal["minmax", "meanstd"]
_MODES = ("minmax", "meanstd")
_MIN_RANGE = 1e-4  # below this spread a dimension is treated as constant


def fit_affine(data: np.ndarray, mode: Mode) -> tuple[np.ndarray, np.ndarray]:
    """``(scale, offset)`` of shape ``(D,)`` for ``data (N, D)`` (float64)."""
    if mode not in _MODES:
        raise ValueError(f"normalizer mode: expected one of {_MODES}, received {mode!r}")
    x = np.asarray(data, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 1:
        raise ValueError(f"data: expected shape (N >= 1, D), received {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("data: expected finite values, received NaN or inf")
    if mode == "minmax":
        lo, hi = x.min(axis=0), x.max(axis=0)
        half = (hi - lo) / 2.0
        const = half < _MIN_RANGE / 2.0
        scale = np.where(const, 1.0, 1.0 / np.where(const, 1.0, half))
        offset = -(lo + hi) / 2.0 * scale
    else:
        mean, std = x.mean(axis=0), x.std(axis=0)
        const = std < _MIN_RANGE
        scale = np.where(const, 1.0, 1.0 / np.where(const, 1.0, std))
        offset = -mean * scale
    return scale, offset


@dataclass(frozen=True, eq=False)
class Normalizer:
    """An affine normalizer for vectors of size ``dim`` (applied over the last axis)."""

    mode: str
    scale: np.ndarray   # (D,) float64
    offset: np.ndarray  # (D,) float64

    def __post_init__(self) -> None:
        if self.mode not in _MODES:
            raise ValueError(f"Normalizer.mode: expected one of {_MODES}, received {self.mode!r}")
        s, o = np.asarray(self.scale, np.float64), np.asarray(self.offset, np.float64)
        if s.ndim != 1 or s.shape != o.shape:
            raise ValueError(f"Normalizer: expected scale and offset of equal shape (D,), received {s.shape}, "
                             f"{o.shape}")
        if not (np.isfinite(s).all() and np.isfinite(o).all() and (s != 0).all()):
            raise ValueError("Normalizer: expected finite scale and offset with scale != 0")
        object.__setattr__(self, "scale", s)
        object.__setattr__(self, "offset", o)

    @classmethod
    def fit(cls, data: np.ndarray, mode: Mode = "minmax") -> Normalizer:
        scale, offset = fit_affine(data, mode)
        return cls(mode, scale, offset)

    @classmethod
    def identity(cls, dim: int) -> Normalizer:
        return cls("minmax", np.ones(dim), np.zeros(dim))

    @property
    def dim(self) -> int:
        return int(self.scale.shape[0])

    def _params(self, like: Tensor) -> tuple[Tensor, Tensor]:
        # Cached per (dtype, device): predict_action calls this twice per action chunk.
        key = (like.dtype, like.device)
        cache = self.__dict__.setdefault("_cache", {})
        if key not in cache:
            cache[key] = (torch.as_tensor(self.scale, dtype=like.dtype, device=like.device),
                          torch.as_tensor(self.offset, dtype=like.dtype, device=like.device))
        return cache[key]

    def _check(self, x) -> None:
        if x.shape[-1] != self.dim:
            raise ValueError(f"normalizer: expected last dimension {self.dim}, received shape {tuple(x.shape)}")

    def normalize(self, x: Tensor | np.ndarray) -> Tensor | np.ndarray:
        """``(..., D) -> (..., D)``; tensors stay tensors (same dtype/device), arrays stay float arrays."""
        self._check(x)
        if isinstance(x, Tensor):
            scale, offset = self._params(x)
            return torch.addcmul(offset, x, scale)
        return np.asarray(x) * self.scale + self.offset

    def unnormalize(self, y: Tensor | np.ndarray) -> Tensor | np.ndarray:
        self._check(y)
        if isinstance(y, Tensor):
            scale, offset = self._params(y)
            return (y - offset) / scale
        return (np.asarray(y) - self.offset) / self.scale

    def to_dict(self) -> dict:
        return {"mode": self.mode, "scale": self.scale.tolist(), "offset": self.offset.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> Normalizer:
        try:
            return cls(d["mode"], np.asarray(d["scale"], np.float64), np.asarray(d["offset"], np.float64))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"normalizer stats: expected keys mode, scale, offset, received {d!r:.200}") from exc


__all__ = ["Normalizer", "fit_affine"]
