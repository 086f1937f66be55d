from __future__ import annotations

import numpy as np
import pytest
import torch

from policies.planner.config import PlannerConfig, PlannerTrainConfig
from policies.planner.policy import ObsLayout, PlannerPolicy, make_windows
from policies.planner.train import fit, split_episodes, training_flops
from simdiff.config import load_config
from simdiff.errors import CheckpointError

LAYOUT = ObsLayout((0, 3), (3, 5))


def synthetic_episodes(n=16, T=24, seed=0):
    """State random walk + constant context; the action is a deterministic function of the current obs."""
    rng = np.random.default_rng(seed)
    eps = []
    for _ in range(n):
        ctx = rng.uniform(-1, 1, 2)
        s = np.cumsum(rng.normal(0, 0.2, (T, 3)), 0)
        obs = np.concatenate([s, np.tile(ctx, (T, 1))], 1).astype(np.float32)
        act = np.stack([np.sign(s[:, 0] + ctx[0]) * 0.8, np.tanh(s[:, 1])], 1).astype(np.float32)
        eps.append((obs, act))
    return eps


def tiny_cfg(**planner) -> PlannerTrainConfig:
    p = {"obs_horizon": 2, "plan_horizon": 4, "action_steps": 2, "tokenizer": {"bins": 8},
         "net": {"d_model": 32, "n_heads": 2}, "sample_steps": 8}
    p.update(planner)
    return load_config(PlannerTrainConfig, {"planner": p, "val_fraction": 0.25, "train": {
        "steps": 120, "batch_size": 64, "lr": 3e-3, "log_every": 20, "warmup_steps": 10, "ema_power": 0.5}})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("planner")
    return fit(tiny_cfg(), synthetic_episodes(), LAYOUT, out, eval_every=60, eval_loops=(1, 2)), out


def test_make_windows_pads_like_diffusion_policy():
    obs = np.arange(3, dtype=np.float32)[:, None]
    act = 10 + np.arange(3, dtype=np.float32)[:, None]
    w = make_windows([(obs, act)], obs_horizon=2, plan_horizon=3)
    assert w["obs"][0, :, 0].tolist() == [0, 0] and w["obs"][2, :, 0].tolist() == [1, 2]
    assert w["actions"][2, :, 0].tolist() == [12, 12, 12]
    with pytest.raises(ValueError, match="equal T"):
        make_windows([(obs, act[:2])], 2, 3)


def test_training_lowers_loss_and_held_out_nll(trained):
    out, _ = trained
    metrics = out.metrics
    assert metrics["train_steps"] == 120
    assert metrics["parameters"] == out.policy.model.num_parameters()
    curve = out.curve
    assert [c["step"] for c in curve] == [60, 120]
    assert curve[0]["train_flops"] * 2 == pytest.approx(curve[1]["train_flops"])
    assert curve[1]["val_bits"]["2"] < curve[0]["val_bits"]["2"]
    # 8 bins -> a uniform model pays 3 bits/token; the learned one much less
    assert metrics["val_bits_per_token"]["2"] < 2.0
    assert metrics["tokenizer"]["recon_train"]["max_abs"] <= metrics["tokenizer"]["recon_train"]["rmse"] * 10


def test_predictions_follow_the_data_and_reload_is_identical(trained):
    out, path = trained
    pol = out.policy
    eps = synthetic_episodes(n=4, seed=1)
    w = make_windows(eps, 2, 4)
    pred = pol.predict_action(w["obs"], torch.Generator().manual_seed(0), temperature=0.0, order="confidence")
    assert pred.shape == w["actions"].shape
    assert pred.abs().max() <= 1.0
    # the sign of the first action dimension is a step function of the observation: mostly right
    agree = (torch.sign(pred[:, 0, 0]) == torch.sign(w["actions"][:, 0, 0])).float().mean()
    assert agree > 0.75
    again = PlannerPolicy.load(path / "policy")
    for kw in ({}, {"loops": 4, "steps": 3}):
        a = pol.predict_action(w["obs"][:5], torch.Generator().manual_seed(3), **kw)
        b = again.predict_action(w["obs"][:5], torch.Generator().manual_seed(3), **kw)
        assert torch.equal(a, b)


