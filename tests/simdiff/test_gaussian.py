from __future__ import annotations

import math

import pytest
import torch

from simdiff.processes import gaussian as G


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------------------------ schedules
def test_linear_schedule_properties():
    s = G.make_schedule("linear", 1000)
    assert s.num_steps == 1000 and s.kind == "linear"
    assert s.betas.dtype == torch.float32 and s.betas.shape == (1000,)
    assert s.betas[0].item() == pytest.approx(1e-4) and s.betas[-1].item() == pytest.approx(2e-2)
    assert torch.all(s.alpha_bars[1:] < s.alpha_bars[:-1])                    # strictly decreasing
    assert 0 < s.alpha_bars[-1] < 1e-4                                        # ~ pure noise at the end
    assert torch.allclose(s.alphas, 1 - s.betas)
    ab64 = torch.cumprod(1 - torch.linspace(1e-4, 2e-2, 1000, dtype=torch.float64), 0)
    assert torch.allclose(s.alpha_bars.double(), ab64, rtol=1e-6, atol=0)     # computed in float64
    assert s.alpha_bars_prev[0] == 1 and torch.equal(s.alpha_bars_prev[1:], s.alpha_bars[:-1])
    assert s.posterior_variance[0] == 0 and torch.all(s.posterior_variance[1:] > 0)
    assert torch.all(s.posterior_variance[1:] <= s.betas[1:])                 # beta_tilde <= beta
    moved = s.to("cpu")
    assert moved.num_steps == 1000 and torch.equal(moved.alpha_bars, s.alpha_bars)


def test_cosine_schedule_matches_closed_form():
    n = 100
    s = G.make_schedule("cosine", n)
    u = torch.arange(1, n + 1, dtype=torch.float64) / n
    f = torch.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2 / math.cos(0.008 / 1.008 * math.pi / 2) ** 2
    unclipped = s.betas < 0.999
    assert unclipped[:-1].all() and not unclipped[-1]                         # only the last beta is clipped
    assert torch.allclose(s.alpha_bars.double()[:-1], f[:-1], rtol=1e-5)
    assert s.betas.max().item() == pytest.approx(0.999)
    assert torch.all(s.betas[1:] >= s.betas[:-1])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kind": "quadratic", "num_steps": 10}, "expected 'linear' or 'cosine', received 'quadratic'"),
        ({"kind": "linear", "num_steps": 0}, r"num_steps: expected an int >= 1, received 0"),
        ({"kind": "linear", "num_steps": 10.0}, r"num_steps: expected an int >= 1, received 10.0"),
        ({"kind": "linear", "num_steps": 10, "beta_start": 0.1, "beta_end": 0.01}, "beta_start <= beta_end"),
        ({"kind": "linear", "num_steps": 10, "beta_end": 1.0}, "beta_end < 1"),
    ],
)
def test_schedule_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        G.make_schedule(**kwargs)


def test_schedule_from_betas_rejects_bad_values():
    with pytest.raises(ValueError, match=r"expected values in \(0, 1\)"):
        G.schedule_from_betas(torch.tensor([0.1, 1.0]))


# ---------------------------------------------------------------------------------------- forward process
@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_forward_marginal_moments_match_closed_form(kind):
    """x0 ~ N(m, s^2) per coordinate -> x_t has mean sqrt(ab) m and variance ab s^2 + 1 - ab."""
    sched = G.make_schedule(kind, 200)
    g = _gen(1)
    n, m, sd = 200_000, 1.5, 0.5
    for step in (0, 50, 120, 199):
        x0 = m + sd * torch.randn(n, 1, generator=g, dtype=torch.float64)
        noise = torch.randn(n, 1, generator=g, dtype=torch.float64)
        xt = G.corrupt(x0, torch.full((n,), step), noise, sched)
        ab = sched.alpha_bars[step].double().item()
        mean, var = math.sqrt(ab) * m, ab * sd**2 + 1 - ab
        # 5 standard errors of the Monte Carlo estimates (var of a sample variance ~ 2 var^2 / n).
        assert abs(xt.mean().item() - mean) < 5 * math.sqrt(var / n)
        assert abs(xt.var().item() - var) < 5 * var * math.sqrt(2 / n)


