from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from policies.diffusion.config import load_policy_config
from policies.diffusion.data import WindowSampler, episodes_from_arrays
from policies.diffusion.policy import DiffusionPolicy, ddim_plan, ddim_update, replace_config
from simdiff.errors import CheckpointError
from simdiff.processes import gaussian as G


def _toy_episodes(n_eps: int = 2, T: int = 12, seed: int = 0):
    rng = np.random.default_rng(seed)
    obs = [np.cumsum(rng.normal(size=(T, 7)), 0).astype(np.float32) for _ in range(n_eps)]
    act = [(np.sin(np.arange(T)[:, None] * 0.5 + np.arange(2)) * 0.5 * (i + 1)).astype(np.float32)
           for i in range(n_eps)]
    return episodes_from_arrays(obs, act, {"state": (0, 5), "context": (5, 7)})


@pytest.fixture
def toy_policy(tiny_cfg):
    return DiffusionPolicy.from_episodes(tiny_cfg, _toy_episodes())


def test_shapes_full_and_executed_chunk(toy_policy):
    To, Tp, Ta = toy_policy.horizons
    obs = torch.randn(3, To, 7)
    gen = torch.Generator().manual_seed(0)
    assert toy_policy.predict_action(obs, gen).shape == (3, Ta, 2)
    assert toy_policy.predict_action(obs, gen, full=True).shape == (3, Tp, 2)
    assert toy_policy.obs_features(obs).shape == (3, To * 5 + 2)
    with pytest.raises(ValueError, match=r"obs_history: expected shape \(B, 2, 7\)"):
        toy_policy.predict_action(torch.randn(3, To, 6), gen)
    with pytest.raises(ValueError, match="generator: expected one generator per row"):
        toy_policy.predict_action(obs, [torch.Generator()] * 2)


@pytest.mark.parametrize("prediction", ["epsilon", "x0", "v"])
@pytest.mark.parametrize("clip", [None, 1.0])
def test_fast_ddim_step_equals_the_engine(prediction, clip):
    sched = G.make_schedule("cosine", 100)
    plan = ddim_plan(sched, 7)
    assert [p[0] for p in plan] == G.ddim_timesteps(100, 7).tolist()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 8, 2, generator=gen, dtype=torch.float64) * 2
    out = torch.randn(4, 8, 2, generator=gen, dtype=torch.float64)
    for i, coef in enumerate(plan):
        prev = plan[i + 1][0] if i + 1 < len(plan) else -1
        ref = G.ddim_step(out, x, coef[0], prev, sched, prediction, clip=clip)
        # The engine keeps its schedule in float32; the fast path uses float64 scalars.
        torch.testing.assert_close(ddim_update(out, x, coef, prediction, clip), ref, rtol=1e-5, atol=1e-5)


def test_rows_sample_independently_with_per_row_generators(toy_policy):
    pol = toy_policy.to(torch.float64)
    obs = torch.randn(4, 2, 7, dtype=torch.float64)
    seeds = [11, 12, 13, 14]
    batch = pol.predict_action(obs, [torch.Generator().manual_seed(s) for s in seeds])
    single = pol.predict_action(obs[2:3], [torch.Generator().manual_seed(13)])
    torch.testing.assert_close(batch[2:3], single, rtol=1e-9, atol=1e-9)


def test_select_action_replays_the_predicted_chunk(toy_policy):
    To, Tp, Ta = toy_policy.horizons
    o = np.random.default_rng(0).normal(size=7).astype(np.float32)
    chunk = toy_policy.predict_action(np.stack([o] * To)[None], torch.Generator().manual_seed(5))[0].numpy()
    toy_policy.reset(seed=5)
    acts = [toy_policy.select_action(o) for _ in range(Ta)]
    np.testing.assert_allclose(np.stack(acts), chunk, rtol=1e-6, atol=1e-6)
    assert len(toy_policy._queue) == 0  # the next call replans


