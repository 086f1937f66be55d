from __future__ import annotations

import importlib.util
import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from simdiff.checkpoint import load_checkpoint
from simdiff.errors import CheckpointError
from simdiff.training import (
    TrainConfig,
    ema_decay_at,
    ema_update,
    lr_at,
    read_metrics,
    resolve_device,
    step_seed,
    to_device,
    train,
)

WORKER = Path(__file__).with_name("train_resume_worker.py")


def _worker():
    spec = importlib.util.spec_from_file_location("train_resume_worker", WORKER)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _assert_same_weights(dir_a: Path, dir_b: Path) -> None:
    ta, ma = load_checkpoint(dir_a / "checkpoint")
    tb, mb = load_checkpoint(dir_b / "checkpoint")
    assert ma["step"] == mb["step"] and set(ta) == set(tb)
    assert any(k.startswith("optimizer/") for k in ta) and any(k.startswith("ema/") for k in ta)
    for k in ta:
        assert torch.equal(ta[k], tb[k]), f"{k} differs"


def _losses(out_dir: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in read_metrics(out_dir / "metrics.jsonl")]


# ------------------------------------------------------------------------------------------ config & maths
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"steps": 0}, r"steps: expected a value in \[1, inf\], received 0"),
        ({"lr": 0.0}, r"lr: expected a value in \(0, inf\], received 0.0"),
        ({"ema_decay": 1.0}, r"ema_decay: expected a value in \[0, 1\), received 1.0"),
        ({"grad_clip": -1.0}, r"grad_clip: expected a value in \(0, inf\]"),
        ({"betas": (0.9, 1.0)}, r"betas\[1\]: expected a value in \[0, 1\)"),
        ({"min_lr_ratio": 2.0}, r"min_lr_ratio: expected a value in \[0, 1\]"),
    ],
)
def test_train_config_range_checks(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kwargs)


def test_lr_warmup_cosine_and_ema_schedules():
    cfg = TrainConfig(steps=110, lr=1.0, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_at(0, cfg) == pytest.approx(0.1) and lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(10, cfg) == pytest.approx(1.0)
    assert lr_at(60, cfg) == pytest.approx(0.1 + 0.9 * 0.5)                   # half way through the cosine
    assert lr_at(110, cfg) == pytest.approx(0.1)
    lrs = [lr_at(k, cfg) for k in range(10, 110)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))
    power = TrainConfig(ema_power=0.75, ema_max_decay=0.9999)
    assert ema_decay_at(0, power) == 0.0                                       # EMA starts as the model
    assert ema_decay_at(1, power) == pytest.approx(1 - 2**-0.75)
    assert ema_decay_at(10**9, power) == 0.9999
    assert ema_decay_at(5, TrainConfig(ema_decay=0.99)) == 0.99
    assert step_seed(1, 2) != step_seed(2, 1) and step_seed(0, 0) == step_seed(0, 0)
    assert len({step_seed(s, k) for s in range(20) for k in range(50)}) == 1000


# -------------------------------------------------------------------------------------------- the loop
def test_train_learns_and_writes_its_run_directory(tmp_path, one_thread):
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    w_true = torch.tensor([[1.0, -2.0, 0.5, 3.0]])

    def batch_fn(step, g):
        x = torch.randn(64, 4, generator=g)
        return x, x @ w_true.T

    def loss_fn(net, batch, g):
        x, y = batch
        return (net(x) - y).pow(2).squeeze(1)

    cfg = TrainConfig(steps=300, lr=0.05, warmup_steps=10, log_every=20, ckpt_every=100, ema_decay=0.9)
    logged = []
    res = train(model, loss_fn, batch_fn, cfg, tmp_path / "run", on_log=logged.append)
    assert res.completed and res.steps == 300 and res.resumed_from is None
    assert torch.allclose(model.weight, w_true, atol=1e-2)
    assert torch.allclose(res.ema_model.weight, w_true, atol=5e-2)
    recs = read_metrics(res.metrics_path)
    assert [r["step"] for r in recs] == list(range(20, 301, 20)) and recs == logged
    assert set(recs[0]) == {"step", "loss", "lr", "grad_norm", "time"}
    assert recs[-1]["loss"] < 1e-3 < recs[0]["loss"] and res.final_loss == recs[-1]["loss"]
    assert (tmp_path / "run" / "loss.png").read_bytes()[:4] == b"\x89PNG" and res.loss_plot is not None
    tensors, meta = load_checkpoint(res.checkpoint_dir)
    assert meta["step"] == 300 and meta["config"]["lr"] == 0.05
    assert torch.equal(tensors["model/weight"], model.weight.detach())
    # Running again on a finished run resumes at the end and does nothing.
    again = train(model, loss_fn, batch_fn, cfg, tmp_path / "run")
    assert again.resumed_from == 300 and again.steps == 300


