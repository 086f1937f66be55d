"""Routed mixtures: weights of the routing modes, and the mixture identity on analytic Gaussian-mixture data.

Data ``x0 ~ sum_k pi_k N(mu_k, s_k^2 I)``; cluster ``k``'s noisy marginal is Gaussian, so its exact expert
(epsilon or x0) and the exact posterior ``p(k | x_t)`` are closed-form. The mixture's own epsilon is computed
independently, as ``-sqrt(1 - ab) grad log p_t(x_t)`` by autograd of the mixture density.
"""

from __future__ import annotations

import math

import pytest
import torch

from simdiff.pipelines.ddm.mixture import MixtureStats, combine, mixture_fn, routing_weights
from simdiff.processes import gaussian as gs
from simdiff.processes import spectral as sp

PI = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
MU = torch.tensor([[-2.0, 0.5], [1.5, 1.5], [0.5, -2.0]], dtype=torch.float64)
SIG2 = torch.tensor([0.3, 0.6, 0.15], dtype=torch.float64)


def _cluster_logpdf(x: torch.Tensor, a, s2, mu, var) -> torch.Tensor:
    """log N(x; a mu_k, a^2 var_k + s2) per cluster -> (B, K); elementwise variances broadcast over dims."""
    v = a**2 * var + s2                                             # (K, D) or (K, 1)
    d = x[:, None, :] - a * mu[None]
    return (-0.5 * d**2 / v - 0.5 * torch.log(2 * math.pi * v)).sum(-1)


def _posterior(x, a, s2, mu, var, pi):
    return torch.softmax(torch.log(pi)[None] + _cluster_logpdf(x, a, s2, mu, var), dim=1)


def _expert_eps(k, a, s2, mu, var):
    # E[eps | x_t, k] = sqrt(s2) (x_t - a mu_k) / (a^2 var_k + s2)
    return lambda x, t: s2.sqrt() * (x - a * mu[k]) / (a**2 * var[k] + s2)


def _mixture_eps_autograd(x, a, s2, mu, var, pi):
    with torch.enable_grad():  # the samplers run under no_grad
        x = x.detach().clone().requires_grad_(True)
        logp = torch.logsumexp(torch.log(pi)[None] + _cluster_logpdf(x, a, s2, mu, var), dim=1).sum()
        (score,) = torch.autograd.grad(logp, x)
    return -s2.sqrt() * score


# ------------------------------------------------------------------------------------------- routing modes
def test_routing_weights_modes():
    p = torch.tensor([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3], [0.4, 0.4, 0.2]], dtype=torch.float64)
    assert torch.allclose(routing_weights(p, "full"), p)
    top1 = routing_weights(p, "top1")
    assert torch.equal(top1, torch.tensor([[0.0, 1, 0], [1, 0, 0], [1, 0, 0]], dtype=torch.float64))  # tie -> lower
    top2 = routing_weights(p, "top2")
    assert torch.allclose(top2, torch.tensor([[0, 2 / 3, 1 / 3], [5 / 8, 0, 3 / 8], [0.5, 0.5, 0]],
                                             dtype=torch.float64))
    assert torch.allclose(top2.sum(1), torch.ones(3, dtype=torch.float64))
    one = torch.ones(4, 1, dtype=torch.float64)
    for mode in ("full", "top1", "top2"):
        assert torch.equal(routing_weights(one, mode), one)
    with pytest.raises(ValueError, match="routing"):
        routing_weights(p, "top3")
    with pytest.raises(ValueError, match="non-negative"):
        routing_weights(-p, "full")


def test_combine_and_stats_count_only_routed_rows():
    calls = []

    def expert(k):
        def fn(x, t):
            calls.append((k, x.shape[0]))
            return torch.full_like(x, float(k))
        return fn
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.2, 0.5, 0.3], [0.9, 0.05, 0.05]], dtype=torch.float64)
    stats = MixtureStats(3)
    fn = mixture_fn([expert(k) for k in range(3)], lambda x, t: probs, "top1", stats)
    out = fn(torch.zeros(4, 2, dtype=torch.float64), torch.zeros(4, dtype=torch.long))
    assert out[:, 0].tolist() == [0.0, 2.0, 1.0, 0.0]
    assert sorted(calls) == [(0, 2), (1, 1), (2, 1)]                # each row evaluated by one expert only
    assert stats.summary()["expert_evals_per_row"] == 1.0
    calls.clear()
    fn2 = mixture_fn([expert(k) for k in range(3)], lambda x, t: probs, "top2")
    out2 = fn2(torch.zeros(4, 2, dtype=torch.float64), torch.zeros(4, dtype=torch.long))
    assert sum(n for _, n in calls) == 8
    assert torch.allclose(out2[:, 0], combine([torch.full((4,), float(k), dtype=torch.float64) for k in range(3)],
                                              routing_weights(probs, "top2")))


# ------------------------------------------------------------------------------------------ Gaussian process
@pytest.mark.parametrize("t_step", [3, 20, 45])
def test_full_routing_with_exact_posterior_is_the_mixture_epsilon(t_step):
    sched = gs.make_schedule("cosine", 50)
    ab = sched.alpha_bars.double()[t_step]
    a, s2 = ab.sqrt(), 1 - ab
    var = SIG2[:, None]
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(t_step), dtype=torch.float64) * 2
    t = torch.full((64,), t_step, dtype=torch.long)
    experts = [_expert_eps(k, a, s2, MU, var) for k in range(3)]
    fn = mixture_fn(experts, lambda x, t: _posterior(x, a, s2, MU, var, PI), "full")
    exact = _mixture_eps_autograd(x, a, s2, MU, var, PI)
    assert torch.allclose(fn(x, t), exact, atol=1e-12, rtol=0)
    # ... and in x0 parameterisation: experts E[x0 | x_t, k], mixture E[x0 | x_t] = (x_t - sqrt(1-ab) eps) / sqrt(ab)
    def x0_expert(eps_fn):
        return lambda x, t: (x - s2.sqrt() * eps_fn(x, t)) / a
    x0_experts = [x0_expert(e) for e in experts]
    fx0 = mixture_fn(x0_experts, lambda x, t: _posterior(x, a, s2, MU, var, PI), "full")
    assert torch.allclose(fx0(x, t), (x - s2.sqrt() * exact) / a, atol=1e-11, rtol=0)
    # top-1 is not the mixture where the posterior is spread out (the identity test can fail)
    top1 = mixture_fn(experts, lambda x, t: _posterior(x, a, s2, MU, var, PI), "top1")(x, t)
    assert (top1 - exact).abs().max() > 1e-3