def test_tiny_policy_overfits_tiny_dataset(tiny_cfg):
    cfg = replace_config(tiny_cfg, train={"seed": 0})
    eps = _toy_episodes()
    pol = DiffusionPolicy.from_episodes(cfg, eps)
    sampler = WindowSampler(eps, *pol.horizons)
    probe = sampler.sample(256, torch.Generator().manual_seed(123))

    def probe_loss() -> float:
        with torch.no_grad():
            return pol.compute_loss(probe, torch.Generator().manual_seed(7)).mean().item()

    before = probe_loss()
    opt = torch.optim.AdamW(pol.model.parameters(), lr=3e-3)
    for k in range(250):
        gen = torch.Generator().manual_seed(k)
        loss = pol.compute_loss(sampler.sample(32, gen), gen).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = probe_loss()
    assert after < before / 10, (before, after)


def test_save_load_gives_identical_actions(toy_policy, tmp_path):
    toy_policy.save(tmp_path / "pol", metrics={"note": 1})
    loaded = DiffusionPolicy.load(tmp_path / "pol")
    assert loaded.metrics == {"note": 1} and loaded.dataset["fingerprint"] == toy_policy.dataset["fingerprint"]
    obs = torch.randn(3, 2, 7)
    a = toy_policy.predict_action(obs, torch.Generator().manual_seed(9))
    b = loaded.predict_action(obs, torch.Generator().manual_seed(9))
    assert torch.equal(a, b)
    np.testing.assert_array_equal(loaded.obs_normalizer.scale, toy_policy.obs_normalizer.scale)


def test_checkpoint_mismatch_and_corruption_are_clear_errors(toy_policy, tiny_cfg, tmp_path):
    path = toy_policy.save(tmp_path / "pol")
    other = replace_config(tiny_cfg, model={"down_dims": (16, 48)})
    with pytest.raises(CheckpointError, match=r"model\.down_dims: checkpoint has \[16, 32\], expected \[16, 48\]"):
        DiffusionPolicy.load(path, config=other)
    # Sampling settings may differ: they are taken from the given config.
    fast = replace_config(tiny_cfg, noise={"inference_steps": 2})
    assert DiffusionPolicy.load(path, config=fast).inference_steps == 2
    weights = path / "weights.safetensors"
    blob = bytearray(weights.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    weights.write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match="corrupt"):
        DiffusionPolicy.load(path)
    with pytest.raises(CheckpointError, match="no such policy directory"):
        DiffusionPolicy.load(tmp_path / "missing")


def test_loading_a_non_policy_checkpoint_is_refused(tmp_path):
    from simdiff.checkpoint import save_checkpoint

    save_checkpoint(tmp_path / "ck", {"w": torch.zeros(2)}, {"kind": "something.else"})
    with pytest.raises(CheckpointError, match="not a diffusion policy checkpoint"):
        DiffusionPolicy.load(tmp_path / "ck")


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="horizon: expected obs - 1 \\+ action <= prediction"):
        load_policy_config({"horizon": {"obs": 2, "prediction": 8, "action": 8}})
    with pytest.raises(ValueError, match="did you mean 'inference_steps'"):
        load_policy_config({"noise": {"inference_step": 3}})
    with pytest.raises(ValueError, match="multiple of 4"):
        load_policy_config({"model": {"size": "small"}, "horizon": {"prediction": 10, "action": 4}})


def test_ddpm_sampler_is_seeded_per_row(tiny_cfg):
    cfg = replace_config(tiny_cfg, noise={"sampler": "ddpm", "train_steps": 20, "inference_steps": 4})
    pol = DiffusionPolicy.from_episodes(cfg, _toy_episodes()).to(torch.float64)
    obs = torch.randn(3, 2, 7, dtype=torch.float64)
    a = pol.predict_action(obs, [torch.Generator().manual_seed(s) for s in (1, 2, 3)])
    b = pol.predict_action(obs[1:2], [torch.Generator().manual_seed(2)])
    assert a.shape == (3, pol.horizons[2], 2)
    torch.testing.assert_close(a[1:2], b, rtol=1e-9, atol=1e-9)


