"""Shared fixtures for the engine tests: exact denoisers for data with closed-form noisy marginals."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from simdiff.processes.gaussian import GaussianSchedule


def gmm_eps_oracle(weights: Tensor, means: Tensor, covs: Tensor, sched: GaussianSchedule):
    """``model_fn(x_t, t) -> eps``, exact for data ~ sum_k w_k N(mu_k, S_k).

    ``x_t ~ sum_k w_k N(sqrt(ab) mu_k, ab S_k + (1 - ab) I)`` and ``eps = -sqrt(1 - ab) grad log p_t(x_t)``.
    """
    w, mu, cov = weights.double(), means.double(), covs.double()
    eye = torch.eye(mu.shape[1], dtype=torch.float64)
    ab_all = sched.alpha_bars.double()

    def fn(x: Tensor, t: Tensor) -> Tensor:
        # The samplers call with one step for the whole batch: invert the K covariances once.
        if not torch.all(t == t[0]):
            return torch.cat([fn(x[i:i + 1], t[i:i + 1]) for i in range(x.shape[0])])
        ab = ab_all[t[0]]
        d = x.double()[:, None, :] - ab.sqrt() * mu[None]                          # (B, K, D)
        cinv = torch.linalg.inv(ab * cov + (1 - ab) * eye)                         # (K, D, D)
        cinv_d = torch.einsum("kij,bkj->bki", cinv, d)
        logp = torch.log(w)[None] - 0.5 * (d * cinv_d).sum(-1) + 0.5 * torch.logdet(cinv)[None]
        r = torch.softmax(logp, dim=1)                                             # responsibilities
        score = -(r[..., None] * cinv_d).sum(1)
        return (-(1 - ab).sqrt() * score).to(x.dtype)

    return fn


def dataset_x0_oracle(points: Tensor, sched: GaussianSchedule):
    """``model_fn(x_t, t) -> E[x0 | x_t]``, exact when the data is the finite set ``points (M, D)``."""
    pts = points.double()
    ab_all = sched.alpha_bars.double()

    def fn(x: Tensor, t: Tensor) -> Tensor:
        ab = ab_all[t][:, None]                                                    # (B, 1)
        d2 = ((x.double()[:, None, :] - ab.sqrt()[:, :, None] * pts[None]) ** 2).sum(-1)
        r = torch.softmax(-d2 / (2 * (1 - ab)), dim=1)                             # posterior over points
        return (r @ pts).to(x.dtype)

    return fn


@pytest.fixture
def oracles():
    return {"gmm_eps": gmm_eps_oracle, "dataset_x0": dataset_x0_oracle}


@pytest.fixture
def one_thread():
    """Run a test with one intra-op thread (bit-exact comparisons), restoring the previous count."""
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)