def test_corrupt_broadcasts_over_trailing_shape_and_mixed_steps():
    sched = G.make_schedule("linear", 50)
    x0 = torch.randn(3, 2, 4, 5, generator=_gen())
    noise = torch.randn(3, 2, 4, 5, generator=_gen(1))
    t = torch.tensor([0, 25, 49])
    xt = G.corrupt(x0, t, noise, sched)
    for b in range(3):
        ab = sched.alpha_bars[t[b]]
        assert torch.allclose(xt[b], ab.sqrt() * x0[b] + (1 - ab).sqrt() * noise[b])


def test_step_validation_messages():
    sched = G.make_schedule("linear", 10)
    x = torch.zeros(4, 2)
    with pytest.raises(ValueError, match=r"t: expected steps in \[0, 9\], received min 0, max 10"):
        G.corrupt(x, torch.tensor([0, 1, 2, 10]), x, sched)
    with pytest.raises(ValueError, match=r"t: expected an int or an integer tensor of shape \(4,\)"):
        G.corrupt(x, torch.zeros(4), x, sched)
    with pytest.raises(ValueError, match=r"noise: expected shape \(4, 2\)"):
        G.corrupt(x, torch.zeros(4, dtype=torch.long), torch.zeros(4, 3), sched)
    with pytest.raises(ValueError, match="prediction: expected one of"):
        G.prediction_target(x, x, torch.zeros(4, dtype=torch.long), sched, "score")


@pytest.mark.parametrize("prediction", ["epsilon", "v", "x0"])
@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_prediction_conversions_round_trip(prediction, kind):
    sched = G.make_schedule(kind, 100)
    x0 = torch.randn(100, 3, generator=_gen(), dtype=torch.float64)
    eps = torch.randn(100, 3, generator=_gen(1), dtype=torch.float64)
    t = torch.arange(100)
    xt = G.corrupt(x0, t, eps, sched)
    target = G.prediction_target(x0, eps, t, sched, prediction)
    x0_hat, eps_hat = G.to_x0_eps(target, xt, t, sched, prediction)
    # float64 data: exact up to rounding, even at the last cosine step where sqrt(alpha_bar) ~ 5e-4.
    assert torch.allclose(x0_hat, x0, atol=1e-8) and torch.allclose(eps_hat, eps, atol=1e-8)
    assert torch.equal(G.loss(target, x0, eps, t, sched, prediction), torch.zeros(100, dtype=torch.float64))


def test_v_target_and_loss_are_unreduced_per_sample():
    sched = G.make_schedule("cosine", 20)
    x0, eps = torch.randn(5, 2, 3, generator=_gen()), torch.randn(5, 2, 3, generator=_gen(1))
    t = torch.tensor([0, 3, 7, 11, 19])
    ab = sched.alpha_bars[t].view(5, 1, 1)
    assert torch.allclose(G.prediction_target(x0, eps, t, sched, "v"), ab.sqrt() * eps - (1 - ab).sqrt() * x0)
    out = torch.randn(5, 2, 3, generator=_gen(2))
    per_sample = G.loss(out, x0, eps, t, sched, "epsilon")
    assert per_sample.shape == (5,)
    assert torch.allclose(per_sample, ((out - eps) ** 2).mean(dim=(1, 2)))