def test_receding_horizon_replans_every_action_steps(trained):
    pol = trained[0].policy
    calls = []
    orig = pol.predict_action

    def spy(obs_hist, generator=None, **kw):
        calls.append(obs_hist.shape[0])
        return orig(obs_hist, generator, **kw)
    pol.predict_action = spy
    try:
        pol.reset(3)
        obs = np.stack([e[0][0] for e in synthetic_episodes(n=3)])
        acts = [pol.select_action(obs) for _ in range(5)]
        assert all(a.shape == (3, 2) for a in acts)
        assert calls == [3, 3, 3]  # steps 0, 2, 4 with action_steps = 2, all envs batched together
        pol.reset_env(1)
        pol.select_action(obs)
        assert calls[-1] == 1
        assert pol.select_action(obs[0]).shape == (2,)  # single env resets the queues to one env
    finally:
        del pol.predict_action


def test_loops_randomized_per_step_and_training_flops():
    eps = synthetic_episodes(n=4)
    cfg = tiny_cfg(train_loops_range=[1, 4]).planner
    w = make_windows(eps, 2, 4)
    pol = PlannerPolicy.build(cfg, w, LAYOUT)
    draws = [pol.train_loops_at(k) for k in range(200)]
    assert set(draws) == {1, 2, 3, 4} and draws == [pol.train_loops_at(k) for k in range(200)]
    fl = training_flops(pol, 200, 8, 0)
    expect = sum(3 * pol.model.flops(s, batch=8) for s in draws)
    assert fl[-1] == pytest.approx(expect)
    batch = {"obs": w["obs"][:8], "tokens": pol.encode_actions(w["actions"][:8])}
    loss = pol.compute_loss(pol.model, batch, torch.Generator().manual_seed(0), loops=3)
    assert loss.shape == (8,) and torch.isfinite(loss).all()


def test_errors_are_clear(tmp_path):
    assert split_episodes(10, 0.2, 0)[1] == split_episodes(10, 0.2, 0)[1]
    assert len(split_episodes(2, 0.01, 0)[1]) == 1
    with pytest.raises(ValueError, match="action_steps"):
        PlannerConfig(plan_horizon=4, action_steps=5)
    with pytest.raises(ValueError, match="train_loops_range"):
        PlannerConfig(train_loops_range=(3, 2))
    pol = PlannerPolicy.build(tiny_cfg().planner, make_windows(synthetic_episodes(n=2), 2, 4), LAYOUT)
    with pytest.raises(ValueError, match="obs_hist: expected"):
        pol.predict_action(torch.zeros(2, 3, 5))
    with pytest.raises(CheckpointError):
        PlannerPolicy.load(tmp_path / "nothing")


def test_kmeans_codebook_planner_round_trip(tmp_path):
    cfg = tiny_cfg(tokenizer={"kind": "kmeans", "codebook_size": 16, "chunk": 2}).planner
    w = make_windows(synthetic_episodes(n=4), 2, 4)
    pol = PlannerPolicy.build(cfg, w, LAYOUT)
    assert pol.plan_tokens == 2 and pol.tokenizer.vocab_size == 16
    batch = {"obs": w["obs"][:6], "tokens": pol.encode_actions(w["actions"][:6])}
    assert pol.compute_loss(pol.model, batch, torch.Generator().manual_seed(0), loops=2).shape == (6,)
    pol.save(tmp_path / "p")
    again = PlannerPolicy.load(tmp_path / "p")
    a = pol.predict_action(w["obs"][:3], torch.Generator().manual_seed(1))
    assert a.shape == (3, 4, 2)
    assert torch.equal(a, again.predict_action(w["obs"][:3], torch.Generator().manual_seed(1)))
