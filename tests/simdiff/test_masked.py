from __future__ import annotations

import itertools
import math

import pytest
import torch

from simdiff.processes import masked as md

# A small data distribution over sequences of length 4 with vocabulary 3 and strong correlations between
# positions, so a sampler that draws positions independently is visibly wrong.
TABLE = torch.tensor([[0, 1, 2, 0], [0, 1, 2, 1], [2, 2, 0, 1], [1, 0, 0, 2], [2, 2, 2, 2], [1, 1, 1, 1]])
WEIGHTS = torch.tensor([0.3, 0.1, 0.2, 0.15, 0.15, 0.1], dtype=torch.float64)
V = 3
MASK = V
L = TABLE.shape[1]


def exact_denoiser(z: torch.Tensor, t: torch.Tensor, cond=None) -> torch.Tensor:
    """The exact p(x0^l | z_t) by enumeration: the posterior over table rows is p_data restricted to rows that
    agree with z on unmasked positions (masking is symmetric, so t cancels)."""
    compat = ((z[:, None, :] == MASK) | (z[:, None, :] == TABLE[None])).all(-1)  # (b, rows)
    post = WEIGHTS[None] * compat
    post = post / post.sum(1, keepdim=True)
    onehot = torch.nn.functional.one_hot(TABLE, V).double()  # (rows, L, V)
    marg = torch.einsum("br,rlv->blv", post, onehot)
    logits = torch.log(marg.clamp_min(1e-30)).float()
    return torch.cat([logits, torch.zeros(*z.shape, 1)], dim=-1)


def empirical(samples: torch.Tensor) -> torch.Tensor:
    """Frequencies of each table row, with one extra bucket for sequences outside the table."""
    match = (samples[:, None, :] == TABLE[None]).all(-1)
    counts = torch.cat([match.sum(0), (~match.any(1)).sum().view(1)]).double()
    return counts / samples.shape[0]


def tv(p: torch.Tensor, q: torch.Tensor) -> float:
    return 0.5 * float((p - q).abs().sum())


def test_schedule_and_weight_is_one_over_t():
    t = torch.linspace(0.01, 1.0, 50)
    assert torch.allclose(md.alpha(torch.tensor([0.0, 1.0])), torch.tensor([1.0, md.EPS]))
    assert torch.allclose(md.elbo_weight(t), 1.0 / t, rtol=1e-5)


def test_sample_t_antithetic_is_stratified_and_in_range():
    g = torch.Generator().manual_seed(0)
    t = md.sample_t(64, g)
    assert t.min() >= md.EPS and t.max() <= 1.0
    u = (t - md.EPS) / (1 - md.EPS)
    # one draw per stratum [i/n, (i+1)/n)
    assert torch.equal(torch.sort((u * 64).floor().long()).values, torch.arange(64))
    plain = md.sample_t(64, g, antithetic=False)
    assert not torch.equal(torch.sort((((plain - md.EPS) / (1 - md.EPS)) * 64).floor().long()).values,
                           torch.arange(64))


def test_corrupt_masks_at_rate_one_minus_alpha():
    g = torch.Generator().manual_seed(1)
    x0 = torch.randint(0, V, (4000, 16), generator=g)
    t = torch.full((4000,), 0.3)
    z = md.corrupt(x0, t, MASK, g)
    rate = (z == MASK).double().mean().item()
    assert abs(rate - (1 - md.alpha(torch.tensor(0.3)).item())) < 0.01
    assert torch.equal(z[z != MASK], x0[z != MASK])
    with pytest.raises(ValueError, match="expected clean tokens"):
        md.corrupt(torch.full((2, 3), MASK), torch.ones(2), MASK)


def test_subs_zero_mask_probability_and_carry_over():
    g = torch.Generator().manual_seed(2)
    z = torch.tensor([[MASK, 1, MASK, 0]])
    logp = md.subs_log_probs(torch.randn(1, 4, V + 1, generator=g), z, MASK)
    p = logp.exp()
    assert torch.allclose(p.sum(-1), torch.ones(1, 4))
    assert torch.all(p[..., MASK] == 0)
    assert p[0, 1, 1] == 1 and p[0, 3, 0] == 1
    with pytest.raises(ValueError, match="V \\+ 1 classes"):
        md.subs_log_probs(torch.randn(1, 4, V), z, MASK)


