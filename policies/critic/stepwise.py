"""Critic-guided sampling of action chunks: step-wise search (DRM) and the terminal best-of-k baseline.

Step-wise sampling (DRM's Step-wise Sampling, per action chunk)::

    x ~ N(0, I)
    for each DDIM step (t -> t_prev):
        1. out = denoiser(x, t)                           (one denoiser evaluation per chunk)
        2. mean, std of the stochastic DDIM step (eta > 0)
        3. k candidates x' = mean + std * eps_j           (no extra denoiser evaluation)
        4. keep argmax_j critic(x'_j, t_prev)             (k critic evaluations)

The last DDIM step goes to clean data and is deterministic (std = 0), so it does not branch. Terminal
best-of-k draws k complete chains (k denoiser evaluations per step) and keeps the chunk the critic scores
highest at ``t = 0``. Both are exposed as batched policies (:class:`CriticGuidedBatchPolicy`) implementing the
``BatchPolicy`` protocol of the evaluation runner, and every network call is counted
(:class:`~policies.critic.adapter.EvalCounter`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from policies.batching import ChunkedBatchPolicy
from policies.critic.adapter import Generators, PolicyDenoiser, row_randn, sample_chunks

Method = Literal["base", "terminal", "stepwise"]
METHODS = ("base", "terminal", "stepwise")
# score_fn(x (B, Tp, Da), t_prev: int, row_index (B,)) -> scores (B,)
ScoreFn = Callable[[Tensor, int, Tensor], Tensor]


def _repeat_rows(generators: Generators, k: int) -> Generators:
    """Row ``b``'s generator repeated ``k`` times (its ``k`` candidates draw from it in turn)."""
    if generators is None or isinstance(generators, torch.Generator):
        return generators
    return [g for g in generators for _ in range(k)]


@torch.no_grad()
def stepwise_sample(den: PolicyDenoiser, cond: Tensor, score_fn: ScoreFn, k: int, eta: float,
                    generators: Generators = None) -> Tensor:
    """Step-wise best-of-``k`` sampling of ``B`` normalized chunks ``(B, Tp, Da)`` (module docstring).

    ``cond (B, C)`` is the denoiser's condition; ``score_fn(x, t_prev, rows)`` scores candidates of the rows
    ``rows`` at step ``t_prev`` (``-1``: clean). Candidate noise of row ``b`` comes from ``generators[b]``.
    """
    if k < 1:
        raise ValueError(f"k: expected >= 1, received {k}")
    b = cond.shape[0]
    shape = den.chunk_shape
    x = row_randn(generators, b, shape, den.dtype)
    rows = torch.arange(b).repeat_interleave(k)
    for t, t_prev in den.plan():
        out = den.predict(x, t, cond)                                                      # 1. predict
        mean, std = den.step_mean_std(out, x, t, t_prev, eta)                              # 2. step law
        if float(std.max()) == 0.0:
            x = mean                                 # deterministic step (eta = 0 or the last step)
            continue
        eps = row_randn(_repeat_rows(generators, k), b * k, shape, den.dtype)
        cands = mean.repeat_interleave(k, 0) + std.repeat_interleave(k, 0) * eps           # 3. branch
        if k == 1:
            x = cands
            continue
        scores = score_fn(cands, t_prev, rows).view(b, k)                                  # 4. select
        x = cands.view(b, k, *shape)[torch.arange(b), scores.argmax(dim=1)]
    den.counter.chunks += b
    return x


@torch.no_grad()
def terminal_best_of_k(den: PolicyDenoiser, cond: Tensor, score_fn: ScoreFn, k: int, eta: float,
                       generators: Generators = None) -> Tensor:
    """``k`` full DDIM chains per row; keep the chunk with the highest critic score at ``t = 0``."""
    if k < 1:
        raise ValueError(f"k: expected >= 1, received {k}")
    b = cond.shape[0]
    x0 = sample_chunks(den, cond.repeat_interleave(k, 0), eta, _repeat_rows(generators, k))
    den.counter.chunks += b
    if k == 1:
        return x0
    scores = score_fn(x0, -1, torch.arange(b).repeat_interleave(k)).view(b, k)
    return x0.view(b, k, *den.chunk_shape)[torch.arange(b), scores.argmax(dim=1)]


