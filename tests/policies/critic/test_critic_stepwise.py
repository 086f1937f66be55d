"""Critic-guided sampling: a perfect critic improves a toy objective; batched policies and evaluation counts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from policies.critic.adapter import PolicyDenoiser
from policies.critic.stepwise import (
    CriticGuidedBatchPolicy,
    base_sample,
    evals_per_chunk,
    matched_terminal_k,
    stepwise_sample,
    terminal_best_of_k,
)

B = 64


def _toy(policy):
    """Toy objective: closeness of the clean chunk to a fixed target; the 'perfect' critic scores a noisy x at
    t_prev by its distance to the target scaled like the forward process (sqrt(alpha_bar) * target)."""
    den = PolicyDenoiser(policy)
    target = torch.linspace(-0.5, 0.5, 16).reshape(8, 2)
    ab = torch.cat([policy.schedule.alpha_bars, torch.ones(1)])  # index -1 -> clean

    def objective(x0):
        return -((x0 - target) ** 2).sum(dim=(1, 2))

    def perfect(x, t_prev, rows):
        return -((x - ab[t_prev].sqrt() * target) ** 2).sum(dim=(1, 2))

    def anti(x, t_prev, rows):
        return -perfect(x, t_prev, rows)

    cond = den.condition(den.obs_features(torch.zeros(B, 2, 20)))
    return den, cond, objective, perfect, anti


def _gens(seed):
    return [torch.Generator().manual_seed(seed + i) for i in range(B)]


def test_stepwise_with_a_perfect_critic_improves_a_toy_objective(tiny_policy):
    den, cond, objective, perfect, anti = _toy(tiny_policy)
    base = objective(base_sample(den, cond, 1.0, _gens(0))).mean()
    step = objective(stepwise_sample(den, cond, perfect, 4, 1.0, _gens(0))).mean()
    worse = objective(stepwise_sample(den, cond, anti, 4, 1.0, _gens(0))).mean()
    term = objective(terminal_best_of_k(den, cond, perfect, 4, 1.0, _gens(0))).mean()
    assert step > base + 0.5 and term > base
    assert worse < base - 0.5                    # the selection, not the branching, makes the difference
    more = objective(stepwise_sample(den, cond, perfect, 8, 1.0, _gens(0))).mean()
    assert more > step - 0.1                     # more candidates do not hurt


def test_k1_and_deterministic_steps_reduce_to_the_base_sampler(tiny_policy):
    den, cond, _, perfect, _ = _toy(tiny_policy)
    a = base_sample(den, cond, 1.0, _gens(3))
    b = stepwise_sample(den, cond, perfect, 1, 1.0, _gens(3))
    torch.testing.assert_close(a, b)
    c0 = den.counter.critic
    stepwise_sample(den, cond, perfect, 4, 0.0, _gens(3))          # eta = 0: nothing to branch
    assert den.counter.critic == c0


@pytest.mark.parametrize("method", ["base", "terminal", "stepwise"])
def test_evaluation_counts_match_the_algorithm(tiny_policy, method):
    den, cond, _, perfect, _ = _toy(tiny_policy)

    class Scorer:  # a stand-in critic that counts like the real one
        counter = den.counter

        def condition(self, feat, task=None):
            return feat

        net = torch.nn.Linear(1, 1)

        def score(self, x, t, c):
            self.counter.critic += x.shape[0]
            return perfect(x, t, None)

    from policies.critic.stepwise import guided_chunks

    guided_chunks(method, den, Scorer(), torch.zeros(5, 2, 20), 3, 1.0, None)
    want = evals_per_chunk(method, den.steps, 3, 1.0)
    assert den.counter.chunks == 5
    assert den.counter.denoiser == 5 * want["denoiser"] and den.counter.critic == 5 * want["critic"]


def test_matched_terminal_k():
    assert matched_terminal_k(10, 4, 1.0, 0.0) == 1           # free critic: step-wise costs one chain
    assert matched_terminal_k(10, 4, 1.0, 1.0) == 5           # 10 + 36 = 46 -> 5 chains (55 >= 46)
    assert matched_terminal_k(10, 4, 1.0, 0.8) == 4           # 10 + 28.8 = 38.8 -> 4 chains (43.2)


def test_base_method_matches_the_policy_adapter(tiny_policy):
    # With eta = 0 the critic-guided policy's base path is the diffusion policy's own sampler.
    from simdiff.pipelines.evaluate import run_episodes

    kw = {"batch_size": 3, "env_kwargs": {"max_episode_steps": 10}, "record_actions": True}
    seeds = [5, 6, 7]
    ref = run_episodes(tiny_policy.batch_policy(), "simdiff/Push-v0", 2, seeds, **kw)
    ours = run_episodes(CriticGuidedBatchPolicy(PolicyDenoiser(tiny_policy), None, "base", 1, 0.0),
                        "simdiff/Push-v0", 2, seeds, **kw)
    for a, b in zip(ref, ours):
        # float32 rounding only (equivalent kernels and FiLM arithmetic), grown a little by the contacts
        np.testing.assert_allclose(a["actions"], b["actions"], atol=1e-3)


def test_guided_policy_needs_a_critic(tiny_policy):
    with pytest.raises(ValueError, match="critic"):
        CriticGuidedBatchPolicy(PolicyDenoiser(tiny_policy), None, "stepwise")
    with pytest.raises(ValueError, match="method"):
        CriticGuidedBatchPolicy(PolicyDenoiser(tiny_policy), None, "beam")