def test_sampler_with_exact_model_reproduces_the_table():
    g = torch.Generator().manual_seed(3)
    x = md.sample(exact_denoiser, (10000, L), mask_id=MASK, num_steps=500, generator=g)
    assert (x != MASK).all()
    target = torch.cat([WEIGHTS, torch.zeros(1, dtype=torch.float64)])
    emp = empirical(x)
    assert tv(emp, target) < 0.025, (emp, target)
    # Pearson chi-square over the table rows (off-table mass is the time-discretization error, tiny here).
    n = x.shape[0]
    chi2 = float((((emp[:-1] - WEIGHTS) * n) ** 2 / (WEIGHTS * n)).sum())
    assert chi2 < 20.5  # chi2(5) 0.999 quantile
    assert emp[-1] < 0.01


def test_one_step_sampler_draws_independent_marginals_and_is_detected():
    # With a single step every position is revealed at once from its marginal: the joint is the product of
    # marginals, far from the table. This shows the test above has power.
    g = torch.Generator().manual_seed(4)
    x = md.sample(exact_denoiser, (20000, L), mask_id=MASK, num_steps=1, generator=g)
    target = torch.cat([WEIGHTS, torch.zeros(1, dtype=torch.float64)])
    assert tv(empirical(x), target) > 0.3


def test_cache_gives_identical_samples_with_fewer_evaluations():
    calls = {True: 0, False: 0}
    outs = {}
    for cache in (True, False):
        def count(info, cache=cache):
            calls[cache] += info["rows_evaluated"]
        g = torch.Generator().manual_seed(5)
        outs[cache] = md.sample(exact_denoiser, (500, L), mask_id=MASK, num_steps=64, generator=g, cache=cache,
                                callback=count)
    assert torch.equal(outs[True], outs[False])
    assert calls[False] == 500 * 64
    assert calls[True] <= 500 * (L + 1)  # at most one evaluation per reveal event, plus the first


def test_cache_refused_for_time_conditioned_denoiser():
    def den(z, t, cond=None):
        return exact_denoiser(z, t)
    den.time_conditioned = True
    with pytest.raises(ValueError, match="time_conditioned"):
        md.sample(den, (2, L), mask_id=MASK, num_steps=4)
    x = md.sample(den, (2, L), mask_id=MASK, num_steps=4, cache=False, generator=torch.Generator().manual_seed(0))
    assert (x != MASK).all()


def test_confidence_order_unmasks_one_consistent_token_at_a_time():
    g = torch.Generator().manual_seed(6)
    x = md.sample(exact_denoiser, (2000, L), mask_id=MASK, num_steps=50, generator=g, order="confidence")
    # Each revealed token has positive probability given the revealed ones, so every sample is a table row.
    assert empirical(x)[-1] == 0
    x0 = md.sample(exact_denoiser, (3, L), mask_id=MASK, num_steps=8, order="confidence", temperature=0.0)
    assert torch.equal(x0, md.sample(exact_denoiser, (3, L), mask_id=MASK, num_steps=8, order="confidence",
                                     temperature=0.0))


def test_sampler_uses_conditioning_rows():
    def den(z, t, cond):
        # Condition picks which token is certain everywhere.
        return torch.nn.functional.one_hot(cond[:, None].expand_as(z), V + 1).float() * 50
    cond = torch.tensor([0, 2, 1, 2])
    x = md.sample(den, (4, 5), mask_id=MASK, num_steps=3, cond=cond, generator=torch.Generator().manual_seed(0))
    assert torch.equal(x, cond[:, None].expand(4, 5))
    with pytest.raises(ValueError, match="leading dimension 4"):
        md.sample(den, (4, 5), mask_id=MASK, num_steps=3, cond=cond[:3])


