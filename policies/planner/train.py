"""Training the planner with the engine's loop: data split, batches, loss, held-out NLL, training FLOPs."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from policies.planner.config import PlannerTrainConfig
from policies.planner.policy import ObsLayout, PlannerPolicy, make_windows
from simdiff.training import TrainResult, train
from simdiff.utils.io import write_json

POLICY_DIR = "policy"
METRICS_FILE = "planner_metrics.json"


def split_episodes(n: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Episode indices (train, val): a seeded permutation; at least one of each when ``n >= 2`` and
    ``val_fraction > 0``."""
    if n < 1:
        raise ValueError(f"episodes: expected at least 1, received {n}")
    perm = np.random.default_rng(seed).permutation(n).tolist()
    n_val = int(round(n * val_fraction))
    if val_fraction > 0 and n >= 2:
        n_val = min(max(n_val, 1), n - 1)
    return sorted(perm[n_val:]), sorted(perm[:n_val])


def training_flops(policy: PlannerPolicy, steps: int, batch_size: int, seed: int) -> np.ndarray:
    """Cumulative training FLOPs after each step (``steps``,): 3x forward (forward + backward) per sample."""
    per = [3 * policy.model.flops(policy.train_loops_at(k, seed), batch=batch_size) for k in range(steps)]
    return np.cumsum(np.asarray(per, dtype=np.float64))


@dataclass
class FitOutput:
    policy: PlannerPolicy                      #: holds the EMA weights after training
    result: TrainResult
    metrics: dict                              #: what planner_metrics.json holds
    curve: list[dict] = field(default_factory=list)  #: held-out NLL during training (if eval_every)


def fit(cfg: PlannerTrainConfig, episodes: list[tuple[np.ndarray, np.ndarray]], layout: ObsLayout,
        out_dir: str | os.PathLike, *, eval_every: int = 0, eval_loops: tuple[int, ...] | None = None,
        max_val_windows: int = 1024, resume: bool = True, desc: str = "planner",
        on_curve: Callable[[dict], None] | None = None) -> FitOutput:
    """Train a planner on ``episodes`` (``(obs (T, Do), actions (T, Da))`` pairs) into ``out_dir``.

    Writes ``out_dir/checkpoint`` (engine), ``out_dir/policy`` (the planner with EMA weights) and
    ``out_dir/planner_metrics.json``: parameters, FLOPs per forward, training FLOPs, tokenizer
    reconstruction error (train and held-out), held-out NLL bound in bits/token for ``eval_loops``.
    With ``eval_every`` the held-out NLL of the current (non-EMA) weights is also logged against steps and
    training FLOPs (the compute curves of the matched-compute experiment).
    """
    out_dir = Path(out_dir)
    pc = cfg.planner
    train_idx, val_idx = split_episodes(len(episodes), cfg.val_fraction, cfg.seed)
    tr = make_windows([episodes[i] for i in train_idx], pc.obs_horizon, pc.plan_horizon)
    policy = PlannerPolicy.build(pc, tr, layout, seed=cfg.seed)
    tokens = policy.encode_actions(tr["actions"])
    va = make_windows([episodes[i] for i in val_idx], pc.obs_horizon, pc.plan_horizon) if val_idx else None
    if va is not None and va["obs"].shape[0] > max_val_windows:
        keep = torch.randperm(va["obs"].shape[0], generator=torch.Generator().manual_seed(cfg.seed))[:max_val_windows]
        va = {k: v[keep] for k, v in va.items()}
    bs, seed = cfg.train.batch_size, cfg.train.seed
    flops = training_flops(policy, cfg.train.steps, bs, seed)

    def batch_fn(step: int, gen: torch.Generator) -> dict:
        idx = torch.randint(tokens.shape[0], (bs,), generator=gen)
        return {"obs": tr["obs"][idx], "tokens": tokens[idx], "loops": policy.train_loops_at(step, seed)}

    def loss_fn(model, batch, gen):
        return policy.compute_loss(model, batch, gen, batch["loops"])

    curve: list[dict] = []
    loops_list = tuple(eval_loops or (pc.sample_loops,))

    def on_log(record: dict) -> None:
        if not eval_every or va is None or record["step"] % eval_every:
            return
        point = {"step": record["step"], "train_flops": float(flops[record["step"] - 1]), "loss": record["loss"],
                 "val_bits": _val_bits(policy, va, cfg, loops_list)}
        policy.model.train()
        curve.append(point)
        if on_curve is not None:
            on_curve(point)

    result = train(policy.model, loss_fn, batch_fn, cfg.train, out_dir, desc=desc, resume=resume, on_log=on_log)
    policy.model.load_state_dict(result.ema_model.state_dict())
    policy.model.eval()
    metrics = {
        "parameters": policy.model.num_parameters(),
        "flops_per_forward": {str(s): policy.model.flops(s) for s in loops_list},
        "train_flops": float(flops[-1]),
        "train_steps": result.steps, "wall_time_s": result.wall_time, "final_loss": result.final_loss,
        "episodes": {"train": len(train_idx), "val": len(val_idx)},
        "windows": {"train": int(tokens.shape[0]), "val": 0 if va is None else int(va["obs"].shape[0])},
        "tokenizer": {"kind": policy.tokenizer.kind, "vocab_size": policy.tokenizer.vocab_size,
                      "plan_tokens": policy.plan_tokens,
                      "recon_train": policy.tokenizer.reconstruction_error(tr["actions"]),
                      "recon_val": None if va is None else policy.tokenizer.reconstruction_error(va["actions"])},
        "val_bits_per_token": None if va is None else _val_bits(policy, va, cfg, loops_list),
    }
    policy.save(out_dir / POLICY_DIR, extra={"metrics": metrics})
    write_json(out_dir / METRICS_FILE, {**metrics, "curve": curve})
    return FitOutput(policy, result, metrics, curve)


def _val_bits(policy: PlannerPolicy, va: dict, cfg: PlannerTrainConfig, loops: tuple[int, ...]) -> dict:
    # A fixed generator: every model and every call scores the same mask orders (common random numbers).
    out = {}
    for s in loops:
        g = torch.Generator().manual_seed(12345)
        out[str(s)] = policy.nll_bits(va["obs"], va["actions"], g, loops=s, num_samples=cfg.nll_samples)
    return out


__all__ = ["fit", "FitOutput", "split_episodes", "training_flops", "POLICY_DIR", "METRICS_FILE"]
