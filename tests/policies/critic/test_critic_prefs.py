"""Preference data: the ranking rule, pairs and ties, simulator snapshots, collection and storage."""

from __future__ import annotations

import numpy as np
import pytest

from policies.critic.adapter import PolicyDenoiser
from policies.critic.config import PrefsConfig
from policies.critic.preferences import PreferenceData, chunk_utility, collect_preferences, preference_pairs
from policies.critic.sim_state import box_goal_distance, restore, snapshot

ENV = "simdiff/Push-v0"


def test_utility_orders_success_then_speed_then_progress():
    Ta = 8
    early, late = chunk_utility(2, 0.1, 0.01, Ta), chunk_utility(8, 0.1, 0.01, Ta)
    best_fail = chunk_utility(None, 0.1, 0.026, Ta)
    assert early > late > 1.0 > best_fail
    assert chunk_utility(None, 0.1, 0.05, Ta) == pytest.approx(0.5)
    assert chunk_utility(None, 0.1, 0.15, Ta) == pytest.approx(-0.5)       # pushed away from the goal
    assert chunk_utility(None, 0.1, 0.5, Ta) == -1.0                          # clipped
    with pytest.raises(ValueError, match="success_step"):
        chunk_utility(0, 0.1, 0.0, Ta)


def test_pairs_orient_winner_first_and_drop_ties():
    u = np.array([[0.5, 0.1, 0.5, 1.5],
                  [0.0, 0.0, 0.0, 0.0]])
    pairs, ties = preference_pairs(u, margin=0.05)
    got = {tuple(p) for p in pairs.tolist()}
    assert got == {(0, 0, 1), (0, 2, 1), (0, 3, 0), (0, 3, 1), (0, 3, 2)}
    assert ties == 1 + 6  # (0,2) in state 0, all 6 pairs of state 1
    only1, _ = preference_pairs(u, 0.05, states=np.array([1]))
    assert only1.shape == (0, 3)
    assert all(u[s, w] - u[s, l_] >= 0.05 for s, w, l_ in pairs)


def test_snapshot_restore_replays_exactly():
    from envs import make

    env = make(ENV, level=3)
    env.reset(seed=11)
    rng = np.random.default_rng(0)
    for _ in range(4):
        env.step(rng.uniform(-1, 1, 2).astype(np.float32))
    snap = snapshot(env)
    actions = rng.uniform(-1, 1, (10, 2)).astype(np.float32)

    def run():
        return np.array([np.concatenate([env.step(a)[0], [box_goal_distance(env)]]) for a in actions])

    first = run()
    restore(env, snap)
    assert np.array_equal(run(), first)           # physics, delay buffer, obs noise, step counter
    other = make(ENV, level=3)
    other.reset(seed=11)
    with pytest.raises(ValueError, match="instance"):
        restore(other, snap)


def test_collect_is_deterministic_and_round_trips(tmp_path, tiny_policy):
    cfg = PrefsConfig(level=3, episodes=3, policy_samples=2, perturbed=2, perturb_std=(0.5,), batch_envs=2,
                      max_episode_steps=9, heldout_fraction=0.3, tie_margin=0.0)
    den = PolicyDenoiser(tiny_policy)
    a = collect_preferences(den, cfg, show_progress=False)
    b = collect_preferences(PolicyDenoiser(tiny_policy), cfg, show_progress=False)
    # 9-step episodes with Ta = 4 give replanning points at steps 0, 4, 8 (unless one succeeds earlier)
    assert a.num_states <= 9 and a.num_candidates == 4
    assert a.chunks.shape == (a.num_states, 4, 8, 2) and a.obs.shape == (a.num_states, 2, 20)
    assert np.array_equal(a.chunks, b.chunks) and np.array_equal(a.utility, b.utility)  # batching-independent seeds
    assert set(a.step.tolist()) <= {0, 4, 8}
    assert a.source.tolist() == [0, 0, 1, 1]
    assert np.abs(a.chunks).max() <= 1.0 + 1e-6
    assert a.heldout.tolist() == (a.episode == 2).tolist()
    assert den.counter.denoiser == a.num_states * 2 * tiny_policy.inference_steps
    a.save(tmp_path / "p.npz")
    c = PreferenceData.load(tmp_path / "p.npz")
    assert np.array_equal(c.utility, a.utility) and c.meta["states"] == a.num_states
    assert c.meta["train_pairs"] == len(a.pairs(0.0, heldout=False)[0])


def test_candidates_are_executed_from_the_same_state(tiny_policy):
    # Re-executing a recorded candidate from a fresh reset reproduces its recorded outcome.
    from envs import make

    cfg = PrefsConfig(level=2, episodes=2, policy_samples=1, perturbed=2, perturb_std=(0.8,), batch_envs=2,
                      max_episode_steps=4, heldout_fraction=0.0)
    data = collect_preferences(PolicyDenoiser(tiny_policy), cfg, show_progress=False)
    den = PolicyDenoiser(tiny_policy)
    import torch

    env = make(ENV, level=2, max_episode_steps=4)
    for c in range(3):
        env.reset(seed=cfg.seed)
        d0 = box_goal_distance(env)
        acts = den.to_actions(torch.as_tensor(data.chunks[0, c][None])).numpy()[0]
        for a in acts:
            env.step(a)
        assert data.progress[0, c] == pytest.approx(d0 - box_goal_distance(env), abs=1e-6)
