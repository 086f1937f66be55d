"""One small training loop: AdamW, warmup + cosine decay, gradient clipping, EMA, metrics, checkpoint/resume.

Determinism: every step ``k`` draws its randomness from ``step_seed(cfg.seed, k)`` (a fresh
``torch.Generator`` handed to ``batch_fn`` and ``loss_fn``, and ``torch.manual_seed`` for module randomness
such as dropout). Nothing depends on how many steps ran before in this process, so a run killed at any point
and resumed from its last checkpoint ends with bit-identical weights to an uninterrupted run (same machine,
same thread count).

Run directory written by :func:`train`::

    out_dir/metrics.jsonl      one JSON object per log step: step, loss, lr, grad_norm, time
    out_dir/checkpoint/        safetensors + JSON (model, ema, optimizer, step, config); see simdiff.checkpoint
    out_dir/loss.png           loss curve, written when the run completes
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from simdiff.checkpoint import (
    check_compatible,
    load_checkpoint,
    load_module_tensors,
    load_optimizer_tensors,
    module_tensors,
    optimizer_to_tensors,
    resolve_checkpoint_dir,
    save_checkpoint,
)
from simdiff.config import check_range, to_dict
from simdiff.errors import CheckpointError
from simdiff.utils.io import atomic_write_bytes, atomic_write_text
from simdiff.utils.progress import progress

BatchFn = Callable[[int, torch.Generator], Any]
LossFn = Callable[[nn.Module, Any, torch.Generator], Tensor]

CHECKPOINT_DIR = "checkpoint"
METRICS_FILE = "metrics.jsonl"
LOSS_PLOT = "loss.png"
# Fields that may change between a run and its resume without changing the weights it produces.
_RESUME_FREE_FIELDS = ("log_every", "ckpt_every")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings of :func:`train`.

    EMA: with ``ema_decay`` set, the EMA uses that fixed decay; otherwise the power schedule of Diffusion
    Policy / diffusers ``EMAModel``: ``decay_k = min(ema_max_decay, 1 - (1 + k)^-ema_power)`` (0 at the
    first step, so the EMA starts as a copy of the model).
    """

    steps: int = 1000                 #: total optimisation steps
    batch_size: int = 256             #: passed along for batch_fn builders; the loop itself does not read it
    lr: float = 1e-3                  #: peak learning rate (reached after warmup)
    weight_decay: float = 1e-6        #: AdamW decoupled weight decay
    betas: tuple[float, float] = (0.9, 0.999)  #: AdamW betas
    warmup_steps: int = 0             #: linear warmup from 0 to lr over this many steps
    min_lr_ratio: float = 0.0         #: cosine decay ends at lr * min_lr_ratio
    grad_clip: float | None = 1.0     #: max global grad norm (None: no clipping; the norm is still logged)
    ema_decay: float | None = None    #: fixed EMA decay, or None for the power schedule below
    ema_power: float = 0.75           #: power of the EMA warmup schedule
    ema_max_decay: float = 0.9999     #: cap of the EMA power schedule
    log_every: int = 50               #: append a metrics line every this many steps (and at the end)
    ckpt_every: int = 500             #: checkpoint every this many steps (0: only at the end)
    seed: int = 0                     #: root of every per-step generator

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "log_every"):
            check_range(name, getattr(self, name), lo=1)
        for name in ("warmup_steps", "ckpt_every", "seed"):
            check_range(name, getattr(self, name), lo=0)
        check_range("lr", self.lr, lo=0.0, lo_open=True)
        check_range("weight_decay", self.weight_decay, lo=0.0)
        check_range("min_lr_ratio", self.min_lr_ratio, lo=0.0, hi=1.0)
        if len(self.betas) != 2:
            raise ValueError(f"betas: expected 2 values, received {self.betas!r}")
        for i, b in enumerate(self.betas):
            check_range(f"betas[{i}]", b, lo=0.0, hi=1.0, hi_open=True)
        if self.grad_clip is not None:
            check_range("grad_clip", self.grad_clip, lo=0.0, lo_open=True)
        if self.ema_decay is not None:
            check_range("ema_decay", self.ema_decay, lo=0.0, hi=1.0, hi_open=True)
        check_range("ema_power", self.ema_power, lo=0.0, lo_open=True)
        check_range("ema_max_decay", self.ema_max_decay, lo=0.0, hi=1.0, hi_open=True)


