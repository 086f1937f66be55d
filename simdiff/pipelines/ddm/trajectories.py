"""Trajectory domain of decentralized diffusion: demonstrations, diffusion-policy experts, chunk router.

Adapter over :mod:`policies.diffusion`: an expert is a ``DiffusionPolicy`` trained on the episodes of one
cluster and exported in the policy format (``DiffusionPolicy.load`` reads it). Experts share the observation
and action normalizers, fitted once on all demonstrations by the driver (``shared.json``): a mixture of
predictions needs one action space; everything else (weights, optimiser, data) is the expert's own.
"""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from policies.diffusion.config import DiffusionPolicyConfig
from policies.diffusion.data import Episodes, WindowSampler, episodes_from_arrays, load_episodes
from policies.diffusion.normalizer import Normalizer
from policies.diffusion.policy import POLICY_DIR, DiffusionPolicy
from simdiff.config import to_dict
from simdiff.pipelines.ddm.config import DDMConfig
from simdiff.pipelines.ddm.mixture import gaussian_time
from simdiff.pipelines.ddm.router import ChunkRouter
from simdiff.processes import gaussian as gs


# ------------------------------------------------------------------------------------------------- data
def merge_episodes(parts: list[Episodes]) -> Episodes:
    """Concatenate demonstration sets of one env with one observation layout."""
    ref = parts[0]
    for i, e in enumerate(parts[1:], start=1):
        if e.obs_layout != ref.obs_layout or e.obs_dim != ref.obs_dim or e.action_dim != ref.action_dim:
            raise ValueError(f"demos[{i}]: expected the observation layout {ref.obs_layout} and action size "
                             f"{ref.action_dim} of demos[0], received {e.obs_layout} and {e.action_dim}")
        if e.meta.get("env_id") != ref.meta.get("env_id"):
            raise ValueError(f"demos[{i}]: expected env {ref.meta.get('env_id')!r} like demos[0], received "
                             f"{e.meta.get('env_id')!r}")
    obs, act = [], []
    for e in parts:
        starts = e.starts
        for s, n in zip(starts.tolist(), e.lengths.tolist()):
            obs.append(e.obs[s:s + n])
            act.append(e.actions[s:s + n])
    levels = sorted({lv for e in parts for lv in e.meta.get("levels", [])})
    meta = {**ref.meta, "levels": levels, "paths": [e.meta.get("path") for e in parts]}
    return episodes_from_arrays(obs, act, ref.obs_layout, None, meta)


def training_data(cfg: DDMConfig, run_dir: Path) -> tuple[Episodes, list[str]]:
    p = cfg.policy
    d = p.policy.data
    parts = [load_episodes(path, d.max_episodes, d.successful_only) for path in p.demos]
    return merge_episodes(parts), list(p.demos)


def features(cfg: DDMConfig, episodes: Episodes) -> tuple[np.ndarray, list[str]]:
    from simdiff.pipelines.ddm.partition import trajectory_features

    return trajectory_features(episodes.obs[episodes.starts], episodes.obs_layout, cfg.partition.trajectory_features)


def fingerprint(episodes: Episodes) -> str:
    return episodes.fingerprint()


def cluster_samples(episodes: Episodes, part) -> list[int]:
    """Training samples per cluster: the summed length of its episodes."""
    return [int(episodes.lengths[part.labels == k].sum()) for k in range(part.num_clusters)]


def shared_stats(cfg: DDMConfig, episodes: Episodes) -> dict:
    """Normalizers fitted on all demonstrations, the observation layout and the env the demos came from."""
    pc = cfg.policy.policy
    a, b = episodes.obs_layout.get("state", (0, episodes.obs_dim))
    return {"obs_normalizer": Normalizer.fit(episodes.obs[:, a:b], pc.normalizer.obs).to_dict(),
            "action_normalizer": Normalizer.fit(episodes.actions, pc.normalizer.action).to_dict(),
            "obs_layout": {k: list(v) for k, v in episodes.obs_layout.items()},
            "obs_dim": episodes.obs_dim, "action_dim": episodes.action_dim,
            "env_id": episodes.meta.get("env_id"), "env_kwargs": episodes.meta.get("env_kwargs") or {},
            "levels": episodes.meta.get("levels", [])}


def write_shard(path: Path, episodes: Episodes, rows: np.ndarray) -> None:
    """The episodes ``rows`` as one ``.npz`` (obs, actions, lengths; layout and meta as a JSON string)."""
    from simdiff.utils.io import atomic_write_bytes

    sub = episodes.select(rows)
    info = json.dumps({"obs_layout": {k: list(v) for k, v in sub.obs_layout.items()}, "meta": sub.meta})
    buf = io.BytesIO()
    np.savez_compressed(buf, obs=sub.obs, actions=sub.actions, lengths=sub.lengths, rows=np.asarray(rows),
                        info=np.array(info))
    atomic_write_bytes(path, buf.getvalue())


def read_shard(path: Path) -> Episodes:
    from simdiff.errors import DatasetError

    try:
        with np.load(path, allow_pickle=False) as z:
            info = json.loads(str(z["info"]))
            return Episodes(z["obs"], z["actions"], z["lengths"],
                            {k: tuple(v) for k, v in info["obs_layout"].items()}, None, info["meta"])
    except (OSError, KeyError, ValueError) as exc:
        raise DatasetError(f"{path}: unreadable demonstration shard ({exc})") from exc


