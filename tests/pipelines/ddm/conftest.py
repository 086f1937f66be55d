"""Shared fixtures for the decentralized-diffusion tests: tiny synthetic lattices and a tiny trained run."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

L = 8


@pytest.fixture(autouse=True)
def _one_thread():
    """Bit-exact comparisons, and small tensors: extra intra-op threads only add synchronisation."""
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


def make_lattices(n: int = 48, seed: int = 0, levels=(0.5, 0.8, 1.0)) -> np.ndarray:
    """Three well-separated kinds of +-1 lattices (mean spin 0, 0.6, 1), ``n // 3`` each."""
    rng = np.random.default_rng(seed)
    p = np.repeat(levels, n // len(levels))
    return np.where(rng.random((p.size, L, L)) < p[:, None, None], 1, -1).astype(np.int8)


def write_lattices(path: Path, spins: np.ndarray) -> Path:
    np.savez(path, spins=spins)
    return path


def tiny_config(data_path: Path | str, **over) -> dict:
    cfg = {
        "name": "tiny", "domain": "ising", "num_experts": 3,
        "partition": {"n_init": 2, "spectral_shells": 0},
        "router": {"channels": 4, "depth": 1, "hidden": 16, "time_dim": 8, "steps": 12, "batch_size": 16},
        "compute": {"min_steps": 5},
        "skild": {"data": {"path": str(data_path), "L": L}, "process": {"num_steps": 40},
                  "model": {"base_channels": 4, "channel_mults": [1, 2], "time_dim": 8},
                  "train": {"steps": 30, "batch_size": 8, "ckpt_every": 4, "log_every": 4, "warmup_steps": 2},
                  "sample": {"steps": 5, "batch_size": 16}},
    }
    for k, v in over.items():
        node = cfg
        *head, last = k.split(".")
        for h in head:
            node = node[h]
        node[last] = v
    return cfg


def load(cfg: dict):
    from simdiff.config import load_config
    from simdiff.pipelines.ddm.config import DDMConfig

    return load_config(DDMConfig, cfg)


@pytest.fixture(scope="session")
def lattice_data(tmp_path_factory) -> Path:
    return write_lattices(tmp_path_factory.mktemp("ddm_data") / "train.npz", make_lattices())


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, lattice_data) -> tuple[Path, dict]:
    """A finished tiny run (3 experts, router, monolith), trained once in this process; treat as read-only."""
    from simdiff.pipelines.ddm.trainer import train_ddm

    run = tmp_path_factory.mktemp("ddm_run") / "run"
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        summary = train_ddm(load(tiny_config(lattice_data)), run, backend="sequential", command=["test"])
    finally:
        torch.set_num_threads(prev)
    return run, summary


@pytest.fixture
def run_copy(trained_run, tmp_path) -> Path:
    """A private copy of the trained run, free to damage."""
    dst = tmp_path / "run"
    shutil.copytree(trained_run[0], dst)
    return dst
