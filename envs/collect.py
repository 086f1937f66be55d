"""Roll out scripted experts into demonstration episodes, in parallel, reproducibly.

Episode ``i`` of a collection with base seed ``s`` is ``env.reset(seed=s + i)`` followed by the expert until
termination or truncation. Each episode depends on its seed only (the env re-samples its whole domain and
state at every reset, and experts are deterministic), so the episodes, and the file written from them,
are the same for any number of workers. With ``only_success`` the result is the first ``episodes``
successful seeds in seed order, again independent of the workers.
"""

from __future__ import annotations

import json
import math
import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any

import numpy as np

from envs.datasets import Episode

# Per-process cache of (env, expert), so a worker builds its env once (robosuite takes seconds).
_CACHE: dict[str, tuple[Any, Any]] = {}


def _env_and_expert(env_id: str, env_kwargs: dict[str, Any]):
    # The level is passed at every reset, so one env per (id, other kwargs) serves all levels.
    rest = {k: v for k, v in env_kwargs.items() if k != "level"}
    key = json.dumps([env_id, rest], sort_keys=True)
    if key not in _CACHE:
        from envs import scripted_expert
        from envs.registry import make

        env = make(env_id, **rest)
        _CACHE[key] = (env, scripted_expert(env))
    return _CACHE[key]


def rollout(env: Any, policy: Callable[[np.ndarray], np.ndarray], seed: int,
            reset_policy: Callable[[int], None] | None = None, level: Any = "env") -> Episode:
    """One episode of ``policy`` in ``env`` from ``reset(seed=seed)``, recorded as an :class:`Episode`.

    ``level`` (0..3, "shift" or None) is passed as a reset option; the default "env" keeps the env's own.
    ``obs[t]``/``states[t]`` are what the policy saw before ``actions[t]``; ``next_obs[t]`` after it.
    """
    base = env.unwrapped
    if level == "env":
        level = base.level
        obs, info = env.reset(seed=int(seed))
    else:
        obs, info = env.reset(seed=int(seed), options={"level": level})
    if reset_policy is not None:
        reset_policy(int(seed))
    observations, actions, rewards, states = [obs], [], [], [base.get_state()]
    while True:
        action = np.asarray(policy(obs), dtype=np.float32)
        obs, reward, terminated, truncated, info = env.step(action)
        observations.append(obs)
        actions.append(action)
        rewards.append(reward)
        if terminated or truncated:
            break
        states.append(base.get_state())
    all_obs = np.asarray(observations, dtype=np.float32)
    T = len(actions)
    dones = np.zeros(T, np.int64)
    dones[-1] = 1
    return Episode(obs=_split(base, all_obs[:-1]), next_obs=_split(base, all_obs[1:]),
                   actions=np.asarray(actions, np.float32), rewards=np.asarray(rewards, np.float32),
                   dones=dones, states=np.asarray(states, np.float64), domain=dict(info["domain"]),
                   seed=int(seed), success=bool(info["success"]),
                   level=None if level is None else str(level))


def _split(base: Any, flat: np.ndarray) -> dict[str, np.ndarray]:
    out = {k: flat[:, s] for k, s in base.obs_layout.items()}
    out["obs"] = flat
    return out


def _run_seeds(env_id: str, env_kwargs: dict[str, Any], seeds: Sequence[int]) -> list[Episode]:
    env, expert = _env_and_expert(env_id, env_kwargs)
    level = env_kwargs.get("level", 0)
    return [rollout(env, expert.act, s, expert.reset, level) for s in seeds]


def collect(env_id: str, episodes: int, seed: int = 0, level: int | str | None = 0, workers: int = 1,
            only_success: bool = False, env_kwargs: dict[str, Any] | None = None,
            max_attempts: int | None = None, mp_start: str = "spawn") -> list[Episode]:
    """Scripted-expert episodes for seeds ``seed, seed + 1, ...`` (see the module docstring).

    ``env_kwargs`` are extra env arguments (e.g. ``domain``, ``observe_domain``). ``max_attempts`` bounds
    the seeds tried with ``only_success`` (default ``10 * episodes``).
    """
    from simdiff.utils.progress import progress

    if int(episodes) < 1:
        raise ValueError(f"episodes must be >= 1; received {episodes}")
    if int(workers) < 1:
        raise ValueError(f"workers must be >= 1; received {workers}")
    kwargs = {**(env_kwargs or {}), "level": level}
    limit = int(max_attempts or 10 * episodes) if only_success else int(episodes)
    pool = _pool(workers, mp_start)
    kept: list[Episode] = []
    next_seed, tried = int(seed), 0
    try:
        with progress(total=int(episodes), desc=f"collect {env_id}") as bar:
            while len(kept) < episodes and tried < limit:
                need = episodes - len(kept)
                n = min(limit - tried, need if not only_success else need + max(2, need // 4))
                seeds = list(range(next_seed, next_seed + n))
                batch = _map_seeds(pool, env_id, kwargs, seeds, workers)
                next_seed, tried = next_seed + n, tried + n
                for ep in batch:
                    if len(kept) < episodes and (ep.success or not only_success):
                        kept.append(ep)
                        bar.update(1)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    if len(kept) < episodes:
        raise RuntimeError(f"only {len(kept)} of {episodes} episodes succeeded in {tried} seeds "
                           f"({seed}..{next_seed - 1}) of {env_id} level {level}")
    return kept


def _pool(workers: int, mp_start: str) -> ProcessPoolExecutor | None:
    if workers <= 1:
        return None
    # spawn by default: forking a process that already runs torch/OpenMP threads can deadlock.
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context(mp_start))


def _map_seeds(pool: ProcessPoolExecutor | None, env_id: str, kwargs: dict[str, Any], seeds: list[int],
               workers: int) -> list[Episode]:
    """Episodes for ``seeds``, returned in seed order whatever order the workers finish in."""
    if pool is None:
        return _run_seeds(env_id, kwargs, seeds)
    size = max(1, math.ceil(len(seeds) / (4 * workers)))
    chunks = [seeds[i:i + size] for i in range(0, len(seeds), size)]
    futures = {pool.submit(_run_seeds, env_id, kwargs, c): c[0] for c in chunks}
    by_seed: dict[int, Episode] = {}
    for fut in as_completed(futures):
        for ep in fut.result():
            by_seed[ep.seed] = ep
    return [by_seed[s] for s in seeds]


def dataset_attrs(env_id: str, env_kwargs: dict[str, Any], collection: dict[str, Any]) -> dict[str, Any]:
    """File attributes describing observations and domain for :func:`envs.datasets.write_demos`."""
    env, _ = _env_and_expert(env_id, env_kwargs)
    base = env.unwrapped
    layout = {k: [s.start, s.stop] for k, s in base.obs_layout.items()}
    return {
        "obs_keys": list(base.obs_layout),
        "obs_layout": layout,
        "state_names": list(base.state_names),
        "context_names": list(base.context_names),
        "domain_spec": base.domain_spec.describe(),
        "collection": collection,
    }
