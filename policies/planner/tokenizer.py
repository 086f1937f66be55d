"""Action-chunk tokenizers: continuous (B, T, Da) actions <-> (B, H) token ids for the masked-diffusion planner.

* :class:`UniformTokenizer` bins every action dimension into ``bins`` equal-width bins over a per-dimension
  range fitted to the data; a plan of ``T`` steps is ``H = T * Da`` tokens, step-major
  (``a_0[0], a_0[1], a_1[0], ...``). Decoding returns bin centres, so the round-trip error of an in-range value
  is at most half a bin width ``(high - low) / (2 bins)``.
* :class:`KMeansTokenizer` learns a codebook of ``K`` centroids over vectors of ``chunk`` consecutive
  actions (k-means++ seeding + Lloyd iterations, seeded); a plan of ``T`` steps is ``H = T / chunk`` tokens.

Both report their reconstruction error (:meth:`reconstruction_error`) and persist as tensors + JSON
(:meth:`state`, :func:`tokenizer_from_state`), never pickle.
"""

from __future__ import annotations

from typing import Any

import torch

from policies.planner.config import TokenizerConfig


def _check_actions(actions: torch.Tensor, action_dim: int | None = None) -> None:
    if not isinstance(actions, torch.Tensor) or actions.dim() != 3 or not actions.is_floating_point():
        got = f"{tuple(actions.shape)} {actions.dtype}" if isinstance(actions, torch.Tensor) else type(actions)
        raise ValueError(f"actions: expected a float tensor (B, T, Da), received {got}")
    if action_dim is not None and actions.shape[-1] != action_dim:
        raise ValueError(f"actions: expected Da={action_dim}, received shape {tuple(actions.shape)}")


