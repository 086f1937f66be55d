"""GRPO pieces: group-normalized advantages, PPO clipping, the KL term, updates, and both drivers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from policies.critic.adapter import PolicyDenoiser
from policies.critic.config import GrpoConfig
from policies.critic.grpo import (
    RandomScores,
    Rollouts,
    collect_rollouts,
    gaussian_kl_same_std,
    group_advantages,
    grpo_loss,
    ppo_clip_loss,
    run_grpo,
    stepwise_samples,
    terminal_samples,
    updates_to_reach,
)


def test_group_advantages_are_normalized_per_group():
    s = torch.tensor([[1.0, 2.0, 3.0, 4.0], [10.0, 10.0, 10.0, 10.0], [0.0, 0.0, 0.0, 8.0]])
    a = group_advantages(s)
    torch.testing.assert_close(a.mean(dim=1), torch.zeros(3), atol=1e-6, rtol=0)
    torch.testing.assert_close(a[[0, 2]].std(dim=1, unbiased=False), torch.ones(2), atol=1e-4, rtol=0)
    assert torch.equal(a[1], torch.zeros(4))                    # no preference inside the group: no signal
    torch.testing.assert_close(group_advantages(3.0 * s + 7.0), a, atol=1e-5, rtol=0)  # affine invariant
    assert (a[0].argsort() == torch.arange(4)).all()
    with pytest.raises(ValueError, match="k >= 2"):
        group_advantages(torch.ones(3, 1))


def test_batch_normalized_advantages_keep_the_groups_relative_spread():
    # a clear group and a near-tie: per-group std blows the near-tie up to +-1, one batch std keeps it small
    s = torch.tensor([[0.0, 0.0, 4.0, 4.0], [1.0, 1.0, 1.001, 1.001]])
    g = group_advantages(s, norm="group")
    b = group_advantages(s, norm="batch")
    torch.testing.assert_close(g.abs(), torch.ones(2, 4), atol=5e-3, rtol=0)
    torch.testing.assert_close(b.mean(dim=1), torch.zeros(2), atol=1e-6, rtol=0)
    assert b[1].abs().max() < 1e-3 < 1.0 <= b[0].abs().min()
    assert (b[0].sign() == g[0].sign()).all() and (b[1].sign() == g[1].sign()).all()   # same ranking
    torch.testing.assert_close(group_advantages(3.0 * s + 7.0, norm="batch"), b, atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="'group' or 'batch'"):
        group_advantages(s, norm="global")


def test_ppo_clip_values_and_gradients():
    logp_old = torch.zeros(4)
    # ratios 1.5, 1.5, 0.5, 0.5 with advantages +1, -1, +1, -1
    logp_new = torch.log(torch.tensor([1.5, 1.5, 0.5, 0.5])).requires_grad_(True)
    adv = torch.tensor([1.0, -1.0, 1.0, -1.0])
    loss = ppo_clip_loss(logp_new, logp_old, adv, clip_eps=0.2)
    torch.testing.assert_close(loss.detach(), torch.tensor([-1.2, 1.5, -0.5, 0.8]))
    loss.sum().backward()
    g = logp_new.grad
    # clipped where the ratio left the trust region in the advantage's favour: no gradient
    assert g[0] == 0 and g[3] == 0
    # unclipped (pessimistic side): d/dlogp of -r A = -r A
    torch.testing.assert_close(g[[1, 2]], torch.tensor([1.5, -0.5]))
    # inside the region the surrogate is -r A
    lp = torch.log(torch.tensor([1.1])).requires_grad_(True)
    ppo_clip_loss(lp, torch.zeros(1), torch.tensor([2.0]), 0.2).sum().backward()
    torch.testing.assert_close(lp.grad, torch.tensor([-2.2]))


def test_gaussian_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    m1, m2 = torch.randn(3, 4, 2, generator=g), torch.randn(3, 4, 2, generator=g)
    std = torch.tensor([0.5, 1.0, 2.0]).view(3, 1, 1)
    ref = torch.distributions.kl_divergence(torch.distributions.Normal(m1, std.expand_as(m1)),
                                            torch.distributions.Normal(m2, std.expand_as(m2))).sum(dim=(1, 2))
    torch.testing.assert_close(gaussian_kl_same_std(m1, m2, std), ref)
    assert torch.equal(gaussian_kl_same_std(m1, m1, std), torch.zeros(3))


class _ToyCritic:
    """Scores candidates by closeness to a target chunk (scaled like the forward process)."""

    def __init__(self, policy, counter):
        self.counter = counter
        self.net = torch.nn.Linear(1, 1)
        self.target = torch.linspace(-0.5, 0.5, 16).reshape(8, 2)
        self.ab = torch.cat([policy.schedule.alpha_bars, torch.ones(1)])

    def condition(self, feat, task=None):
        return feat

    def score(self, x, t, cond):
        self.counter.critic += x.shape[0]
        return -((x - self.ab[t].sqrt() * self.target) ** 2).sum(dim=(1, 2))


def test_stepwise_update_raises_the_probability_of_better_candidates(tiny_policy):
    import copy

    net = copy.deepcopy(tiny_policy.net).requires_grad_(True)
    ref = copy.deepcopy(net).requires_grad_(False)
    den = PolicyDenoiser(tiny_policy, net=net)
    critic = _ToyCritic(tiny_policy, den.counter)
    feat = tiny_policy.obs_features(torch.randn(16, 2, 20, generator=torch.Generator().manual_seed(0)))
    samples = stepwise_samples(den, critic, feat, 4, 1.0, 1e-6, torch.Generator().manual_seed(1))
    stochastic = tiny_policy.inference_steps - 1
    assert len(samples) == 16 * 4 * stochastic
    adv = samples.adv.view(-1, 4)
    torch.testing.assert_close(adv.mean(dim=1), torch.zeros(adv.shape[0]), atol=1e-4, rtol=0)
    assert (samples.x_t.view(-1, 4, 8, 2) == samples.x_t.view(-1, 4, 8, 2)[:, :1]).all()  # same x_t per group

    def objective():
        from simdiff.processes import gaussian as G

        with torch.no_grad():
            from policies.critic.grpo import step_mean_std

            mean, std = step_mean_std(den, net, samples.feat, samples.x_t, samples.t, samples.t_prev, 1.0)
            return float((samples.adv * G.gaussian_step_logprob(samples.x_prev, mean, std)).mean())

    before = objective()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in range(5):
        loss, stats = grpo_loss(den, net, ref, samples, 1.0, clip_eps=10.0, kl_coef=0.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert objective() > before
    assert stats["kl"] > 0


def test_stepwise_scores_on_the_predicted_clean_chunk(tiny_policy):
    from simdiff.processes import gaussian as G

    den = PolicyDenoiser(tiny_policy)
    seen = []

    class Spy(_ToyCritic):
        def score(self, x, t, cond):
            seen.append((x.clone(), t))
            return super().score(x, t, cond)

    critic = Spy(tiny_policy, den.counter)
    feat = tiny_policy.obs_features(torch.zeros(3, 2, 20))
    low = den.plan()[-2][1]
    before = den.counter.denoiser
    s = stepwise_samples(den, critic, feat, 2, 1.0, 1e-6, torch.Generator().manual_seed(0), max_t=low, score_on="x0")
    (x0, t), = seen
    assert t == 0 and len(s) == 3 * 2
    cond = den.condition(feat).repeat_interleave(2, 0)
    tt = torch.full((6,), low, dtype=torch.long)
    expect = G.to_x0_eps(den.net.unet(s.x_prev, tt, cond), s.x_prev, tt, den.schedule, den.prediction)[0]
    torch.testing.assert_close(x0, expect.clamp(-den.clip, den.clip))   # x0_hat of each candidate, clipped
    # every step's 3 rows, plus one extra call per candidate for its x0_hat
    assert den.counter.denoiser - before == 3 * len(den.plan()) + 6


def test_terminal_samples_share_the_episode_advantage(tiny_policy):
    den = PolicyDenoiser(tiny_policy)
    ro = collect_rollouts(den, "simdiff/Push-v0", 2, [3, 3, 4, 4], [10, 11, 12, 13], 1.0, max_episode_steps=6)
    assert isinstance(ro, Rollouts) and ro.lengths.tolist() == [6, 6, 6, 6] or ro.success.any()
    assert ro.chain.shape[1:] == (tiny_policy.inference_steps + 1, 8, 2)
    assert torch.isnan(ro.logp[:, -1]).all() and not torch.isnan(ro.logp[:, :-1]).any()
    ro.returns = np.array([-1.0, -3.0, -2.0, -2.0])
    ro.success = np.zeros(4, bool)
    s = terminal_samples(ro, den, group_size=2, return_weight=1.0, adv_eps=1e-6)
    assert len(s) == ro.chain.shape[0] * (tiny_policy.inference_steps - 1)
    per_ep = {int(e): float(a) for e, a in zip(ro.episode.repeat(tiny_policy.inference_steps - 1), s.adv)}
    assert per_ep[0] == pytest.approx(1.0, abs=1e-4) and per_ep[1] == pytest.approx(-1.0, abs=1e-4)
    assert per_ep[2] == 0.0 and per_ep[3] == 0.0   # a tied group carries no signal


@pytest.mark.parametrize("mode", ["terminal", "stepwise"])
def test_run_grpo_drivers(tiny_policy, mode):
    cfg = GrpoConfig(k=2, iterations=2, episodes_per_iter=4, updates_per_iter=2, minibatch=16, eval_every=3,
                     eval_episodes=2, lr=1e-3)
    evals = []

    def eval_fn(p):
        evals.append(p)
        return {"success_rate": 0.25 * len(evals), "ci95": [0.0, 1.0], "mean_return": -1.0}

    before = [p.detach().clone() for p in tiny_policy.net.parameters()]
    critic = _ToyCritic(tiny_policy, None) if mode == "stepwise" else None
    if critic is not None:
        from policies.critic.adapter import EvalCounter

        critic.counter = EvalCounter()
    res = run_grpo(tiny_policy, cfg, mode, env_id="simdiff/Push-v0", critic=critic, eval_fn=eval_fn,
                   max_episode_steps=5)
    assert [r["update"] for r in res.curve] == [0, 3, 4]            # start, every 3 updates, the end
    assert len(res.log) == 4 and res.env_steps > 0 and res.counter.denoiser > 0
    assert (res.counter.critic > 0) == (mode == "stepwise")
    assert all(torch.equal(a, b) for a, b in zip(before, tiny_policy.net.parameters()))  # base untouched
    assert any(not torch.equal(a, b) for a, b in zip(before, res.policy.net.parameters()))
    assert updates_to_reach(res.curve, 0.5) == 3 and updates_to_reach(res.curve, 0.9) is None


def test_stepwise_max_t_limits_the_branched_steps(tiny_policy):
    den = PolicyDenoiser(tiny_policy)
    critic = _ToyCritic(tiny_policy, den.counter)
    feat = tiny_policy.obs_features(torch.zeros(3, 2, 20))
    plan = den.plan()
    low = plan[-2][1]  # the last stochastic step's t_prev
    s = stepwise_samples(den, critic, feat, 2, 1.0, 1e-6, torch.Generator().manual_seed(0), max_t=low)
    assert set(s.t_prev.tolist()) == {low} and len(s) == 3 * 2
    with pytest.raises(ValueError, match="no denoising step"):
        run_grpo(tiny_policy, GrpoConfig(k=2, episodes_per_iter=2, stepwise_max_t=0, min_train_std=10.0),
                 "stepwise", env_id="simdiff/Push-v0", critic=critic)


def test_random_scores_control_is_seeded_noise():
    class Shell:
        net = torch.nn.Linear(2, 2)
        counter = object()

    a, b = RandomScores(Shell(), 5), RandomScores(Shell(), 5)
    x = torch.zeros(6, 8, 2)
    sa, sb = a.score(x, 3, a.condition(torch.ones(6, 4))), b.score(x, 3, None)
    assert sa.shape == (6,) and torch.equal(sa, sb)                       # seeded
    assert not torch.equal(sa, a.score(x, 3, None))                         # fresh draws each call
    assert torch.equal(a.condition(torch.ones(6, 4)), torch.ones(6, 4))


@pytest.mark.parametrize("sampler", ["policy", "reference"])
def test_stepwise_groups_branch_from_the_chosen_network(tiny_policy, monkeypatch, sampler):
    import policies.critic.grpo as grpo_mod
    from policies.critic.adapter import EvalCounter

    seen = []
    real = grpo_mod.stepwise_samples

    def spy(den, critic, feat, *args, **kwargs):
        seen.append(([p.detach().clone() for p in den.net.parameters()], den.net))
        return real(den, critic, feat, *args, **kwargs)

    monkeypatch.setattr(grpo_mod, "stepwise_samples", spy)
    critic = _ToyCritic(tiny_policy, EvalCounter())
    cfg = GrpoConfig(k=2, iterations=2, episodes_per_iter=4, updates_per_iter=2, minibatch=16, lr=1e-2,
                     stepwise_sampler=sampler)
    res = run_grpo(tiny_policy, cfg, "stepwise", env_id="simdiff/Push-v0", critic=critic, max_episode_steps=5)
    base = list(tiny_policy.net.parameters())
    (first, _), (second, net2) = seen
    assert all(torch.equal(a, b) for a, b in zip(first, base))       # round 0: both start at the reference
    same_as_base = all(torch.equal(a, b) for a, b in zip(second, base))
    assert same_as_base == (sampler == "reference")                  # round 1: tuned network only for "policy"
    assert (net2 is res.policy.net) == (sampler == "policy")
    with pytest.raises(ValueError, match="stepwise_sampler"):
        GrpoConfig(stepwise_sampler="ref")
