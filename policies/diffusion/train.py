"""Train a diffusion policy on demonstrations with the engine's loop (``simdiff.training.train``).

Run directory::

    out_dir/checkpoint/     training state (model, EMA, optimizer) + the policy description; resumable
    out_dir/metrics.jsonl   loss, lr, grad norm (and ``eval_metrics.jsonl`` with periodic evaluations)
    out_dir/loss.png        loss curve
    out_dir/policy/         the exported policy (EMA weights + config, normalizers, dataset fingerprint,
                            metrics): what ``DiffusionPolicy.load(out_dir)`` and ``simdiff policy eval`` read

Resuming checks that the data are the same (dataset fingerprint) and the config matches the checkpoint.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from policies.diffusion.config import DiffusionPolicyConfig
from policies.diffusion.data import Episodes, WindowSampler
from policies.diffusion.policy import POLICY_DIR, TRAIN_CKPT_DIR, DiffusionPolicy
from simdiff.errors import CheckpointError

EVAL_METRICS = "eval_metrics.jsonl"
EvalFn = Callable[[DiffusionPolicy, int], dict]


@dataclass(frozen=True, eq=False)
class PolicyTrainResult:
    policy: DiffusionPolicy        #: EMA weights, ready for inference
    out_dir: Path
    steps: int
    final_loss: float
    wall_time: float               #: training seconds over all calls (resumes included)
    samples_per_s: float           #: training windows per wall second in this call's last segment
    cpu_time: float                #: CPU seconds of this process spent training in this call (free-core proxy)
    evals: list[dict]


def trainer_config(cfg: DiffusionPolicyConfig):
    """The engine's :class:`~simdiff.training.TrainConfig` for this policy config."""
    from simdiff.training import TrainConfig

    t = cfg.train
    return TrainConfig(steps=t.steps, batch_size=t.batch_size, lr=t.lr, weight_decay=t.weight_decay,
                       warmup_steps=min(t.warmup_steps, t.steps), min_lr_ratio=t.min_lr_ratio,
                       grad_clip=t.grad_clip, ema_power=t.ema_power, ema_max_decay=t.ema_max_decay,
                       log_every=t.log_every, ckpt_every=t.ckpt_every, seed=t.seed)


def _check_resume(out_dir: Path, fingerprint: str) -> None:
    from simdiff.checkpoint import read_meta, resolve_checkpoint_dir

    src = resolve_checkpoint_dir(out_dir / TRAIN_CKPT_DIR)
    if src is None:
        return
    stored = ((read_meta(src).get("extra") or {}).get("dataset") or {}).get("fingerprint")
    if stored is not None and stored != fingerprint:
        raise CheckpointError(f"{src}: was trained on different data (dataset fingerprint {stored[:12]}..., "
                              f"this data {fingerprint[:12]}...); use a new output directory")


def train_policy(cfg: DiffusionPolicyConfig, episodes: Episodes, out_dir: str | os.PathLike, *,
                 resume: bool = True, eval_fn: EvalFn | None = None, desc: str = "train policy",
                 on_log: Callable[[dict], None] | None = None, stop_after: int | None = None) -> PolicyTrainResult:
    """Fit normalizers on ``episodes``, train for ``cfg.train.steps`` steps (resuming from ``out_dir``), export.

    ``eval_fn(policy, step) -> dict`` runs every ``cfg.eval.every`` steps on the EMA policy (results are
    appended to ``out_dir/eval_metrics.jsonl``). ``stop_after`` stops early like a kill (tests).
    """
    out_dir = Path(out_dir)
    policy = DiffusionPolicy.from_episodes(cfg, episodes)
    _check_resume(out_dir, policy.dataset["fingerprint"])
    To, Tp, Ta = policy.horizons
    sampler = WindowSampler(episodes, To, Tp, Ta)
    tcfg = trainer_config(cfg)
    batch_size = cfg.train.batch_size

    def batch_fn(step: int, gen: torch.Generator) -> dict:
        return sampler.sample(batch_size, gen)

    def loss_fn(model: torch.nn.Module, batch: dict, gen: torch.Generator) -> torch.Tensor:
        return policy.compute_loss(batch, gen, model=model)

    every = cfg.eval.every if eval_fn is not None else 0
    end = cfg.train.steps if stop_after is None else min(stop_after, cfg.train.steps)
    evals: list[dict] = []
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(cfg.train.threads)
    done = _checkpoint_step(out_dir) if resume else 0
    logged = _logged_eval_steps(out_dir)
    cpu0 = time.process_time()
    cpu_eval = 0.0
    try:
        while True:
            # Train up to the next evaluation point (a checkpoint step, so the next segment resumes exactly).
            target = end if not every else min(end, (done // every + 1) * every)
            result, seg_rate = _segment(policy, loss_fn, batch_fn, tcfg, out_dir, resume, desc, on_log,
                                        target, batch_size)
            resume, done = True, result.steps
            if every and done % every == 0 and done not in logged:
                c = time.process_time()
                evals.append(_run_eval(policy, result, eval_fn, out_dir))
                cpu_eval += time.process_time() - c
                logged.add(done)
            if done >= end:
                break
    finally:
        torch.set_num_threads(prev_threads)
    cpu = time.process_time() - cpu0 - cpu_eval
    policy.ema = result.ema_model.eval()
    metrics = {"steps": result.steps, "final_loss": result.final_loss, "train_wall_time_s": result.wall_time,
               "train_cpu_time_s": cpu, "samples_per_s": seg_rate}
    if evals:
        metrics["last_eval"] = evals[-1]
    if result.completed:
        policy.save(out_dir / POLICY_DIR, metrics)
    return PolicyTrainResult(policy, out_dir, result.steps, result.final_loss, result.wall_time, seg_rate, cpu,
                             evals)


def _checkpoint_step(out_dir: Path) -> int:
    from simdiff.checkpoint import read_meta, resolve_checkpoint_dir

    src = resolve_checkpoint_dir(out_dir / TRAIN_CKPT_DIR)
    return int(read_meta(src).get("step", 0)) if src is not None else 0


def _logged_eval_steps(out_dir: Path) -> set[int]:
    path = out_dir / EVAL_METRICS
    if not path.exists():
        return set()
    steps = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            steps.add(int(json.loads(line)["step"]))
        except (ValueError, KeyError, TypeError):
            continue  # a half-written last line from a kill
    return steps


def _segment(policy, loss_fn, batch_fn, tcfg, out_dir, resume, desc, on_log, target, batch_size):
    from simdiff.training import train

    t0 = time.perf_counter()
    result = train(policy.model, loss_fn, batch_fn, tcfg, out_dir, desc=desc, resume=resume, on_log=on_log,
                   stop_after=target, meta=policy.meta())
    secs = time.perf_counter() - t0
    steps_run = result.steps - (result.resumed_from or 0)
    return result, (steps_run * batch_size / secs if secs > 0 and steps_run > 0 else 0.0)


def _run_eval(policy: DiffusionPolicy, result: Any, eval_fn: EvalFn, out_dir: Path) -> dict:
    saved = policy.ema
    policy.ema = result.ema_model.eval()
    try:
        summary = {"step": result.steps, **eval_fn(policy, result.steps)}
    finally:
        policy.ema = saved
    with open(out_dir / EVAL_METRICS, "a", encoding="utf-8") as f:
        f.write(json.dumps(summary) + "\n")
    return summary


__all__ = ["train_policy", "trainer_config", "PolicyTrainResult", "EVAL_METRICS"]