@torch.no_grad()
def base_sample(den: PolicyDenoiser, cond: Tensor, eta: float, generators: Generators = None) -> Tensor:
    """The base sampler (DDIM with ``eta``): one chain per row, no critic."""
    x0 = sample_chunks(den, cond, eta, generators)
    den.counter.chunks += cond.shape[0]
    return x0


def critic_score_fn(critic: Any, critic_cond: Tensor) -> ScoreFn:
    """``score_fn`` of a :class:`~policies.critic.scorer.Critic` for rows conditioned on ``critic_cond (B, C)``."""
    def score(x: Tensor, t_prev: int, rows: Tensor) -> Tensor:
        return critic.score(x, t_prev, critic_cond[rows])
    return score


@torch.no_grad()
def guided_chunks(method: Method, den: PolicyDenoiser, critic: Any, obs_history: np.ndarray | Tensor, k: int,
                  eta: float, generators: Generators = None, task: Tensor | None = None) -> Tensor:
    """Normalized chunks ``(B, Tp, Da)`` for observation histories ``(B, To, Do)`` by ``method``."""
    if method not in METHODS:
        raise ValueError(f"method: expected one of {METHODS}, received {method!r}")
    feat = den.obs_features(obs_history)
    cond = den.condition(feat, task)
    if method == "base":
        return base_sample(den, cond, eta, generators)
    if critic is None:
        raise ValueError(f"method {method!r}: expected a critic, received None")
    score_fn = critic_score_fn(critic, critic.condition(feat.to(next(critic.net.parameters()).dtype), task))
    sampler = stepwise_sample if method == "stepwise" else terminal_best_of_k
    return sampler(den, cond, score_fn, k, eta, generators)


class CriticGuidedBatchPolicy(ChunkedBatchPolicy):
    """A ``BatchPolicy`` (``simdiff.pipelines.evaluate``) that plans each chunk with :func:`guided_chunks`.

    Receding horizon as the diffusion policy's own adapter: each slot keeps its observation history (the
    first observation repeated after ``begin``), its queue of ``Ta`` actions and a generator seeded from the
    episode seed; slots whose queue ran out are planned together in ONE batched call.
    """

    def __init__(self, den: PolicyDenoiser, critic: Any = None, method: Method = "stepwise", k: int = 4,
                 eta: float = 1.0, task: int | None = None):
        if method not in METHODS:
            raise ValueError(f"method: expected one of {METHODS}, received {method!r}")
        if method != "base" and critic is None:
            raise ValueError(f"method {method!r}: expected a critic, received None")
        self.den, self.critic, self.method, self.k, self.eta, self.task = den, critic, method, int(k), float(eta), task
        self.reset(0)

    @property
    def source(self) -> str:
        return f"{self.method}(k={self.k}, eta={self.eta})"

    def reset(self, n: int) -> None:
        d = self.den
        self._allocate(n, d.obs_horizon, d.obs_dim, d.action_horizon, d.action_dim)

    def _chunks(self, need: np.ndarray) -> np.ndarray:
        gens = [self._gens[s] for s in need.tolist()]
        task = None if self.task is None else torch.full((need.size,), int(self.task), dtype=torch.long)
        x0 = guided_chunks(self.method, self.den, self.critic, self._hist[need], self.k, self.eta, gens, task)
        return self.den.to_actions(x0).to(torch.float32).numpy()


def evals_per_chunk(method: Method, steps: int, k: int, eta: float) -> dict[str, int]:
    """Network evaluations per chunk predicted by the algorithm (the counters measure the same)."""
    stochastic = steps - 1 if eta > 0 else 0   # the last DDIM step is deterministic
    if method == "base":
        return {"denoiser": steps, "critic": 0}
    if method == "terminal":
        return {"denoiser": k * steps, "critic": k if k > 1 else 0}
    return {"denoiser": steps, "critic": k * stochastic if k > 1 else 0}


def matched_terminal_k(steps: int, k: int, eta: float, critic_cost: float) -> int:
    """The smallest terminal best-of-k' whose cost per chunk reaches step-wise best-of-``k``'s."""
    sw = evals_per_chunk("stepwise", steps, k, eta)
    budget = sw["denoiser"] + critic_cost * sw["critic"]
    kk = 1
    while kk * steps + critic_cost * kk < budget:
        kk += 1
    return kk


__all__ = ["stepwise_sample", "terminal_best_of_k", "base_sample", "guided_chunks", "critic_score_fn",
           "CriticGuidedBatchPolicy", "evals_per_chunk", "matched_terminal_k", "METHODS"]