@dataclass(frozen=True, eq=False)
class TrainResult:
    steps: int                        #: steps completed (== cfg.steps unless stopped early)
    completed: bool                   #: True when the run reached cfg.steps
    final_loss: float                 #: mean loss of the last logged window
    wall_time: float                  #: seconds, summed over every call that contributed (resumes included)
    resumed_from: int | None          #: step of the checkpoint this call started from, if any
    out_dir: Path
    checkpoint_dir: Path
    metrics_path: Path
    loss_plot: Path | None
    ema_model: nn.Module = field(repr=False)


# ----------------------------------------------------------------------------------------- pure schedules
def step_seed(seed: int, step: int) -> int:
    """A 63-bit seed for step ``step`` of run ``seed`` (SplitMix64 finaliser; no Python ``hash``)."""
    mask = (1 << 64) - 1
    z = (seed * 0x9E3779B97F4A7C15 + step + 1) & mask
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    return (z ^ (z >> 31)) & ((1 << 63) - 1)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate of 0-based ``step``: linear warmup to ``cfg.lr``, then cosine decay to ``lr*min_lr_ratio``."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(cfg.steps - cfg.warmup_steps, 1)
    progress_ = min((step - cfg.warmup_steps) / span, 1.0)
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + (cfg.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress_))


def ema_decay_at(step: int, cfg: TrainConfig) -> float:
    """EMA decay used after 0-based ``step`` (fixed, or the power schedule; see :class:`TrainConfig`)."""
    if cfg.ema_decay is not None:
        return cfg.ema_decay
    return max(0.0, min(cfg.ema_max_decay, 1.0 - (1.0 + step) ** -cfg.ema_power))


@torch.no_grad()
def ema_update(ema_model: nn.Module, model: nn.Module, decay: float) -> None:
    """``ema <- decay * ema + (1 - decay) * model`` for parameters; buffers are copied."""
    ema_params = list(ema_model.parameters())
    if ema_params:
        # one multi-tensor kernel instead of a launch per parameter (matters on a GPU)
        torch._foreach_lerp_(ema_params, [p.detach() for p in model.parameters()], 1.0 - decay)
    for be, b in zip(ema_model.buffers(), model.buffers()):
        be.copy_(b)


def to_device(batch: Any, device: torch.device | None) -> Any:
    """``batch`` (a tensor, or a dict / list / tuple of them) on ``device``; ``None`` leaves it as it is."""
    if device is None:
        return batch
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def resolve_device(device: str | torch.device | None) -> torch.device | None:
    """``None``/``"cpu"`` -> ``None`` (train where the model is); ``"cuda"``/``"cuda:N"`` checked to exist."""
    if device is None:
        return None
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device: expected 'cpu', 'cuda' or 'cuda:N', received {device!r}") from exc
    if dev.type == "cpu":
        return None
    if dev.type != "cuda":
        raise ValueError(f"device: expected 'cpu', 'cuda' or 'cuda:N', received {device!r}")
    if not torch.cuda.is_available():
        raise ValueError(f"device: {device!r} was asked for, but this torch build sees no CUDA device "
                         f"(torch {torch.__version__}); use --device cpu")
    return dev


# --------------------------------------------------------------------------------------------- run state
@dataclass
class _State:
    step: int = 0                     # steps completed
    elapsed: float = 0.0              # wall seconds of earlier calls
    window: list = field(default_factory=lambda: [0.0, 0, 0.0])  # loss sum, count, grad-norm sum since log
    last_loss: float = float("nan")


def _checkpoint_meta(cfg: TrainConfig, state: _State, opt_skeleton: Any, extra: dict | None) -> dict:
    return {"kind": "simdiff.train", "step": state.step, "elapsed": state.elapsed, "window": state.window,
            "last_loss": state.last_loss, "config": to_dict(cfg), "optimizer": opt_skeleton,
            "extra": extra or {}}


def _save(out_dir: Path, model: nn.Module, ema: nn.Module, opt: torch.optim.Optimizer, cfg: TrainConfig,
          state: _State, extra: dict | None) -> None:
    opt_tensors, opt_skeleton = optimizer_to_tensors("optimizer", opt)
    tensors = {**module_tensors("model", model), **module_tensors("ema", ema), **opt_tensors}
    save_checkpoint(out_dir / CHECKPOINT_DIR, tensors, _checkpoint_meta(cfg, state, opt_skeleton, extra))


