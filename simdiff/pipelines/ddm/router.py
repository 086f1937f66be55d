"""The router ``r(k | x_t, t)`` of a decentralized diffusion model: networks, loss, and probabilities.

DDM / Paris train a small classifier with cross-entropy to predict which cluster a noised sample came from. Its
softmax is an estimate of the posterior ``p(k | x_t, t)``, the weight of expert ``k`` in the exact mixture
``eps(x_t, t) = sum_k p(k | x_t, t) eps_k(x_t, t)`` (see :mod:`simdiff.pipelines.ddm.mixture`).

Networks (architecture only):

* :class:`LatticeRouter` ``(x (B, 1, L, L), t (B,) in [0, 1]) -> logits (B, K)``: circular convolutions (the
  lattice is a torus), global average pooling (translation invariance), plus the lattice mean as a direct input
  (|m| is the leading cluster feature of critical lattices and a pooled nonlinear map cannot recover it);
* :class:`ChunkRouter` ``(x (B, Tp, Da), t (B,), cond (B, F)) -> logits (B, K)``: an MLP over the flattened
  noised action chunk, the time and the observation features.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from simdiff.nets.embeddings import sinusoidal_embedding

#: continuous times in [0, 1] are scaled by this before the sinusoidal features (resolves 1000-step schedules)
TIME_SCALE = 1000.0


class _TimeMLP(nn.Module):
    def __init__(self, time_dim: int, out: int) -> None:
        super().__init__()
        self.time_dim = time_dim
        self.net = nn.Sequential(nn.Linear(time_dim, out), nn.SiLU(), nn.Linear(out, out))

    def forward(self, t: Tensor) -> Tensor:
        return self.net(sinusoidal_embedding(t * TIME_SCALE, self.time_dim))


class LatticeRouter(nn.Module):
    """``(x (B, 1, L, L), t (B,)) -> (B, K)`` logits over clusters."""

    def __init__(self, num_experts: int, channels: int = 16, depth: int = 2, hidden: int = 64,
                 time_dim: int = 32, circular: bool = True) -> None:
        super().__init__()
        for name, v in (("num_experts", num_experts), ("channels", channels), ("depth", depth),
                        ("hidden", hidden), ("time_dim", time_dim)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}: expected an int >= 1, received {v!r}")
        pad = "circular" if circular else "zeros"
        layers: list[nn.Module] = []
        cin = 1
        for _ in range(depth):
            layers += [nn.Conv2d(cin, channels, 3, padding=1, padding_mode=pad), nn.SiLU()]
            cin = channels
        self.convs = nn.Sequential(*layers)
        self.time = _TimeMLP(time_dim, hidden)
        self.inp = nn.Linear(channels + 1, hidden)
        self.head = nn.Sequential(nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, num_experts))

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != 1:
            raise ValueError(f"x: expected lattices (B, 1, L, L), received {tuple(x.shape)}")
        pooled = self.convs(x).mean(dim=(2, 3))
        m = x.mean(dim=(1, 2, 3))[:, None]
        return self.head(self.inp(torch.cat([pooled, m], dim=1)) + self.time(t))


class ChunkRouter(nn.Module):
    """``(x (B, Tp, Da), t (B,), cond (B, F)) -> (B, K)`` logits over clusters."""

    def __init__(self, num_experts: int, chunk_shape: tuple[int, int], cond_dim: int, hidden: int = 64,
                 depth: int = 2, time_dim: int = 32) -> None:
        super().__init__()
        for name, v in (("num_experts", num_experts), ("hidden", hidden), ("depth", depth),
                        ("time_dim", time_dim)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}: expected an int >= 1, received {v!r}")
        self.chunk_shape = tuple(int(s) for s in chunk_shape)
        self.cond_dim = int(cond_dim)
        self.inp = nn.Linear(self.chunk_shape[0] * self.chunk_shape[1] + self.cond_dim, hidden)
        self.time = _TimeMLP(time_dim, hidden)
        blocks: list[nn.Module] = []
        for _ in range(depth):
            blocks += [nn.SiLU(), nn.Linear(hidden, hidden)]
        self.body = nn.Sequential(*blocks)
        self.out = nn.Sequential(nn.SiLU(), nn.Linear(hidden, num_experts))

    def forward(self, x: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        if x.ndim != 3 or tuple(x.shape[1:]) != self.chunk_shape:
            raise ValueError(f"x: expected (B, {self.chunk_shape[0]}, {self.chunk_shape[1]}), received "
                             f"{tuple(x.shape)}")
        if cond.ndim != 2 or cond.shape != (x.shape[0], self.cond_dim):
            raise ValueError(f"cond: expected ({x.shape[0]}, {self.cond_dim}), received {tuple(cond.shape)}")
        h = self.inp(torch.cat([x.flatten(1), cond.to(x.dtype)], dim=1)) + self.time(t)
        return self.out(self.body(h))


# ------------------------------------------------------------------------------------------------- loss
NoiseFn = Callable[[Tensor, torch.Generator], tuple[Tensor, Tensor]]


def router_loss_fn(noise_fn: NoiseFn) -> Callable[[nn.Module, dict, torch.Generator], Tensor]:
    """``loss_fn(router, batch, generator) -> (B,)`` cross-entropy of the cluster label of noised samples.

    ``batch = {"x0": (B, ...), "label": (B,) long, "cond": (B, F) | None}``; ``noise_fn(x0, generator) ->
    (x_t, t in [0, 1])`` is the forward process the experts are trained with (same times, same noise law).
    """
    def loss_fn(router: nn.Module, batch: dict, generator: torch.Generator) -> Tensor:
        x_t, t = noise_fn(batch["x0"], generator)
        cond = batch.get("cond")
        logits = router(x_t, t) if cond is None else router(x_t, t, cond)
        return nn.functional.cross_entropy(logits, batch["label"], reduction="none")
    return loss_fn


@torch.no_grad()
def router_probs(router: nn.Module, x_t: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
    """Softmax of the router's logits ``(B, K)`` (float64, rows sum to 1)."""
    logits = router(x_t, t) if cond is None else router(x_t, t, cond)
    return torch.softmax(logits.double(), dim=1)


