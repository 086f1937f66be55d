"""Decentralized diffusion policies: trajectory partition, shared normalizers, routed action sampling."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from simdiff.pipelines.ddm.trainer import load_member, load_router, train_ddm

from .conftest import load


def _write_demos(path: Path, n_per_group: int = 5, T: int = 12) -> Path:
    """Two kinds of episodes told apart by their domain context: actions near +0.5 or near -0.5."""
    from envs.datasets import Episode, write_demos

    rng = np.random.default_rng(0)
    eps = []
    for g, (ctx, act) in enumerate((([-1.0, -1.0], 0.5), ([1.0, 1.0], -0.5))):
        for i in range(n_per_group):
            state = rng.normal(size=(T, 4)).astype(np.float32) * 0.1 + g
            context = np.tile(np.asarray(ctx, np.float32), (T, 1))
            actions = (act + 0.05 * rng.normal(size=(T, 2))).astype(np.float32)
            eps.append(Episode(obs={"state": state, "context": context}, actions=actions,
                               rewards=np.zeros(T, np.float32), dones=np.r_[np.zeros(T - 1), 1].astype(np.int64),
                               seed=i, success=True, level=str(g), obs_keys=("state", "context")))
    return write_demos(path, eps, {"env_name": "simdiff/Push-v0", "env_kwargs": {}},
                       {"obs_keys": ["state", "context"], "obs_layout": {"state": [0, 4], "context": [4, 6]}})


def _config(demos: Path) -> dict:
    return {
        "name": "tiny_policy", "domain": "policy", "num_experts": 2,
        "partition": {"n_init": 2, "trajectory_features": "context"},
        "router": {"hidden": 16, "depth": 1, "time_dim": 8, "steps": 15, "batch_size": 16},
        "compute": {"min_steps": 5},
        "policy": {"demos": [str(demos)],
                   "policy": {"horizon": {"obs": 2, "prediction": 8, "action": 4},
                              "model": {"size": "tiny", "down_dims": [16, 32], "step_embed_dim": 16},
                              "noise": {"train_steps": 20, "inference_steps": 4},
                              "train": {"steps": 16, "batch_size": 16, "warmup_steps": 2, "log_every": 8,
                                        "ckpt_every": 8}}},
    }


@pytest.fixture(scope="module")
def policy_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddm_policy")
    demos = _write_demos(root / "demos.hdf5")
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        summary = train_ddm(load(_config(demos)), root / "run", backend="sequential", command=["test"])
    finally:
        torch.set_num_threads(prev)
    return root / "run", summary


def test_policy_run_partitions_episodes_by_context_and_shares_normalizers(policy_run):
    run, summary = policy_run
    assert summary["partition"]["sizes"] == [5, 5]
    assert {m["status"] for m in summary["members"].values()} == {"trained"}
    e0, e1 = load_member(run, "expert_0"), load_member(run, "expert_1")
    assert e0.action_normalizer.to_dict() == e1.action_normalizer.to_dict()
    shared = json.loads((run / "shared.json").read_text())
    assert e0.obs_normalizer.to_dict() == shared["obs_normalizer"]
    with np.load(run / "shards" / "expert_0.npz") as z:          # a whole context group per expert
        ctx = z["obs"][:, 4:6]
    assert np.unique(ctx, axis=0).shape[0] == 1


def test_mixture_policy_routing_and_identity(policy_run, tmp_path):
    from simdiff.cli import main
    from simdiff.pipelines.ddm.mixture import MixturePolicy
    from simdiff.pipelines.ddm.sampling import observation_batch

    run, _ = policy_run
    e0 = load_member(run, "expert_0")
    router = load_router(run)
    obs = observation_batch(run, 6, 0, e0.horizons)
    gens = lambda: [torch.Generator().manual_seed(i) for i in range(6)]  # noqa: E731
    single = e0.predict_action(obs, gens())
    # a mixture of copies of one expert is that expert (top-1 exactly; full up to rounding)
    assert torch.equal(MixturePolicy([e0, e0], router, "top1").predict_action(obs, gens()), single)
    assert torch.allclose(MixturePolicy([e0, e0], router, "full").predict_action(obs, gens()), single, atol=1e-5)
    experts = [e0, load_member(run, "expert_1")]
    for routing, evals in (("full", 2.0), ("top1", 1.0), ("top2", 2.0)):
        mix = MixturePolicy(experts, router, routing)
        a = mix.predict_action(obs, gens())
        assert a.shape == (6, 4, 2) and torch.isfinite(a).all()
        assert mix.stats.summary()["expert_evals_per_row"] == evals
    out = tmp_path / "a.npz"
    assert main(["ddm", "sample", str(run), "--routing", "top2", "--n", "4", "--out", str(out)]) == 0
    with np.load(out, allow_pickle=False) as z:
        assert z["actions"].shape == (4, 4, 2) and z["obs"].shape == (4, 2, 6)


def test_mixture_policy_rejects_experts_with_different_normalizers(policy_run):
    import dataclasses

    from policies.diffusion.normalizer import Normalizer
    from simdiff.pipelines.ddm.mixture import MixturePolicy

    run, _ = policy_run
    e0, e1 = load_member(run, "expert_0"), load_member(run, "expert_1")
    e1.action_normalizer = dataclasses.replace(e1.action_normalizer, offset=e1.action_normalizer.offset + 1)
    assert isinstance(e1.action_normalizer, Normalizer)
    with pytest.raises(ValueError, match="normalizers"):
        MixturePolicy([e0, e1], load_router(run), "full")
