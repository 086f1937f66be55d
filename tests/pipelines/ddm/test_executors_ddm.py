"""The same experts whichever executor trains them, and a real kill of a training process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from simdiff.pipelines.ddm.trainer import member_dir, train_ddm

from .conftest import load, tiny_config

MEMBERS = ["expert_0", "router"]


def _weights(run: Path, member: str) -> bytes:
    sub = "model"
    return (member_dir(run, member) / sub / "weights.safetensors").read_bytes()


@pytest.mark.ray
@pytest.mark.slow  # two process pools and a Ray instance start here: tens of seconds even on free cores
def test_local_pool_and_ray_give_the_same_experts(trained_run, lattice_data, tmp_path):
    pytest.importorskip("ray")
    import ray

    cfg = load(tiny_config(lattice_data))
    try:
        for backend in ("local", "ray"):
            run = tmp_path / backend
            summary = train_ddm(cfg, run, backend=backend, workers=2, members=MEMBERS, command=["test"])
            assert {summary["members"][m]["status"] for m in MEMBERS} == {"trained"}
            for m in MEMBERS:   # bit-identical to the run trained in this process (sequential backend)
                assert _weights(run, m) == _weights(trained_run[0], m), (backend, m)
    finally:
        if ray.is_initialized():
            ray.shutdown()


@pytest.mark.slow
def test_killing_the_training_process_then_rerunning_finishes_from_checkpoints(trained_run, lattice_data, tmp_path):
    """SIGKILL `simdiff ddm train` in the middle of expert 0, rerun: expert 0 resumes, the result is unchanged."""
    import yaml

    cfg = tiny_config(lattice_data, **{"skild.train.steps": 300, "skild.train.ckpt_every": 20})
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "simdiff", "ddm", "train", str(path), "--out", str(run), "--executor", "sequential",
           "--only", "expert_0", "expert_1"]
    env = {**os.environ, "SIMDIFF_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ck = member_dir(run, "expert_0") / "checkpoint" / "meta.json"
    deadline = time.time() + 300
    while not ck.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert ck.exists() and proc.poll() is None, "expected the run to be mid-way through expert 0"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (member_dir(run, "expert_0") / "model").exists()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "expert_0     resumed" in done.stdout
    # the same weights as an uninterrupted run of the same config
    ref = tmp_path / "ref"
    train_ddm(load(cfg), ref, backend="sequential", members=["expert_0"], command=["test"])
    assert _weights(run, "expert_0") == _weights(ref, "expert_0")