@torch.no_grad()
def router_accuracy(router: nn.Module, noise_fn: NoiseFn, x0: Tensor, labels: Tensor, generator: torch.Generator,
                    cond: Tensor | None = None, bins: int = 5, batch_size: int = 512) -> dict:
    """Top-1 accuracy and cross-entropy of the router on noised held-out samples, overall and per time bin."""
    correct, ce, times = [], [], []
    for lo in range(0, x0.shape[0], batch_size):
        hi = min(lo + batch_size, x0.shape[0])
        x_t, t = noise_fn(x0[lo:hi], generator)
        p = router_probs(router, x_t, t, None if cond is None else cond[lo:hi])
        lab = labels[lo:hi]
        correct.append((p.argmax(dim=1) == lab).double())
        ce.append(-torch.log(p[torch.arange(hi - lo), lab].clamp(min=1e-300)))
        times.append(t.double())
    correct, ce, times = torch.cat(correct), torch.cat(ce), torch.cat(times)
    edges = torch.linspace(0, 1, bins + 1, dtype=torch.float64)
    per_bin = []
    for i in range(bins):
        sel = (times >= edges[i]) & ((times < edges[i + 1]) if i + 1 < bins else (times <= edges[i + 1]))
        n = int(sel.sum())
        per_bin.append({"t_lo": float(edges[i]), "t_hi": float(edges[i + 1]), "n": n,
                        "accuracy": float(correct[sel].mean()) if n else None,
                        "cross_entropy": float(ce[sel].mean()) if n else None})
    return {"accuracy": float(correct.mean()), "cross_entropy": float(ce.mean()), "n": int(correct.numel()),
            "per_time": per_bin}


__all__ = ["LatticeRouter", "ChunkRouter", "router_loss_fn", "router_probs", "router_accuracy", "TIME_SCALE"]