def _exact_nelbo(denoiser, x0: torch.Tensor) -> torch.Tensor:
    """Continuous-time NELBO (nats/token) by enumerating every mask set: sum_k (1/k) mean_{|S|=k} sum_{l in S}."""
    B, n = x0.shape
    total = torch.zeros(B, dtype=torch.float64)
    for k in range(1, n + 1):
        subsets = list(itertools.combinations(range(n), k))
        for S in subsets:
            masked = torch.zeros(B, n, dtype=torch.bool)
            masked[:, list(S)] = True
            nll = md._masked_nll(denoiser, x0, masked, torch.full((B,), 0.5), None, MASK)
            total += nll.sum(1).double() / (k * len(subsets))
    return total / n


def _random_denoiser():
    w = torch.randn(V + 1, L, V + 1, generator=torch.Generator().manual_seed(7))

    def den(z, t, cond=None):
        # A fixed, t-independent, imperfect model: logits depend on every input token.
        oh = torch.nn.functional.one_hot(z, V + 1).float()
        return torch.einsum("bjc,clv->blv", oh, w)
    return den


def test_elbo_one_over_t_weight_matches_exact_integral_by_monte_carlo():
    den = _random_denoiser()
    x0 = TABLE
    exact = _exact_nelbo(den, x0)
    g = torch.Generator().manual_seed(8)
    n_mc = 4000
    xs = x0.repeat(n_mc, 1)
    t = md.sample_t(xs.shape[0], g)
    z = md.corrupt(xs, t, MASK, g)
    per = md.loss(den(z, t), xs, z, t, MASK).double().view(n_mc, -1)
    mc, se = per.mean(0), per.std(0) / math.sqrt(n_mc)
    # t in [eps, 1] leaves out an O(eps) sliver of the integral.
    assert torch.all((mc - exact).abs() < 4 * se + 0.01 * exact), (mc, exact, se)
    # A loss without the 1/t weight is a different quantity; the check can tell them apart.
    unweighted = (per * t.double().view(n_mc, -1)).mean(0)
    assert torch.all((unweighted - exact).abs() > 8 * se)


def test_nll_bound_estimators_agree_and_equal_true_nll_for_exact_model():
    den = _random_denoiser()
    exact = _exact_nelbo(den, TABLE)
    g = torch.Generator().manual_seed(9)
    n = 3000
    sub = md.nll_bound(den, TABLE.repeat(n, 1), mask_id=MASK, generator=g).double().view(n, -1)
    assert torch.all((sub.mean(0) - exact).abs() < 4 * sub.std(0) / math.sqrt(n)), (sub.mean(0), exact)
    # Gauss-Legendre with L/2 nodes integrates the degree-(L-1) integrand exactly; MC only over masks.
    quad = md.nll_bound_quadrature(den, TABLE.repeat(n, 1), mask_id=MASK, num_nodes=2, num_samples=1,
                                   generator=g).double().view(n, -1)
    assert torch.all((quad.mean(0) - exact).abs() < 4 * quad.std(0) / math.sqrt(n)), (quad.mean(0), exact)
    # With exact conditionals the bound is tight: every mask order's chain rule gives -log p(x).
    true_nll = -torch.log(WEIGHTS) / L
    assert torch.allclose(_exact_nelbo(exact_denoiser, TABLE), true_nll, atol=1e-5)
    bound = md.nll_bound(exact_denoiser, TABLE.repeat(500, 1), mask_id=MASK, generator=g).view(500, -1).mean(0)
    assert torch.allclose(bound.double(), true_nll, rtol=0.05)
    assert md.nats_to_bits(math.log(2.0)) == pytest.approx(1.0)


@pytest.mark.parametrize("order", ["random", "confidence"])
def test_per_row_generators_make_rows_independent_of_the_batch(order):
    def gens(seeds):
        return [torch.Generator().manual_seed(s) for s in seeds]
    both = md.sample(exact_denoiser, (3, L), mask_id=MASK, num_steps=6, generator=gens([1, 2, 3]), order=order)
    alone = md.sample(exact_denoiser, (1, L), mask_id=MASK, num_steps=6, generator=gens([2]), order=order)
    assert torch.equal(both[1], alone[0])
    with pytest.raises(ValueError, match="sequence of 3"):
        md.sample(exact_denoiser, (3, L), mask_id=MASK, num_steps=2, generator=gens([1]))
