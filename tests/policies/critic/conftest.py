"""Shared fixtures for the critic tests: a tiny untrained Push-v0 diffusion policy (no demos, no training)."""

from __future__ import annotations

import numpy as np
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


def make_tiny_policy(seed: int = 0, num_tasks: int = 0):
    """A DiffusionPolicy shaped for Push-v0 (obs 20 = state 12 + context 8, action 2) with random weights."""
    from policies.diffusion.config import load_policy_config
    from policies.diffusion.normalizer import Normalizer
    from policies.diffusion.policy import DiffusionPolicy

    cfg = load_policy_config({"horizon": {"obs": 2, "prediction": 8, "action": 4},
                              "model": {"size": "tiny", "down_dims": [16, 32], "step_embed_dim": 16,
                                        "num_tasks": num_tasks},
                              "noise": {"train_steps": 50, "inference_steps": 4},
                              "train": {"seed": seed}})
    act = Normalizer("minmax", np.full(2, 1.0), np.zeros(2))
    return DiffusionPolicy(cfg, 20, 2, {"state": (0, 12), "context": (12, 20)}, Normalizer.identity(12), act)


@pytest.fixture
def tiny_policy():
    return make_tiny_policy()


@pytest.fixture
def make_policy():
    """Factory of tiny policies: ``make_policy(seed=0, num_tasks=0)``."""
    return make_tiny_policy
