"""Sampling a trained decentralized run: the routed mixture of its experts, or its monolithic baseline.

* lattice runs: ``n`` lattices ``samples (n, 1, L, L)`` float32 and their signs ``spins (n, L, L)`` int8;
* policy runs: action chunks ``actions (n, Ta, Da)`` for ``n`` observation histories ``obs (n, To, Do)`` drawn
  (seeded) from the demonstrations' training windows.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import torch

from simdiff.pipelines.ddm.mixture import MixturePolicy, MixtureStats, check_routing
from simdiff.pipelines.ddm.trainer import (
    MONOLITHIC,
    SHARDS_DIR,
    load_experts,
    load_member,
    load_router,
    load_run_config,
)

MODELS = ("ddm", "monolithic")


def _check(n: int, seed: int, model: str) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n: expected an int >= 1, received {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed: expected an int >= 0, received {seed!r}")
    if model not in MODELS:
        raise ValueError(f"model: expected one of {MODELS}, received {model!r}")


def load_mixture(run_dir: str | os.PathLike):
    """``(experts, router)`` of a finished run; the router is loaded first so its absence is the error shown."""
    router = load_router(run_dir)
    return load_experts(run_dir), router


def sample_run(run_dir: str | os.PathLike, routing: str = "full", n: int = 100, seed: int = 0,
               model: str = "ddm", steps: int | None = -1, batch_size: int | None = None,
               device: str | None = None) -> tuple[dict, dict]:
    """Draw ``n`` samples; returns ``(arrays, info)`` (``info`` has wall time and the routing statistics).

    ``model``: ``ddm`` (routed mixture of the experts) or ``monolithic`` (the baseline; ``routing`` unused).
    ``steps = -1``: the models' sampler settings. ``device`` (lattice runs): where the networks run; the
    sampler's state and random draws stay on the CPU, so a seed gives the same draws everywhere.
    """
    from simdiff.training import resolve_device

    check_routing(routing)
    _check(n, seed, model)
    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir)
    dev = resolve_device(device)
    if dev is not None and cfg.domain != "ising":
        raise ValueError(f"device: {device!r} samples lattice (domain: ising) runs; policy runs sample on the CPU")
    t0 = time.perf_counter()
    info: dict = {"model": model, "routing": routing if model == "ddm" else None, "n": n, "seed": seed,
                  "run": str(run_dir)}
    if cfg.domain == "ising":
        arrays = _sample_lattices(run_dir, routing, n, seed, model, steps, batch_size, info, dev)
    else:
        arrays = _sample_actions(run_dir, routing, n, seed, model, info)
    info["wall_s"] = time.perf_counter() - t0
    return arrays, info


def _sample_lattices(run_dir, routing, n, seed, model, steps, batch_size, info, device=None) -> dict:
    from simdiff.pipelines.ddm.lattice import sample_mixture, sampler_steps, with_sampling
    from simdiff.pipelines.skild.core import generate, to_spins

    # the run's sampler settings (skild.sample) apply to every model, whatever their exports recorded
    sample_cfg = load_run_config(run_dir).skild.sample
    info["sample_config"] = {"steps": sample_cfg.steps, "clip_x0": sample_cfg.clip_x0,
                             "eps_error": getattr(sample_cfg, "eps_error", None)}
    if model == MONOLITHIC:
        m = with_sampling(load_member(run_dir, MONOLITHIC), sample_cfg)
        if device is not None:
            m.net.to(device)
        x = generate(m, n, seed=seed, steps=steps, batch_size=batch_size)
        info["sampler_steps"] = sampler_steps([m], steps)
        info["expert_evals_per_step"] = 1.0
    else:
        experts, router = load_mixture(run_dir)
        experts = [with_sampling(e, sample_cfg) for e in experts]
        if device is not None:
            router.to(device)
            for e in experts:
                e.net.to(device)
        stats = MixtureStats(len(experts))
        x = sample_mixture(experts, router, routing, n, seed=seed, steps=steps, batch_size=batch_size, stats=stats)
        info["sampler_steps"] = sampler_steps(experts, steps)
        info["routing_stats"] = stats.summary()
        info["expert_evals_per_step"] = info["routing_stats"]["expert_evals_per_row"]
    x = x.numpy().astype(np.float32)
    return {"samples": x, "spins": to_spins(x[:, 0])}


def observation_batch(run_dir: Path, n: int, seed: int, horizons: tuple[int, int, int]) -> np.ndarray:
    """``n`` observation histories ``(n, To, Do)`` from the training windows of all demonstrations (seeded)."""
    from policies.diffusion.data import WindowSampler
    from simdiff.pipelines.ddm.trajectories import read_shard

    eps = read_shard(run_dir / SHARDS_DIR / "all.npz")
    sampler = WindowSampler(eps, *horizons)
    return sampler.sample(n, torch.Generator().manual_seed(int(seed)))["obs"].numpy()


def _sample_actions(run_dir, routing, n, seed, model, info) -> dict:
    if model == MONOLITHIC:
        policy = load_member(run_dir, MONOLITHIC)
    else:
        experts, router = load_mixture(run_dir)
        policy = MixturePolicy(experts, router, routing)
    obs = observation_batch(run_dir, n, seed, policy.horizons)
    gens = [torch.Generator().manual_seed(int(seed) * 1_000_003 + i) for i in range(n)]
    actions = policy.predict_action(obs, gens).to(torch.float32).numpy()
    if model != MONOLITHIC:
        info["routing_stats"] = policy.stats.summary()
    return {"obs": obs.astype(np.float32), "actions": actions}


def save_samples(path: str | os.PathLike, arrays: dict, info: dict) -> Path:
    """Write ``arrays`` and ``info`` (as a JSON string under ``info``) to an ``.npz`` atomically, no pickle."""
    import io
    import json

    from simdiff.utils.io import atomic_write_bytes

    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays, info=np.array(json.dumps(info)))
    return atomic_write_bytes(path, buf.getvalue())


__all__ = ["sample_run", "load_mixture", "observation_batch", "save_samples", "MODELS"]