class _Base:
    kind: str
    vocab_size: int
    action_dim: int

    def num_tokens(self, horizon: int) -> int:
        raise NotImplementedError

    def encode(self, actions: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _check_tokens(self, tokens: torch.Tensor) -> None:
        if tokens.dim() != 2 or tokens.dtype != torch.long:
            raise ValueError(f"tokens: expected a long tensor (B, H), received {tuple(tokens.shape)} {tokens.dtype}")
        if tokens.numel() and (tokens.min() < 0 or tokens.max() >= self.vocab_size):
            raise ValueError(f"tokens: expected ids in [0, {self.vocab_size}), received range "
                             f"[{int(tokens.min())}, {int(tokens.max())}]")

    def reconstruction_error(self, actions: torch.Tensor) -> dict[str, float]:
        """Round-trip error of ``decode(encode(actions))``: RMSE, mean and max absolute error (action units)."""
        _check_actions(actions, self.action_dim)
        err = self.decode(self.encode(actions)) - actions
        return {"rmse": float(err.pow(2).mean().sqrt()), "mean_abs": float(err.abs().mean()),
                "max_abs": float(err.abs().max())}


class UniformTokenizer(_Base):
    """Per-dimension uniform bins over ``[low, high]`` (each (Da,)); token id = bin index in ``[0, bins)``."""

    kind = "uniform"

    def __init__(self, low: torch.Tensor, high: torch.Tensor, bins: int):
        if bins < 2:
            raise ValueError(f"bins: expected >= 2, received {bins}")
        low, high = torch.as_tensor(low, dtype=torch.float32), torch.as_tensor(high, dtype=torch.float32)
        if low.dim() != 1 or low.shape != high.shape or not torch.all(high > low):
            raise ValueError(f"low, high: expected (Da,) tensors with high > low, received {low}, {high}")
        self.low, self.high, self.bins = low, high, int(bins)
        self.vocab_size = self.bins
        self.action_dim = low.shape[0]

    @classmethod
    def fit(cls, actions: torch.Tensor, bins: int, min_range: float = 1e-3) -> UniformTokenizer:
        """Range = per-dimension min/max of ``actions`` (B, T, Da), widened to at least ``min_range``."""
        _check_actions(actions)
        flat = actions.reshape(-1, actions.shape[-1]).float()
        low, high = flat.min(0).values, flat.max(0).values
        pad = (min_range - (high - low)).clamp_min(0) / 2
        return cls(low - pad, high + pad, bins)

    @property
    def bin_width(self) -> torch.Tensor:
        return (self.high - self.low) / self.bins

    def num_tokens(self, horizon: int) -> int:
        return horizon * self.action_dim

    def encode(self, actions: torch.Tensor) -> torch.Tensor:
        """(B, T, Da) -> (B, T * Da); values outside ``[low, high]`` go to the edge bins."""
        _check_actions(actions, self.action_dim)
        idx = torch.floor((actions.float() - self.low) / self.bin_width).long().clamp_(0, self.bins - 1)
        return idx.reshape(actions.shape[0], -1)

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, T * Da) -> (B, T, Da) bin centres."""
        self._check_tokens(tokens)
        if tokens.shape[1] % self.action_dim:
            raise ValueError(f"tokens: expected a length divisible by Da={self.action_dim}, "
                             f"received {tokens.shape[1]}")
        idx = tokens.reshape(tokens.shape[0], -1, self.action_dim).float()
        return self.low + (idx + 0.5) * self.bin_width

    def state(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        return {"kind": self.kind, "bins": self.bins}, {"low": self.low, "high": self.high}


class KMeansTokenizer(_Base):
    """Nearest-centroid codes of ``chunk`` consecutive actions; ``codebook``: (K, chunk * Da)."""

    kind = "kmeans"

    def __init__(self, codebook: torch.Tensor, chunk: int, action_dim: int):
        codebook = torch.as_tensor(codebook, dtype=torch.float32)
        if chunk < 1 or codebook.dim() != 2 or codebook.shape[1] != chunk * action_dim:
            raise ValueError(f"codebook: expected (K, chunk * Da) = (K, {chunk * action_dim}), received "
                             f"{tuple(codebook.shape)}")
        self.codebook, self.chunk, self.action_dim = codebook, int(chunk), int(action_dim)
        self.vocab_size = codebook.shape[0]

    @classmethod
    def fit(cls, actions: torch.Tensor, codebook_size: int, chunk: int = 1, iters: int = 50,
            generator: torch.Generator | None = None) -> KMeansTokenizer:
        """k-means++ seeding + ``iters`` Lloyd steps on the chunk vectors of ``actions`` (B, T, Da)."""
        _check_actions(actions)
        B, T, Da = actions.shape
        if T % chunk:
            raise ValueError(f"chunk: expected a divisor of the horizon T={T}, received {chunk}")
        x = actions.float().reshape(B * (T // chunk), chunk * Da)
        if codebook_size < 1 or codebook_size > x.shape[0]:
            raise ValueError(f"codebook_size: expected 1..{x.shape[0]} (number of chunk vectors), "
                             f"received {codebook_size}")
        return cls(kmeans(x, codebook_size, iters, generator), chunk, Da)

    def num_tokens(self, horizon: int) -> int:
        if horizon % self.chunk:
            raise ValueError(f"horizon: expected a multiple of chunk={self.chunk}, received {horizon}")
        return horizon // self.chunk

    def encode(self, actions: torch.Tensor) -> torch.Tensor:
        _check_actions(actions, self.action_dim)
        B, T, Da = actions.shape
        x = actions.float().reshape(B, self.num_tokens(T), self.chunk * Da)
        return torch.cdist(x, self.codebook.expand(B, -1, -1)).argmin(-1)

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        self._check_tokens(tokens)
        return self.codebook[tokens].reshape(tokens.shape[0], -1, self.action_dim)

    def state(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        return {"kind": self.kind, "chunk": self.chunk, "action_dim": self.action_dim}, \
            {"codebook": self.codebook}


def kmeans(x: torch.Tensor, k: int, iters: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Centroids (k, D) of ``x`` (N, D): k-means++ seeding, then Lloyd steps; an empty cluster is re-seeded at
    the point farthest from its centroid (keeps all k codes in use)."""
    N = x.shape[0]
    cent = x[torch.randint(N, (1,), generator=generator)]
    d2 = torch.cdist(x, cent).squeeze(1) ** 2
    for _ in range(1, k):
        probs = d2 / d2.sum() if d2.sum() > 0 else torch.full_like(d2, 1.0 / N)
        nxt = x[torch.multinomial(probs, 1, generator=generator)]
        cent = torch.cat([cent, nxt])
        d2 = torch.minimum(d2, torch.cdist(x, nxt).squeeze(1) ** 2)
    for _ in range(iters):
        dist = torch.cdist(x, cent)
        assign = dist.argmin(1)
        counts = torch.bincount(assign, minlength=k)
        new = torch.zeros_like(cent).index_add_(0, assign, x) / counts.clamp_min(1)[:, None]
        for j in torch.nonzero(counts == 0).flatten().tolist():
            far = dist.gather(1, assign[:, None]).squeeze(1).argmax()
            new[j] = x[far]
            dist[far] = 0.0  # do not pick the same point twice
        if torch.allclose(new, cent):
            break
        cent = new
    return cent


def build_tokenizer(cfg: TokenizerConfig, actions: torch.Tensor,
                    generator: torch.Generator | None = None) -> UniformTokenizer | KMeansTokenizer:
    """Fit the tokenizer ``cfg`` describes to training action chunks (B, T, Da)."""
    if cfg.kind == "uniform":
        return UniformTokenizer.fit(actions, cfg.bins)
    return KMeansTokenizer.fit(actions, cfg.codebook_size, cfg.chunk, cfg.kmeans_iters, generator)


def tokenizer_from_state(meta: dict[str, Any], tensors: dict[str, torch.Tensor]) -> UniformTokenizer | KMeansTokenizer:
    """Rebuild a tokenizer from :meth:`state` output (as stored in a planner checkpoint)."""
    kind = meta.get("kind")
    if kind == "uniform":
        return UniformTokenizer(tensors["low"], tensors["high"], int(meta["bins"]))
    if kind == "kmeans":
        return KMeansTokenizer(tensors["codebook"], int(meta["chunk"]), int(meta["action_dim"]))
    raise ValueError(f"tokenizer kind: expected 'uniform' or 'kmeans', received {kind!r}")


Tokenizer = UniformTokenizer | KMeansTokenizer

__all__ = ["UniformTokenizer", "KMeansTokenizer", "Tokenizer", "kmeans", "build_tokenizer",
           "tokenizer_from_state"]
