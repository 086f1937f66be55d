"""Gymnasium registration of the simdiff envs and lookups by env id."""

from __future__ import annotations

import importlib
from typing import Any

import gymnasium as gym

from envs.domains import DomainSpec

# id -> (module, class, max_episode_steps). Behaviour changes bump the version.
_ENVS: dict[str, tuple[str, str, int]] = {
    "simdiff/Push-v0": ("envs.push", "PushEnv", 100),
    "simdiff/Lift-v0": ("envs.lift", "LiftEnv", 120),
}
ENV_IDS: tuple[str, ...] = tuple(_ENVS)


def register_envs() -> None:
    """Register every simdiff env with gymnasium (idempotent)."""
    for env_id, (module, cls, steps) in _ENVS.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=f"{module}:{cls}", max_episode_steps=steps)


def check_env_id(env_id: str) -> str:
    if env_id not in _ENVS:
        raise ValueError(f"unknown env id {env_id!r}; expected one of {', '.join(ENV_IDS)}")
    return env_id


def domain_module(env_id: str):
    return importlib.import_module(_ENVS[check_env_id(env_id)][0])


def domain_spec(env_id: str) -> DomainSpec:
    """The :class:`~envs.domains.DomainSpec` of ``env_id`` (names, nominal values, level ranges, bounds).

    Works without the optional dependencies of the env (e.g. robosuite for Lift-v0).
    ``domain_spec(id).describe()`` is the JSON-ready form.
    """
    return domain_module(env_id).DOMAIN_SPEC


def max_episode_steps(env_id: str) -> int:
    return _ENVS[check_env_id(env_id)][2]


def make(env_id: str, **kwargs: Any) -> gym.Env:
    """``gymnasium.make`` for a simdiff id, with a clear error for unknown ids."""
    register_envs()
    return gym.make(check_env_id(env_id), **kwargs)