def test_frozen_graph_sampling_equals_eager_and_follows_training(toy_policy):
    obs = torch.randn(3, 2, 7)

    def sample(pol):
        return pol.predict_action(obs, [torch.Generator().manual_seed(s) for s in (1, 2, 3)], full=True)

    assert toy_policy.cfg.noise.frozen_graph
    eager = copy.copy(toy_policy)  # shares the networks
    eager.cfg = replace_config(toy_policy.cfg, noise={"frozen_graph": False})
    first = sample(toy_policy)
    torch.testing.assert_close(first, sample(eager), rtol=0, atol=1e-6)
    with torch.no_grad():  # a training step between two chunks must reach the frozen graph
        for w in toy_policy.net.parameters():
            w.mul_(1.1)
    second = sample(toy_policy)
    torch.testing.assert_close(second, sample(eager), rtol=0, atol=1e-6)
    assert not torch.allclose(first, second)


def test_default_task_is_used_where_a_caller_passes_none(tiny_cfg, tmp_path):
    cfg = replace_config(tiny_cfg, model={"num_tasks": 2, "default_task": 1})
    pol = DiffusionPolicy.from_episodes(cfg, _toy_episodes())
    torch.nn.init.normal_(pol.model.task_embed.weight)       # the two tokens far apart
    obs = torch.randn(3, 2, 7)

    def act(policy, task=None):
        return policy.predict_action(obs, torch.Generator().manual_seed(4), task=task)

    assert torch.equal(act(pol), act(pol, 1)) and not torch.equal(act(pol), act(pol, 0))
    pol.save(tmp_path / "pol")
    assert torch.equal(act(DiffusionPolicy.load(tmp_path / "pol")), act(pol, 1))   # the default travels with it
    with pytest.raises(ValueError, match=r"model.default_task: expected a value in \[0, 1\], received 2"):
        load_policy_config({"model": {"num_tasks": 2, "default_task": 2}})
    with pytest.raises(ValueError, match="model.default_task: expected null without a task embedding"):
        load_policy_config({"model": {"default_task": 0}})


def test_task_guidance_extrapolates_from_the_against_task(tiny_cfg, tmp_path):
    from policies.diffusion.policy import ddim_plan

    cfg = replace_config(tiny_cfg, model={"num_tasks": 2, "default_task": 1})
    pol = DiffusionPolicy.from_episodes(cfg, _toy_episodes())
    torch.nn.init.normal_(pol.model.task_embed.weight)
    path = pol.save(tmp_path / "pol")
    obs = torch.randn(3, 2, 7)

    def act(policy):
        return policy.predict_action(obs, torch.Generator().manual_seed(4), full=True)

    w = 1.5
    guided = {fg: DiffusionPolicy.load(path, config=replace_config(
        cfg, noise={"guidance": w, "guidance_against": 0, "frozen_graph": fg})) for fg in (True, False)}
    torch.testing.assert_close(act(guided[True]), act(guided[False]), rtol=1e-5, atol=1e-5)
    # by hand: every step's prediction out(1) + w (out(1) - out(0)), then the plain DDIM update
    net = pol.net
    feat = pol.obs_features(obs)
    c1, c0 = (net.condition(feat, torch.full((3,), k)) for k in (1, 0))
    x = torch.randn((3, 8, 2), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        for coef in ddim_plan(pol.schedule, pol.inference_steps):
            t = torch.full((3,), coef[0])
            o1, o0 = net.unet(x, t, c1), net.unet(x, t, c0)
            x = ddim_update(o1 + w * (o1 - o0), x, coef, cfg.noise.prediction, cfg.noise.clip)
    torch.testing.assert_close(act(guided[False]), pol.action_normalizer.unnormalize(x), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(act(guided[False]), act(pol))
    zero = DiffusionPolicy.load(path, config=replace_config(cfg, noise={"guidance": 0.0, "guidance_against": 0}))
    assert torch.equal(act(zero), act(pol))
    with pytest.raises(ValueError, match="noise.guidance: expected noise.guidance_against"):
        load_policy_config({"model": {"num_tasks": 2}, "noise": {"guidance": 1.0}})
    with pytest.raises(ValueError, match=r"noise.guidance_against: expected a task id in \[0, 1\]"):
        load_policy_config({"model": {"num_tasks": 2}, "noise": {"guidance": 1.0, "guidance_against": 2}})