def _restore(out_dir: Path, model: nn.Module, ema: nn.Module, opt: torch.optim.Optimizer,
             cfg: TrainConfig) -> _State:
    tensors, meta = load_checkpoint(out_dir / CHECKPOINT_DIR)
    if meta.get("kind") != "simdiff.train":
        raise CheckpointError(f"{out_dir / CHECKPOINT_DIR}: not a training checkpoint (kind={meta.get('kind')!r})")
    check_compatible(meta, to_dict(cfg), ignore=_RESUME_FREE_FIELDS)
    load_module_tensors(model, "model", tensors)
    load_module_tensors(ema, "ema", tensors)
    load_optimizer_tensors(opt, meta["optimizer"], tensors)
    return _State(step=int(meta["step"]), elapsed=float(meta["elapsed"]), window=list(meta["window"]),
                  last_loss=float(meta["last_loss"]))


def _trim_metrics(path: Path, upto_step: int) -> None:
    """Keep the metrics lines up to ``upto_step``: later ones (and a half-written last line) are re-logged."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and rec.get("step", math.inf) <= upto_step:
            kept.append(line)
    atomic_write_text(path, "".join(x + "\n" for x in kept))


def _append_metrics(path: Path, record: dict) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()


# -------------------------------------------------------------------------------------------------- loop
def _train_step(model: nn.Module, ema: nn.Module, opt: torch.optim.Optimizer, loss_fn: LossFn,
                batch_fn: BatchFn, cfg: TrainConfig, step: int, device: torch.device | None = None
                ) -> tuple[float, float]:
    seed = step_seed(cfg.seed, step)
    torch.manual_seed(seed)                      # module randomness (dropout) is a function of the step too
    # The generator stays on the CPU on every device: the same step draws the same numbers everywhere, and
    # loss functions move what they draw to the batch's device.
    gen = torch.Generator().manual_seed(seed)
    batch = to_device(batch_fn(step, gen), device)
    losses = loss_fn(model, batch, gen)
    if not isinstance(losses, Tensor) or losses.ndim != 1:
        got = tuple(losses.shape) if isinstance(losses, Tensor) else type(losses).__name__
        raise ValueError(f"loss_fn: expected a per-sample loss tensor of shape (B,), received {got}")
    loss = losses.mean()
    if not torch.isfinite(loss):
        raise FloatingPointError(f"loss is {loss.item()} at step {step}; lower the lr or check the data")
    opt.zero_grad(set_to_none=True)
    loss.backward()
    params = [p for p in model.parameters() if p.grad is not None]
    max_norm = cfg.grad_clip if cfg.grad_clip is not None else math.inf
    grad_norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm)) if params else 0.0
    for group in opt.param_groups:
        group["lr"] = lr_at(step, cfg)
    opt.step()
    ema_update(ema, model, ema_decay_at(step, cfg))
    return float(loss.detach()), grad_norm


def _prepare(out_dir: Path, model: nn.Module, cfg: TrainConfig, resume: bool):
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    ema = copy.deepcopy(model).requires_grad_(False).eval()
    has_ckpt = resolve_checkpoint_dir(out_dir / CHECKPOINT_DIR) is not None
    if has_ckpt and not resume:
        raise FileExistsError(f"{out_dir / CHECKPOINT_DIR} already exists; resume it (resume=True) or "
                              "choose a new output directory")
    state = _restore(out_dir, model, ema, opt, cfg) if has_ckpt else _State()
    _trim_metrics(out_dir / METRICS_FILE, state.step)
    return opt, ema, state, (state.step if has_ckpt else None)


def train(model: nn.Module, loss_fn: LossFn, batch_fn: BatchFn, cfg: TrainConfig, out_dir: str | os.PathLike,
          *, desc: str = "train", resume: bool = True, on_log: Callable[[dict], None] | None = None,
          stop_after: int | None = None, meta: dict | None = None,
          device: str | torch.device | None = None) -> TrainResult:
    """Train ``model`` in place for ``cfg.steps`` steps, resuming from ``out_dir/checkpoint`` when present.

    ``batch_fn(step, generator) -> batch`` and ``loss_fn(model, batch, generator) -> Tensor (B,)`` (per-sample
    losses; the loop takes the mean) get the step's generator: draw all randomness from it. ``on_log(record)``
    is called with each metrics record. ``stop_after`` ends the call once that many steps are done, without
    an extra checkpoint, as a kill would (for tests). ``meta`` is stored in every checkpoint under ``extra``.
    ``device`` (``"cuda"``, ``"cuda:N"``; ``None``/``"cpu"`` = where the model is) moves the model and every
    batch there; checkpoints are device-free, so a run may resume on another device (its weights then match
    an uninterrupted run up to float rounding, not bit for bit).
    """
    out_dir = Path(out_dir)
    dev = resolve_device(device)
    if dev is not None:
        model.to(dev)
    out_dir.mkdir(parents=True, exist_ok=True)
    opt, ema, state, resumed_from = _prepare(out_dir, model, cfg, resume)
    end = cfg.steps if stop_after is None else min(cfg.steps, stop_after)
    t0 = time.perf_counter()
    model.train()
    bar = progress(total=cfg.steps, initial=state.step, desc=desc)
    try:
        while state.step < end:
            loss, grad_norm = _train_step(model, ema, opt, loss_fn, batch_fn, cfg, state.step, dev)
            state.step += 1
            state.window = [state.window[0] + loss, state.window[1] + 1, state.window[2] + grad_norm]
            bar.update(1)
            if state.step % cfg.log_every == 0 or state.step == cfg.steps:
                record = _log(out_dir, state, cfg, t0)
                bar.set_postfix(loss=f"{record['loss']:.4g}")
                if on_log is not None:
                    on_log(record)
            if state.step == cfg.steps or (cfg.ckpt_every and state.step % cfg.ckpt_every == 0):
                snap = _State(state.step, state.elapsed + time.perf_counter() - t0, state.window,
                              state.last_loss)
                _save(out_dir, model, ema, opt, cfg, snap, meta)
    finally:
        bar.close()
    state.elapsed += time.perf_counter() - t0
    completed = state.step >= cfg.steps
    plot = plot_loss(out_dir / METRICS_FILE, out_dir / LOSS_PLOT) if completed else None
    return TrainResult(state.step, completed, state.last_loss, state.elapsed, resumed_from, out_dir,
                       out_dir / CHECKPOINT_DIR, out_dir / METRICS_FILE, plot, ema)


def _log(out_dir: Path, state: _State, cfg: TrainConfig, t0: float) -> dict:
    loss_sum, count, gn_sum = state.window
    state.last_loss = loss_sum / count
    record = {"step": state.step, "loss": state.last_loss, "lr": lr_at(state.step - 1, cfg),
              "grad_norm": gn_sum / count, "time": state.elapsed + time.perf_counter() - t0}
    _append_metrics(out_dir / METRICS_FILE, record)
    state.window = [0.0, 0, 0.0]
    return record


# ------------------------------------------------------------------------------------------------- plots
def read_metrics(metrics_jsonl: str | os.PathLike) -> list[dict]:
    """The records of a metrics.jsonl file (a half-written last line is skipped)."""
    out = []
    for line in Path(metrics_jsonl).read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


def plot_loss(metrics_jsonl: str | os.PathLike, out_png: str | os.PathLike, title: str | None = None) -> Path:
    """Plot ``loss`` against ``step`` from a metrics.jsonl file into ``out_png`` (log scale, Agg backend)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = [r for r in read_metrics(metrics_jsonl) if "step" in r and "loss" in r]
    if not recs:
        raise ValueError(f"{metrics_jsonl}: expected records with 'step' and 'loss', received none")
    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=110)
    ax.plot([r["step"] for r in recs], [r["loss"] for r in recs], lw=1.2)
    if all(r["loss"] > 0 for r in recs):
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title or Path(metrics_jsonl).parent.name)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return atomic_write_bytes(out_png, buf.getvalue())


__all__ = ["TrainConfig", "TrainResult", "train", "to_device", "resolve_device", "step_seed", "lr_at", "ema_decay_at", "ema_update",
           "read_metrics", "plot_loss", "CHECKPOINT_DIR", "METRICS_FILE", "LOSS_PLOT"]
