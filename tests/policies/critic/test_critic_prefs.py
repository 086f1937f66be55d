"""Preference data: the ranking rule, pairs and ties, simulator snapshots, collection and storage."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from policies.critic.adapter import PolicyDenoiser
from policies.critic.config import PrefsConfig
from policies.critic.preferences import (
    PreferenceData,
    chunk_utility,
    collect_preferences,
    merge_preferences,
    preference_pairs,
)
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
    other = make(ENV, level=0)                    # another instance and domain: the snapshot's domain is applied
    other.reset(seed=99)
    restore(other, snap)
    replay = np.array([np.concatenate([other.step(a)[0], [box_goal_distance(other)]]) for a in actions])
    assert np.array_equal(replay, first)
    assert other.unwrapped.domain == env.unwrapped.domain
    blind = make(ENV, level=3, observe_domain=False)
    blind.reset(seed=0)
    with pytest.raises(ValueError, match="observe_domain"):
        restore(blind, snap)


def test_collect_is_deterministic_and_round_trips(tmp_path, tiny_policy):
    cfg = PrefsConfig(level=3, episodes=3, policy_samples=2, perturbed=2, perturb_std=(0.5,), batch_envs=2,
                      max_episode_steps=9, heldout_fraction=0.3, tie_margin=0.0, lookahead=1)
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
    # 2 base samples per state, plus one lookahead chunk per candidate whose episode goes on
    steps = tiny_policy.inference_steps
    assert a.num_states * 2 * steps < den.counter.denoiser <= a.num_states * (2 + 4) * steps
    assert a.meta["horizon_steps"] == 8 and a.meta["lookahead"] == 1
    a.save(tmp_path / "p.npz")
    c = PreferenceData.load(tmp_path / "p.npz")
    assert np.array_equal(c.utility, a.utility) and c.meta["states"] == a.num_states
    assert c.meta["train_pairs"] == len(a.pairs(0.0, heldout=False)[0])
    # damaged copies are errors naming the file, never data that score silently
    from simdiff.errors import DatasetError

    (tmp_path / "t.npz").write_bytes((tmp_path / "p.npz").read_bytes()[:200])
    (tmp_path / "t.json").write_text("{}")
    with pytest.raises(DatasetError, match=r"t.npz: not a readable .npz file"):
        PreferenceData.load(tmp_path / "t.npz")
    obs = a.obs.copy()
    a.obs[...] = np.nan
    a.save(tmp_path / "n.npz")
    with pytest.raises(DatasetError, match=r"n.npz: expected finite values in 'obs'"):
        PreferenceData.load(tmp_path / "n.npz")
    a.obs[...] = obs
    a.save(tmp_path / "s.npz")
    (tmp_path / "s.json").unlink()
    with pytest.raises(DatasetError, match=r"s.npz: expected its sidecar s.json"):
        PreferenceData.load(tmp_path / "s.npz")


def test_merge_joins_collections_and_keeps_the_first_held_out_set(tiny_policy):
    cfg = PrefsConfig(level=3, episodes=3, policy_samples=2, perturbed=1, perturb_std=(0.5,), batch_envs=3,
                      max_episode_steps=9, heldout_fraction=0.3, tie_margin=0.0)
    a = collect_preferences(PolicyDenoiser(tiny_policy), cfg, show_progress=False)
    b = collect_preferences(PolicyDenoiser(tiny_policy), replace(cfg, seed=cfg.seed + 3),
                            show_progress=False)
    m = merge_preferences([a, b], train_only=[False, True])
    assert m.num_states == a.num_states + b.num_states
    assert np.array_equal(m.chunks[:a.num_states], a.chunks) and np.array_equal(m.utility[a.num_states:], b.utility)
    assert sorted(set(m.episode.tolist())) == [0, 1, 2, 3, 4, 5]                  # ids offset, still distinct
    assert np.array_equal(m.heldout, np.concatenate([a.heldout, np.zeros_like(b.heldout)]))
    assert len(m.pairs(0.0, heldout=True)[0]) == len(a.pairs(0.0, heldout=True)[0])  # the same held-out pairs
    assert m.meta["train_pairs"] == len(a.pairs(0.0, False)[0]) + len(b.pairs(0.0, False)[0]) + len(
        b.pairs(0.0, True)[0])
    assert m.meta["config"]["episodes"] == 6 and [p["train_only"] for p in m.meta["merged_from"]] == [False, True]
    with pytest.raises(ValueError, match="same episodes twice"):
        merge_preferences([a, a])
    other = collect_preferences(PolicyDenoiser(tiny_policy), replace(cfg, seed=9, lookahead=1),
                                show_progress=False)
    with pytest.raises(ValueError, match="lookahead: 1 vs. 0"):
        merge_preferences([a, other])


def test_parallel_collection_gives_the_same_data(tiny_policy):
    cfg = PrefsConfig(level=3, episodes=3, policy_samples=2, perturbed=1, perturb_std=(0.5,), batch_envs=1,
                      max_episode_steps=9, heldout_fraction=0.3, tie_margin=0.0)
    a = collect_preferences(PolicyDenoiser(tiny_policy), cfg, show_progress=False)
    b = collect_preferences(PolicyDenoiser(tiny_policy), cfg, show_progress=False, workers=2)
    for name in ("obs", "chunks", "utility", "progress", "episode", "step", "heldout"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert b.meta["workers"] == 2 and b.meta["train_pairs"] == a.meta["train_pairs"]
    with pytest.raises(ValueError, match="workers: expected an int >= 1"):
        collect_preferences(PolicyDenoiser(tiny_policy), cfg, show_progress=False, workers=0)


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


def test_run_candidates_common_random_numbers_and_lookahead(tiny_policy):
    import torch

    from envs import make
    from policies.critic.outcomes import run_candidates, spare_envs

    den = PolicyDenoiser(tiny_policy)
    env = make(ENV, level=3, max_episode_steps=30)
    obs, _ = env.reset(seed=4)
    snap = snapshot(env)
    hist = np.repeat(obs[None, None], 2, axis=1).astype(np.float32)[0]
    acts = np.stack([np.full((4, 2), 0.5), np.full((4, 2), 0.5), np.full((4, 2), -0.5)]).astype(np.float32)
    spares = spare_envs(ENV, 3)
    res = run_candidates(spares, [snap] * 3, acts, np.repeat(hist[None], 3, axis=0), den, lookahead=2, seeds=[7, 7, 7])
    assert res[0]["steps"] == 12 and len(res[0]["obs"]) == 4          # own chunk + 2 lookahead chunks
    assert res[0]["d_end"] == res[1]["d_end"] and res[0]["return"] == res[1]["return"]  # same noise, same outcome
    assert res[2]["d_end"] != res[0]["d_end"]
    no_look = run_candidates(spares[:1], [snap], acts[:1], hist[None], den, lookahead=0)
    assert no_look[0]["steps"] == 4
    # the real env was not touched and replays candidate 0 identically
    for a in acts[0]:
        o = env.step(a)[0]
    assert np.array_equal(o, res[0]["obs"][-1])
    with pytest.raises(ValueError, match="denoiser"):
        run_candidates(spares[:1], [snap], acts[:1], hist[None], None, lookahead=1)
    assert torch.is_tensor(den.condition(den.obs_features(hist[None])))


def test_oracle_policy_runs_in_the_runner(tiny_policy):
    from policies.critic.outcomes import OracleBatchPolicy
    from simdiff.pipelines.evaluate import run_episodes

    recs = run_episodes(OracleBatchPolicy(PolicyDenoiser(tiny_policy), k=2, lookahead=1), ENV, 2, [1, 2],
                        batch_size=2, env_kwargs={"max_episode_steps": 8})
    assert [r["length"] for r in recs] == [8, 8] or any(r["success"] for r in recs)


def test_oracle_co_proposer_candidates_compete_and_rollout_policy_continues(tiny_policy, monkeypatch):
    """With a co-proposer, each state gets k candidates from each policy; the best by outcome is kept whoever
    proposed it (its full chunk too), and the lookahead runs with the ``rollout`` policy."""
    import policies.critic.outcomes as O
    from simdiff.pipelines.evaluate import run_episodes

    base, co, roll = PolicyDenoiser(tiny_policy), PolicyDenoiser(tiny_policy), PolicyDenoiser(tiny_policy)
    shift = 100.0  # the co-proposer's actions are recognisable
    orig = co.to_actions
    monkeypatch.setattr(co, "to_actions", lambda x0, full=False: orig(x0, full=full) + shift)
    seen = []

    def fake(envs, snaps, actions, hist, den, lookahead=0, seeds=None):
        seen.append((actions.shape[0], den, lookahead))
        # the co-proposer's candidates (recognised by their actions) end closest to the goal
        return [{"success_step": None, "d_end": 0.0 if a.mean() > shift / 2 else 1.0, "s_end": 0.0} for a in actions]

    monkeypatch.setattr(O, "run_candidates", fake)
    pol = O.OracleBatchPolicy(base, k=3, lookahead=2, co_proposer=co, rollout=roll)
    recs = run_episodes(pol, ENV, 1, [3], batch_size=1, env_kwargs={"max_episode_steps": 8}, record_actions=True)
    assert seen and all(rows == 6 and den is roll and la == 2 for rows, den, la in seen)
    assert (np.asarray(recs[0]["actions"]) > shift / 2).all()  # every executed chunk was a co-proposer's
    assert (pol.last_full > shift / 2).all() and pol.last_full.shape[1:] == (base.pred_horizon, base.action_dim)
    assert "co-proposer" in pol.source and "rollout" in pol.source

    seen.clear()  # without them: k candidates per state, the base policy continues
    plain = O.OracleBatchPolicy(base, k=3, lookahead=2)
    run_episodes(plain, ENV, 1, [3], batch_size=1, env_kwargs={"max_episode_steps": 8})
    assert all(rows == 3 and den is base for rows, den, _ in seen)


def test_oracle_rejects_a_co_proposer_with_other_horizons(tiny_policy):
    from policies.critic.outcomes import OracleBatchPolicy

    base, other = PolicyDenoiser(tiny_policy), PolicyDenoiser(tiny_policy)
    other.action_horizon += 1
    with pytest.raises(ValueError, match="co_proposer must share"):
        OracleBatchPolicy(base, co_proposer=other)
    with pytest.raises(ValueError, match="rollout must share"):
        OracleBatchPolicy(base, rollout=other)


def test_shaped_utility_only_reorders_failures():
    from policies.critic.outcomes import shaped_utility

    assert shaped_utility(0.3, 0.1, 0.02, 0.0) == 0.3                      # weight 0: the plain utility
    assert shaped_utility(1.5, 0.1, 0.5, 0.5) == 1.5                       # successes untouched
    closer, away = shaped_utility(0.0, 0.1, 0.05, 0.5), shaped_utility(0.0, 0.1, 0.2, 0.5)
    assert closer == pytest.approx(0.25) and away == pytest.approx(-0.5)   # relative approach, clipped to [-1, 1]
    assert shaped_utility(0.9, 0.1, 0.0, 0.5) < 1.0 <= chunk_utility(20, 0.1, 0.0, 20)  # never above a success


def test_staging_distance_is_zero_behind_the_box():
    from envs import make
    from envs.push import PUSHER_RADIUS
    from policies.critic.sim_state import staging_distance

    env = make(ENV, level=3)
    env.reset(seed=11)
    base = env.unwrapped
    b, g = base.box_pos, base.goal
    u = (g - b) / np.hypot(*(g - b))
    stage = b - u * (base.domain.box_size + PUSHER_RADIUS + 0.01)
    assert staging_distance(env) == pytest.approx(float(np.hypot(*(base.pusher_pos - stage))))
    state = base.get_state()
    state[[4, 5]] = stage  # qpos: box x, y, z, yaw, then the pusher's x, y slides
    base.set_state(state)
    assert np.allclose(base.pusher_pos, stage) and staging_distance(env) < 1e-9


# ------------------------------------------------------------------------------------------- sibling pairs
def _sibling_cfg(**kw) -> PrefsConfig:
    base = dict(level=3, episodes=3, policy_samples=3, perturbed=0, batch_envs=2, max_episode_steps=9,
                heldout_fraction=0.3, tie_margin=0.0, lookahead=1, kind="siblings", sibling_steps=(24, 12))
    return PrefsConfig(**{**base, **kw})


def test_siblings_share_their_chain_until_the_branch_and_complete_deterministically(tiny_policy):
    import torch

    from policies.critic.preferences import sibling_candidates

    den = PolicyDenoiser(tiny_policy)
    plan = den.plan()
    cfg = _sibling_cfg(sibling_steps=tuple(tp for _, tp in plan if 0 <= tp)[:2])
    hist = np.random.default_rng(0).normal(size=(3, 2, 20)).astype(np.float32)

    def gens():
        return [torch.Generator().manual_seed(100 + i) for i in range(3)]

    clean, noisy, t_prev = sibling_candidates(den, cfg, hist, gens())
    assert clean.shape == noisy.shape == (3, 3, 8, 2) and t_prev.shape == (3,)
    assert set(t_prev.tolist()) <= set(cfg.sibling_steps)
    again = sibling_candidates(den, cfg, hist, gens())
    assert torch.equal(again[0], clean) and torch.equal(again[1], noisy)        # seeded per state
    cond = den.condition(den.obs_features(hist))
    for s in range(3):
        sib = noisy[s]
        assert not torch.allclose(sib[0], sib[1])                              # distinct branch noise
        # each clean chunk is the deterministic DDIM completion of its noisy sibling
        x, start = sib.clone(), [tp for _, tp in plan].index(int(t_prev[s])) + 1
        with torch.no_grad():
            for t, tp in plan[start:]:
                x = den.step_mean_std(den.predict(x, t, cond[s:s + 1].expand(3, -1)), x, t, tp, 0.0)[0]
        torch.testing.assert_close(x, clean[s], rtol=1e-5, atol=1e-6)
        # before the branch the rows were one chain: the same x_t gives the same step mean for every sibling,
        # so the siblings minus their mean are pure branch noise of the step's std
        spread = (sib - sib.mean(0)).std()
        t_branch = plan[start - 1][0]
        std = den.step_std(t_branch, int(t_prev[s]), cfg.sample_eta)
        assert 0.4 * std < float(spread) < 1.5 * std


def test_sibling_collection_round_trips_and_merges(tmp_path, tiny_policy):
    den = PolicyDenoiser(tiny_policy)
    plan_steps = [tp for _, tp in den.plan() if tp >= 0]
    cfg = _sibling_cfg(sibling_steps=tuple(plan_steps[:2]))
    data = collect_preferences(den, cfg, show_progress=False)
    assert data.siblings and data.noisy.shape == data.chunks.shape
    assert set(np.unique(data.noisy_t).tolist()) <= set(cfg.sibling_steps)
    assert (data.source == 0).all() and data.meta["config"]["kind"] == "siblings"
    data.save(tmp_path / "s.npz")
    back = PreferenceData.load(tmp_path / "s.npz")
    assert back.siblings and np.array_equal(back.noisy, data.noisy) and np.array_equal(back.noisy_t, data.noisy_t)
    other = collect_preferences(den, replace(cfg, seed=cfg.seed + 1000), show_progress=False)
    merged = merge_preferences([data, other])
    assert merged.siblings and merged.num_states == data.num_states + other.num_states
    assert np.array_equal(merged.noisy_t, np.concatenate([data.noisy_t, other.noisy_t]))
    chunks = collect_preferences(den, PrefsConfig(level=3, episodes=2, policy_samples=3, perturbed=0, batch_envs=2,
                                                  max_episode_steps=9, tie_margin=0.0), show_progress=False)
    with pytest.raises(ValueError, match="sibling"):
        merge_preferences([data, chunks])


def test_sibling_settings_are_checked(tiny_policy):
    with pytest.raises(ValueError, match="perturbed"):
        PrefsConfig(kind="siblings", perturbed=2)
    with pytest.raises(ValueError, match="sample_eta"):
        PrefsConfig(kind="siblings", perturbed=0, sample_eta=0.0)
    with pytest.raises(ValueError, match="kind"):
        PrefsConfig(kind="pairs")
    with pytest.raises(ValueError, match="sibling_steps"):   # 7 is no step of the 4-step plan
        collect_preferences(PolicyDenoiser(tiny_policy), _sibling_cfg(sibling_steps=(7,)), show_progress=False)