def test_full_mixture_sampler_matches_exact_mixture_sampler():
    """DDIM with the routed exact experts follows the same trajectory as DDIM with the exact mixture epsilon."""
    sched = gs.make_schedule("cosine", 40)
    abs_ = sched.alpha_bars.double()
    var = SIG2[:, None]

    def coef(t):
        ab = abs_[t[0]]
        return ab.sqrt(), 1 - ab

    def expert(k):
        return lambda x, t: _expert_eps(k, *coef(t), MU, var)(x, t)

    def router(x, t):
        return _posterior(x, *coef(t), MU, var, PI)

    def exact(x, t):
        return _mixture_eps_autograd(x, *coef(t), MU, var, PI)
    x_T = torch.randn(256, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    mix = gs.ddim_sample(mixture_fn([expert(k) for k in range(3)], router, "full"), (256, 2), sched, "epsilon",
                         20, None, x_T=x_T)
    ref = gs.ddim_sample(exact, (256, 2), sched, "epsilon", 20, None, x_T=x_T)
    assert torch.allclose(mix, ref, atol=1e-9)
    # the samples land on the clusters in about the right proportions (the identity is not vacuous)
    d = ((mix[:, None, :] - MU[None]) ** 2).sum(-1).argmin(1)
    frac = torch.bincount(d, minlength=3).double() / 256
    assert torch.allclose(frac, PI, atol=0.1)


# ------------------------------------------------------------------------------------------ spectral process
def test_full_routing_is_exact_for_the_spectral_process():
    """Per-mode Gaussian clusters under SKILD's forward process; experts predict pixel-space epsilon."""
    L = 4
    lam = sp.make_lambdas(20, "loglinear", -2.0, 0.0)
    proc = sp.make_process(L, "dct", lam, (1.0, 0.9, 2.0), k_c=math.pi)
    g = torch.Generator().manual_seed(1)
    mu = torch.randn(3, L * L, generator=g, dtype=torch.float64)            # cluster means, mode space
    var = 0.1 + torch.rand(3, L * L, generator=g, dtype=torch.float64)      # per-mode variances
    n = 7
    a_modes, s_modes = sp.marginal_std(proc, torch.tensor([n]))
    a, s = a_modes.reshape(-1), s_modes.reshape(-1)                          # (L*L,)
    s2 = s**2

    def to_pix(m):
        return sp.from_modes(m.reshape(-1, 1, L, L), "dct")

    def to_mode(x):
        return sp.to_modes(x, "dct").reshape(x.shape[0], -1)

    def expert(k):
        # eps in mode space is eps_modes = (X_n - a X0) / s; E[. | X_n, k] = s (X_n - a mu_k) / (a^2 var_k + s^2)
        return lambda x, t: to_pix(s * (to_mode(x) - a * mu[k]) / (a**2 * var[k] + s2))

    def router(x, t):
        return _posterior(to_mode(x), a, s2, mu, var, PI)
    xm = torch.randn(32, L * L, generator=g, dtype=torch.float64) * 1.5
    x = to_pix(xm)
    t = torch.full((32,), n, dtype=torch.long)
    got = mixture_fn([expert(k) for k in range(3)], router, "full")(x, t)
    xg = xm.clone().requires_grad_(True)
    logp = torch.logsumexp(torch.log(PI)[None] + _cluster_logpdf(xg, a, s2, mu, var), dim=1).sum()
    (score,) = torch.autograd.grad(logp, xg)
    assert torch.allclose(got, to_pix(-s * score), atol=1e-11, rtol=0)


@pytest.mark.parametrize("kind", ["spectral", "gaussian"])
def test_lattice_mixture_of_one_model_matches_skild_generate(kind):
    """Both lattice processes: the routed sampler follows ``skild.core.generate``'s noise stream exactly."""
    from pathlib import Path

    from simdiff.config import load_config
    from simdiff.pipelines.ddm.lattice import sample_mixture
    from simdiff.pipelines.ddm.router import LatticeRouter
    from simdiff.pipelines.skild import core
    from simdiff.pipelines.skild.config import SkildConfig

    cfg = load_config(SkildConfig, {"data": {"L": 8}, "process": {"kind": kind, "num_steps": 30},
                                    "model": {"base_channels": 4, "channel_mults": [1, 2], "time_dim": 8},
                                    "sample": {"steps": 4}})
    torch.manual_seed(0)
    model = core.SkildModel(cfg, core.build_net(cfg).eval(), (1.0, 0.9, 2.0), {}, Path("."))
    router = LatticeRouter(3, channels=4, depth=1, hidden=8, time_dim=8)
    ref = core.generate(model, 6, seed=2, batch_size=4)
    assert torch.equal(sample_mixture([model] * 3, router, "top1", 6, seed=2, batch_size=4), ref)
    assert torch.allclose(sample_mixture([model] * 3, router, "full", 6, seed=2, batch_size=4), ref, atol=1e-4)