def test_train_refuses_mismatched_or_unwanted_resume_and_bad_losses(tmp_path):
    mod = _worker()
    model, loss_fn, batch_fn = mod.build()
    train(model, loss_fn, batch_fn, mod.CFG, tmp_path / "run", stop_after=10)
    other = TrainConfig(**{**mod.CFG.__dict__, "lr": 1e-2, "log_every": 3})     # log_every may change
    with pytest.raises(CheckpointError, match=r"does not match the config:\n  lr: checkpoint has 0.003, "
                                              r"expected 0.01$"):
        train(*mod.build(), other, tmp_path / "run")
    with pytest.raises(FileExistsError, match="resume it"):
        train(*mod.build(), mod.CFG, tmp_path / "run", resume=False)
    with pytest.raises(ValueError, match=r"loss_fn: expected a per-sample loss tensor of shape \(B,\), "
                                         r"received \(\)"):
        train(model, lambda m, b, g: loss_fn(m, b, g).mean(), batch_fn, mod.CFG, tmp_path / "other")
    with pytest.raises(FloatingPointError, match="loss is nan at step 0"):
        train(model, lambda m, b, g: loss_fn(m, b, g) * math.nan, batch_fn, mod.CFG, tmp_path / "nan")


def test_stop_and_resume_is_bit_identical_to_an_uninterrupted_run(tmp_path, one_thread):
    mod = _worker()
    _, ref = mod.run(tmp_path / "ref")
    # Stop at step 27 (last checkpoint at 20): the steps after it are lost, as in a kill, and redone.
    _, part = mod.run(tmp_path / "resumed", stop_after=27)
    assert not part.completed and part.steps == 27 and part.loss_plot is None
    _, res = mod.run(tmp_path / "resumed")
    assert res.completed and res.resumed_from == 20
    _assert_same_weights(tmp_path / "ref", tmp_path / "resumed")
    # The metrics log is trimmed to the checkpoint and re-logged: same steps, same losses, no duplicates.
    assert _losses(tmp_path / "resumed") == _losses(tmp_path / "ref")


def test_sigkill_mid_run_then_resume_is_bit_identical(tmp_path, one_thread):
    mod = _worker()
    out = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SIMDIFF_NO_PROGRESS": "1"}
    proc = subprocess.Popen([sys.executable, str(WORKER), str(out), "0.02"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        for line in proc.stdout:
            if line.startswith("step ") and int(line.split()[1]) >= 35:
                break
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read()
    killed_at = load_checkpoint(out / "checkpoint")[1]["step"]
    assert 30 <= killed_at < mod.CFG.steps                                    # killed mid-run, after a checkpoint
    _, res = mod.run(out)
    assert res.completed and res.resumed_from == killed_at
    mod.run(tmp_path / "ref")
    _assert_same_weights(tmp_path / "ref", out)
    assert _losses(out) == _losses(tmp_path / "ref")
    assert all(json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines())


# ------------------------------------------------------------------------------------------------- devices
def test_device_resolution_and_batch_moves():
    assert resolve_device(None) is None and resolve_device("cpu") is None
    with pytest.raises(ValueError, match=r"device: expected 'cpu', 'cuda' or 'cuda:N', received 'tpu'"):
        resolve_device("tpu")
    with pytest.raises(ValueError, match="device: expected 'cpu', 'cuda' or 'cuda:N', received 'meta'"):
        resolve_device("meta")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="sees no CUDA device"):
            resolve_device("cuda")
    batch = {"x": torch.ones(2), "pair": (torch.zeros(1), 3), "name": "a"}
    assert to_device(batch, None) is batch
    moved = to_device(batch, torch.device("cpu"))
    assert moved["name"] == "a" and moved["pair"][1] == 3 and isinstance(moved["pair"], tuple)
    assert torch.equal(moved["x"], batch["x"])


def test_explicit_cpu_device_trains_the_same_weights(tmp_path, one_thread):
    def run(out, device):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1))

        def batch_fn(step, g):
            x = torch.randn(16, 3, generator=g)
            return {"x": x, "y": x.sum(1, keepdim=True)}

        def loss_fn(net, batch, g):
            return (net(batch["x"]) - batch["y"]).pow(2).squeeze(1)

        train(model, loss_fn, batch_fn, TrainConfig(steps=20, log_every=10, ckpt_every=0), out, device=device)
    run(tmp_path / "a", None)
    run(tmp_path / "b", "cpu")
    _assert_same_weights(tmp_path / "a", tmp_path / "b")


def test_ema_update_matches_the_per_parameter_formula():
    torch.manual_seed(0)
    model, ema = nn.Linear(3, 2), nn.Linear(3, 2)
    want = [0.9 * pe + 0.1 * p for pe, p in zip(ema.parameters(), model.parameters())]
    ema_update(ema, model, 0.9)
    for got, w in zip(ema.parameters(), want):
        assert torch.allclose(got, w, atol=1e-7)
