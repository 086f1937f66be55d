"""Shared fixtures for the diffusion-policy tests: a few Push-v0 expert demos and a tiny config."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

ENV = "simdiff/Push-v0"


@pytest.fixture(autouse=True)
def _one_thread():
    """Small tensors: extra intra-op threads only add synchronisation (very costly on a busy machine)."""
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


def write_push_demos(path: Path, episodes: int, seed: int = 0, level: int = 0) -> Path:
    from envs.collect import collect, dataset_attrs
    from envs.datasets import write_demos

    eps = collect(ENV, episodes, seed=seed, level=level)
    kw = {"level": level}
    return write_demos(path, eps, {"env_name": ENV, "env_kwargs": kw}, dataset_attrs(ENV, kw, {"seed": seed}))


@pytest.fixture(scope="session")
def push_demos(tmp_path_factory) -> Path:
    return write_push_demos(tmp_path_factory.mktemp("diffusion_demos") / "push_l0.hdf5", episodes=8)


@pytest.fixture(scope="session")
def push_episodes(push_demos):
    from policies.diffusion.data import load_episodes

    return load_episodes(push_demos)


@pytest.fixture
def tiny_cfg():
    from policies.diffusion.config import load_policy_config

    return load_policy_config(Path(__file__).parents[3] / "configs" / "policy" / "push_tiny.yaml")
