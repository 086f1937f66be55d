"""The oracle step scorer: the TRUE outcome of each candidate step, in the critic's interface."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from policies.critic.adapter import PolicyDenoiser
from policies.critic.config import GrpoConfig
from policies.critic.grpo import collect_rollouts, run_grpo
from policies.critic.outcomes import OracleStepScores
from policies.critic.preferences import chunk_utility
from policies.critic.sim_state import box_goal_distance, restore

ENV = "simdiff/Push-v0"


def _states(den, n=2):
    ro = collect_rollouts(den, ENV, 2, list(range(n)), list(range(10, 10 + n)), 1.0, max_episode_steps=12,
                          keep_states=True)
    assert len(ro.snaps) == ro.feat.shape[0] == ro.hist.shape[0] == ro.d0.shape[0]
    return ro


def test_oracle_scores_are_the_replayed_outcomes_of_the_completed_candidates(tiny_policy):
    den = PolicyDenoiser(tiny_policy)
    ro = _states(den)
    rows = [0, ro.feat.shape[0] - 1]
    oracle = OracleStepScores(PolicyDenoiser(tiny_policy), ENV, lookahead=0, seed=3)
    oracle.bind([ro.snaps[i] for i in rows], ro.hist[rows], ro.d0[rows])
    k, plan = 3, den.plan()
    t_prev = plan[0][1]                       # after the first step: the rest of the plan completes it
    x = torch.randn(2 * k, *den.chunk_shape, generator=torch.Generator().manual_seed(0))
    scores = oracle.score(x, t_prev, oracle.condition(ro.feat[rows]))
    assert scores.shape == (2 * k,) and oracle.counter.critic == 2 * k
    assert 0 < oracle.env_steps <= 2 * k * den.action_horizon         # lookahead 0: the candidates' own steps

    # by hand: finish the chain deterministically, run the actions from the snapshot, rank by chunk_utility
    cond = den.condition(den.obs_features(ro.hist[rows])).repeat_interleave(k, 0)
    y = x.clone()
    with torch.no_grad():
        for t, tp in plan[1:]:
            y = den.step_mean_std(den.predict(y, t, cond), y, t, tp, 0.0)[0]
        acts = den.to_actions(y).numpy()
    from envs import make

    env = make(ENV, level=None)
    env.reset(seed=0)
    for r in range(2 * k):
        restore(env, ro.snaps[rows[r // k]])
        assert box_goal_distance(env) == pytest.approx(ro.d0[rows[r // k]])
        step = None
        for j, a in enumerate(acts[r]):
            _, _, term, trunc, info = env.step(a)
            if step is None and info.get("success", False):
                step = j + 1
            if term or trunc:
                break
        expect = chunk_utility(step, ro.d0[rows[r // k]], box_goal_distance(env), den.action_horizon)
        assert float(scores[r]) == pytest.approx(expect, abs=1e-6)
    env.close()
    assert len(set(np.round(scores.numpy(), 6).tolist())) > 1       # the candidates are told apart


def test_oracle_needs_bound_states_and_matching_rows(tiny_policy):
    den = PolicyDenoiser(tiny_policy)
    oracle = OracleStepScores(den, ENV, lookahead=1)
    x = torch.zeros(4, *den.chunk_shape)
    with pytest.raises(RuntimeError, match="bind"):
        oracle.score(x, -1, None)
    ro = _states(den, 1)
    oracle.bind(ro.snaps[:3], ro.hist[:3], ro.d0[:3])
    with pytest.raises(ValueError, match="k rows per bound state"):
        oracle.score(x, -1, None)
    with pytest.raises(ValueError, match="one history and distance per snapshot"):
        oracle.bind(ro.snaps[:2], ro.hist[:3], ro.d0[:3])
    with pytest.raises(ValueError, match="lookahead"):
        OracleStepScores(den, ENV, lookahead=-1)


def test_stepwise_grpo_runs_on_oracle_scores(tiny_policy):
    cfg = GrpoConfig(k=2, iterations=2, episodes_per_iter=4, updates_per_iter=2, minibatch=16, lr=1e-3)
    oracle = OracleStepScores(PolicyDenoiser(tiny_policy), ENV, lookahead=1, seed=0)
    res = run_grpo(tiny_policy, cfg, "stepwise", env_id=ENV, critic=oracle, max_episode_steps=6)
    assert len(res.log) == 4 and res.counter.critic > 0
    assert all(np.isfinite(r["loss"]) for r in res.log)


def test_oracle_noise_is_seeded_and_centred_on_the_true_utility(tiny_policy):
    den = PolicyDenoiser(tiny_policy)
    ro = _states(den, 1)
    x = torch.randn(8, *den.chunk_shape, generator=torch.Generator().manual_seed(1))

    def scores(noise, seed=0):
        o = OracleStepScores(PolicyDenoiser(tiny_policy), ENV, lookahead=0, seed=seed, noise_std=noise)
        o.bind(ro.snaps[:2], ro.hist[:2], ro.d0[:2])
        return o.score(x, -1, None)

    clean, a, b = scores(0.0), scores(0.5), scores(0.5)
    assert torch.equal(a, b) and not torch.equal(a, clean) and not torch.equal(a, scores(0.5, seed=1))
    assert 0.1 < float((a - clean).std()) < 1.5
    with pytest.raises(ValueError, match="noise_std"):
        OracleStepScores(den, ENV, noise_std=-1.0)