# ------------------------------------------------------------------------------------------- single steps
def test_ddpm_step_is_deterministic_at_t0_and_seeded_otherwise():
    sched = G.make_schedule("linear", 50)
    x, out = torch.randn(8, 2, generator=_gen()), torch.randn(8, 2, generator=_gen(1))
    a = G.ddpm_step(out, x, 0, sched, "epsilon", generator=_gen(5))
    b = G.ddpm_step(out, x, 0, sched, "epsilon", generator=_gen(6))
    assert torch.equal(a, b)
    a = G.ddpm_step(out, x, 10, sched, "epsilon", generator=_gen(5))
    b = G.ddpm_step(out, x, 10, sched, "epsilon", generator=_gen(5))
    c = G.ddpm_step(out, x, 10, sched, "epsilon", generator=_gen(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    mean, std = G.ddpm_step_mean_std(out, x, 10, sched, "epsilon")
    assert std.shape == (8, 1) and torch.allclose(std.squeeze(1), sched.posterior_variance[10].sqrt())


def test_ddim_with_eta_one_on_consecutive_steps_is_the_ddpm_step():
    """Song et al.: sigma(eta=1) between consecutive steps equals the DDPM posterior std, same mean."""
    sched = G.make_schedule("cosine", 40)
    x, out = torch.randn(16, 3, generator=_gen()), torch.randn(16, 3, generator=_gen(1))
    for step in (1, 17, 39):
        for pred in ("epsilon", "v", "x0"):
            m1, s1 = G.ddpm_step_mean_std(out, x, step, sched, pred)
            m2, s2 = G.ddim_step_mean_std(out, x, step, step - 1, sched, pred, eta=1.0)
            assert torch.allclose(m1, m2, atol=1e-5, rtol=1e-4) and torch.allclose(s1, s2, atol=1e-6)


def test_ddim_step_to_clean_data_returns_x0_hat():
    sched = G.make_schedule("linear", 30)
    x, x0 = torch.randn(4, 2, generator=_gen()), torch.randn(4, 2, generator=_gen(1))
    assert torch.allclose(G.ddim_step(x0, x, 12, -1, sched, "x0"), x0)
    assert torch.equal(G.ddim_step(x0, x, 12, -1, sched, "x0", clip=0.5), x0.clamp(-0.5, 0.5))
    with pytest.raises(ValueError, match="t_prev < t"):
        G.ddim_step(x0, x, 12, 12, sched, "x0")


def test_gaussian_step_logprob_matches_torch_normal():
    mean, x = torch.randn(6, 2, 3, generator=_gen()), torch.randn(6, 2, 3, generator=_gen(1))
    std = torch.rand(6, 1, 1, generator=_gen(2)) + 0.1
    ref = torch.distributions.Normal(mean, std.expand_as(mean)).log_prob(x).sum(dim=(1, 2))
    assert torch.allclose(G.gaussian_step_logprob(x, mean, std), ref, atol=1e-5)
    with pytest.raises(ValueError, match="expected positive values"):
        G.gaussian_step_logprob(x, mean, torch.zeros(6, 1, 1))


def test_ddim_timesteps():
    assert G.ddim_timesteps(10, 10).tolist() == list(range(9, -1, -1))
    assert G.ddim_timesteps(100, 1).tolist() == [99]
    for n_train, n in ((1000, 3), (100, 7), (100, 99), (37, 36), (1000, 999)):
        ts = G.ddim_timesteps(n_train, n)
        assert ts.dtype == torch.long and len(ts) == n
        assert ts[0] == n_train - 1 and ts[-1] == 0
        assert torch.all(ts[:-1] > ts[1:])                                    # strictly descending
        gaps = ts[:-1] - ts[1:]
        assert gaps.max() - gaps.min() <= 1                                   # evenly spaced
    with pytest.raises(ValueError, match="expected at most num_train_steps=10, received 11"):
        G.ddim_timesteps(10, 11)


# ------------------------------------------------------------------------------------------ sampling loops
def test_ddim_with_exact_x0_oracle_reproduces_data(oracles):
    """With the exact denoiser E[x0|x_t] of a finite data set, deterministic DDIM lands on data points."""
    sched = G.make_schedule("cosine", 100)
    points = torch.tensor([[-1.0, 0.5], [0.3, -0.8], [1.2, 1.1]])
    fn = oracles["dataset_x0"](points, sched)
    x = G.ddim_sample(fn, (300, 2), sched, "x0", 50, _gen())
    dist = torch.cdist(x, points).min(dim=1).values
    assert dist.max() < 1e-3
    # ... and each point is reached about equally often (the data are equally weighted).
    counts = torch.bincount(torch.cdist(x, points).argmin(1), minlength=3) / 300
    assert torch.all((counts - 1 / 3).abs() < 0.1)
    # A single point: every sample is exactly that point, under every parameterisation.
    one = points[:1]
    fx0 = oracles["dataset_x0"](one, sched)
    for pred in ("epsilon", "v", "x0"):
        def fn_pred(x, t, pred=pred):
            x0 = fx0(x, t)
            eps = (x - sched.alpha_bars[t].sqrt()[:, None] * x0) / (1 - sched.alpha_bars[t]).sqrt()[:, None]
            return G.prediction_target(x0, eps, t, sched, pred)
        out = G.ddim_sample(fn_pred, (64, 2), sched, pred, 10, _gen(3))
        assert torch.allclose(out, one.expand(64, 2), atol=1e-4), pred


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_samplers_with_exact_gmm_score_recover_the_mixture(oracles, sampler):
    weights = torch.tensor([0.2, 0.3, 0.5])
    means = torch.tensor([[-2.0, 0.0], [2.0, 0.0], [0.0, 2.0]])
    covs = torch.tensor([[[0.1, 0.05], [0.05, 0.1]], [[0.05, 0.0], [0.0, 0.2]], [[0.1, 0.0], [0.0, 0.1]]])
    sched = G.make_schedule("cosine", 100)
    fn = oracles["gmm_eps"](weights, means, covs, sched)
    n = 4000
    if sampler == "ddim":
        x = G.ddim_sample(fn, (n, 2), sched, "epsilon", 50, _gen(7))  # 25 steps: mean bias ~0.06
    else:
        x = G.ddpm_sample(fn, (n, 2), sched, "epsilon", _gen(7))
    assign = torch.cdist(x, means).argmin(1)
    for k in range(3):
        xk = x[assign == k]
        assert abs(xk.shape[0] / n - weights[k].item()) < 0.03                # 4 sigma at n = 4000
        assert torch.linalg.norm(xk.mean(0) - means[k]) < 0.05
        assert torch.linalg.norm(torch.cov(xk.T) - covs[k]) < 0.05


def test_sampling_loops_callback_x_T_and_determinism():
    sched = G.make_schedule("linear", 20, beta_end=0.2)
    calls = []

    def fn(x, t):
        assert t.dtype == torch.long and t.shape == (x.shape[0],)
        return 0.1 * x

    x_T = torch.randn(5, 3, generator=_gen(9))
    a = G.ddpm_sample(fn, (5, 3), sched, "epsilon", _gen(1), callback=calls.append, x_T=x_T)
    b = G.ddpm_sample(fn, (5, 3), sched, "epsilon", _gen(1), x_T=x_T)
    assert torch.equal(a, b)
    assert [c["t"] for c in calls] == list(range(19, -1, -1)) and torch.equal(calls[-1]["x"], a)
    assert set(calls[0]) == {"i", "t", "x", "x0_hat"}
    calls.clear()
    d1 = G.ddim_sample(fn, (5, 3), sched, "epsilon", 4, _gen(2), callback=calls.append)
    d2 = G.ddim_sample(fn, (5, 3), sched, "epsilon", 4, _gen(2))
    d3 = G.ddim_sample(fn, (5, 3), sched, "epsilon", 4, _gen(3))
    assert torch.equal(d1, d2) and not torch.equal(d1, d3)
    assert [c["t"] for c in calls] == G.ddim_timesteps(20, 4).tolist()
    e1 = G.ddim_sample(fn, (5, 3), sched, "epsilon", 4, _gen(2), eta=1.0)
    assert not torch.equal(e1, d1)                                            # eta > 0 adds noise
    with pytest.raises(ValueError, match=r"x_T: expected shape \(5, 3\), received \(5, 2\)"):
        G.ddim_sample(fn, (5, 3), sched, "epsilon", 4, _gen(2), x_T=torch.zeros(5, 2))