# ---------------------------------------------------------------------------------------------- members
def member_config(cfg: DDMConfig, steps: int, seed: int) -> DiffusionPolicyConfig:
    pc = cfg.policy.policy
    t = pc.train
    train = dataclasses.replace(t, steps=int(steps), seed=int(seed), warmup_steps=min(t.warmup_steps, int(steps)),
                                ckpt_every=min(t.ckpt_every, int(steps)) if t.ckpt_every else 0)
    return dataclasses.replace(pc, train=train)


def make_policy(pcfg: DiffusionPolicyConfig, shared: dict, info: dict | None = None) -> DiffusionPolicy:
    """A fresh policy with the shared normalizers (initial weights seeded from ``pcfg.train.seed``)."""
    return DiffusionPolicy(pcfg, int(shared["obs_dim"]), int(shared["action_dim"]),
                           {k: tuple(v) for k, v in shared["obs_layout"].items()},
                           Normalizer.from_dict(shared["obs_normalizer"]),
                           Normalizer.from_dict(shared["action_normalizer"]), info or {})


def build_member(pcfg: DiffusionPolicyConfig, shared: dict, shard: Episodes):
    """``(policy, net, loss_fn, batch_fn)`` of one member."""
    policy = make_policy(pcfg, shared, {"fingerprint": shard.fingerprint(), "episodes": shard.num_episodes,
                                        "steps": int(shard.lengths.sum())})
    To, Tp, Ta = policy.horizons
    sampler = WindowSampler(shard, To, Tp, Ta)
    bs = pcfg.train.batch_size

    def batch_fn(step: int, gen: torch.Generator) -> dict:
        return sampler.sample(bs, gen)

    def loss_fn(model: torch.nn.Module, batch: dict, gen: torch.Generator) -> Tensor:
        return policy.compute_loss(batch, gen, model=model)
    return policy, policy.model, loss_fn, batch_fn


def export_member(out_dir: Path, policy: DiffusionPolicy, ema: torch.nn.Module, info: dict) -> Path:
    policy.ema = ema.eval()
    return policy.save(out_dir / POLICY_DIR, {"ddm": info.get("ddm"), "train": info.get("train")})


#: policy settings free to change after training (evaluation and sampler), as dotted prefixes
SAMPLING_FIELDS = ("eval", "noise.clip", "noise.sampler", "noise.inference_steps")


def model_matches(meta: dict, pcfg: DiffusionPolicyConfig, shared: dict) -> bool:
    """An export belongs to this member when its config (up to sampling settings) and normalizers match."""
    from simdiff.checkpoint import config_diff

    norms = meta.get("normalizers") or {}
    return (meta.get("kind") == "simdiff.diffusion_policy"
            and not config_diff(meta.get("config") or {}, to_dict(pcfg), ignore=SAMPLING_FIELDS)
            and norms.get("obs") == shared["obs_normalizer"] and norms.get("action") == shared["action_normalizer"])


def load_member(out_dir: Path) -> DiffusionPolicy:
    """The exported policy of a finished member (``out_dir/policy``; an unfinished run is an error)."""
    from simdiff.checkpoint import resolve_checkpoint_dir
    from simdiff.errors import CheckpointError

    if resolve_checkpoint_dir(out_dir / POLICY_DIR) is None:
        raise CheckpointError(f"{out_dir}: no exported policy ({POLICY_DIR}/ missing); run `simdiff ddm train` "
                              "again to finish it")
    return DiffusionPolicy.load(out_dir / POLICY_DIR)


# ------------------------------------------------------------------------------------------------ router
def _feature_policy(cfg: DDMConfig, shared: dict) -> DiffusionPolicy:
    return make_policy(cfg.policy.policy, shared)


def build_router(cfg: DDMConfig, shared: dict) -> ChunkRouter:
    pol = _feature_policy(cfg, shared)
    _, Tp, _ = pol.horizons
    r = cfg.router
    return ChunkRouter(cfg.num_experts, (Tp, pol.action_dim), pol.obs_feat_dim, hidden=r.hidden, depth=r.depth,
                       time_dim=r.time_dim)


def router_batch_fn(cfg: DDMConfig, shared: dict, episodes: Episodes, labels: np.ndarray):
    """``batch_fn(step, gen) -> {"x0": normalized chunk (B, Tp, Da), "label": (B,), "cond": (B, F)}`` over all
    windows of all episodes; a window's label is its episode's cluster."""
    pol = _feature_policy(cfg, shared)
    To, Tp, Ta = pol.horizons
    labelled = dataclasses.replace(episodes, task_ids=np.asarray(labels, dtype=np.int64))
    sampler = WindowSampler(labelled, To, Tp, Ta)
    bs = cfg.router.batch_size

    def batch_fn(step: int, gen: torch.Generator) -> dict:
        b = sampler.sample(bs, gen)
        with torch.no_grad():
            x0 = pol.action_normalizer.normalize(b["action"].to(torch.float32))
            cond = pol.obs_features(b["obs"])
        return {"x0": x0, "label": b["task"], "cond": cond}
    return batch_fn


def router_noise_fn(cfg: DDMConfig):
    nc = cfg.policy.policy.noise
    sched = gs.make_schedule(nc.schedule, nc.train_steps)

    def noise(x0: Tensor, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        t = torch.randint(0, sched.num_steps, (x0.shape[0],), generator=gen)
        eps = torch.randn(x0.shape, generator=gen)
        return gs.corrupt(x0, t, eps, sched), gaussian_time(t, sched.num_steps)
    return noise


__all__ = ["merge_episodes", "training_data", "features", "fingerprint", "cluster_samples", "shared_stats",
           "write_shard", "read_shard", "member_config", "make_policy", "build_member", "export_member",
           "model_matches", "load_member", "build_router", "router_batch_fn", "router_noise_fn"]
