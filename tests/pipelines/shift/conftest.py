"""Small demo files and policy checkpoints for the shift tests (built once per test session)."""

from __future__ import annotations

from pathlib import Path

import pytest

ENV = "simdiff/Push-v0"


def write_demo_file(path: Path, level: int, episodes: int, seed: int) -> Path:
    from envs.collect import collect, dataset_attrs
    from envs.datasets import write_demos

    eps = collect(ENV, episodes, seed=seed, level=level)
    return write_demos(path, eps, {"env_name": ENV, "env_kwargs": {"level": level}},
                       dataset_attrs(ENV, {"level": level}, {"seed": seed}))


@pytest.fixture(scope="session")
def demos_l0(tmp_path_factory) -> Path:
    return write_demo_file(tmp_path_factory.mktemp("demos") / "demos_l0.hdf5", level=0, episodes=8, seed=0)


@pytest.fixture(scope="session")
def untrained_policy(tmp_path_factory, demos_l0) -> Path:
    """A valid diffusion-policy run directory (``DIR/policy``) with untrained weights: exercises loading and
    batched sampling through the runner without spending time on training."""
    import torch

    from policies.diffusion.config import load_policy_config
    from policies.diffusion.data import load_episodes
    from policies.diffusion.policy import DiffusionPolicy

    torch.manual_seed(0)
    cfg = load_policy_config({"noise": {"inference_steps": 2}})
    pol = DiffusionPolicy.from_episodes(cfg, load_episodes(demos_l0))
    out = tmp_path_factory.mktemp("policy") / "tiny"
    pol.save(out / "policy")
    return out
