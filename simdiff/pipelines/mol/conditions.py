"""Stage 3: unlabeled conditions (observation window + domain; no expert action).

Sources, per domain and round:

* ``reset`` (round 0): the first observation of fresh seeds, i.e. the initial-state distribution;
* ``specialist`` (round 0): every ``stride``-th state visited by on-policy rollouts of the domain's specialist;
* ``dagger`` (round r >= 1): states visited by the round r-1 generalist rolled out in the domain, so the next
  generalist is trained where it actually goes (DAgger: the specialists provide the labels there).

A condition is the policy's input at a step: the last ``To`` observations (padded at the start of an episode
by repeating the first one, as the policy does at run time). Each carries its episode's success, which the
pseudo-label filter uses. For the specialists' own rollouts the action chunk the specialist executed around
that state is kept too (``executed``; NaN elsewhere): with ``pseudo.label: executed`` a successful rollout
becomes a pseudo-demo exactly as the public MOL code builds them. Files are ``.npz`` (no pickle).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from simdiff.errors import DatasetError
from simdiff.utils.io import atomic_write_bytes, read_npz

SOURCES = {"reset": 0, "specialist": 1, "dagger": 2}


@dataclass
class Episodes:
    """Rollouts in one domain: ``obs[e] (T_e, Do)`` are the states actions were taken in, ``actions[e]
    (T_e, Da)`` those actions (optional)."""

    obs: list[np.ndarray]
    success: np.ndarray  # (E,) bool
    seeds: np.ndarray  # (E,) int64
    lengths: np.ndarray  # (E,) int
    actions: list[np.ndarray] | None = None


_FIELDS = ("obs", "domain", "source", "round", "episode_success", "seed", "t", "executed")


@dataclass
class ConditionSet:
    """Unlabeled conditions of one domain and round; arrays share the leading dimension K."""

    obs: np.ndarray  # (K, To, Do) float32
    domain: np.ndarray  # (K,) int16
    source: np.ndarray  # (K,) int8, values of SOURCES
    round: np.ndarray  # (K,) int16
    episode_success: np.ndarray  # (K,) bool; True for reset conditions (no rollout)
    seed: np.ndarray  # (K,) int64, env seed of the episode
    t: np.ndarray  # (K,) int32, step within the episode
    executed: np.ndarray  # (K, Tp, Da) float32: the specialist's executed chunk, NaN where there is none

    def __post_init__(self) -> None:
        if self.obs.ndim != 3:
            raise ValueError(f"ConditionSet.obs: expected (K, To, Do), received shape {self.obs.shape}")
        k = self.obs.shape[0]
        for name in _FIELDS[1:-1]:
            a = getattr(self, name)
            if a.shape != (k,):
                raise ValueError(f"ConditionSet.{name}: expected shape ({k},), received {a.shape}")
        if self.executed.ndim != 3 or self.executed.shape[0] != k:
            raise ValueError(f"ConditionSet.executed: expected ({k}, Tp, Da), received {self.executed.shape}")

    def __len__(self) -> int:
        return self.obs.shape[0]

    def has_executed(self) -> np.ndarray:
        """(K,) bool: an executed specialist chunk is stored for the condition."""
        return np.isfinite(self.executed).all(axis=(1, 2))

    def subset(self, idx: np.ndarray) -> ConditionSet:
        return ConditionSet(**{f: getattr(self, f)[idx] for f in _FIELDS})

    @staticmethod
    def concat(sets: Sequence[ConditionSet]) -> ConditionSet:
        if not sets:
            raise ValueError("ConditionSet.concat: expected at least one set, received none")
        return ConditionSet(**{f: np.concatenate([getattr(s, f) for s in sets]) for f in _FIELDS})

    def save(self, path: str | Path) -> Path:
        buf = io.BytesIO()
        np.savez(buf, **{f: getattr(self, f) for f in _FIELDS})
        return atomic_write_bytes(path, buf.getvalue())

    @staticmethod
    def load(path: str | Path) -> ConditionSet:
        z = read_npz(path, _FIELDS, "a condition file")
        if np.issubdtype(z["obs"].dtype, np.floating) and not np.isfinite(z["obs"]).all():
            raise DatasetError(f"{path}: expected finite observations, received NaN or inf")
        try:
            return ConditionSet(**{f: z[f] for f in _FIELDS})
        except ValueError as exc:
            raise DatasetError(f"{path}: {exc}") from exc


def window_index(length: int, steps: np.ndarray, start_offset: int, size: int) -> np.ndarray:
    """``(len(steps), size)`` indices ``t + start_offset + k`` clamped to ``[0, length - 1]``."""
    idx = np.asarray(steps)[:, None] + start_offset + np.arange(size)[None, :]
    return np.clip(idx, 0, length - 1)


def windows(obs: np.ndarray, steps: np.ndarray, n_obs: int) -> np.ndarray:
    """Observation windows ending at ``steps``: ``obs (T, Do)`` -> ``(len(steps), n_obs, Do)``.

    Indices before the episode start are clamped to 0 (the first observation repeated).
    """
    if obs.ndim != 2:
        raise ValueError(f"windows: expected obs of shape (T, Do), received {obs.shape}")
    return obs[window_index(obs.shape[0], steps, -n_obs + 1, n_obs)]


def from_episodes(eps: Episodes, n_obs: int, pred_horizon: int, action_dim: int, domain: int, source: str,
                  round_: int, stride: int = 1) -> ConditionSet:
    """Every ``stride``-th state of every episode as a condition.

    With ``eps.actions`` (specialist rollouts) the executed chunk of a condition at step ``t`` is the
    ``Tp`` actions from ``t - To + 1`` on, clamped to the episode like a demonstration window.
    """
    parts = []
    for e, (o, ok, seed) in enumerate(zip(eps.obs, eps.success, eps.seeds)):
        steps = np.arange(0, o.shape[0], stride)
        k = len(steps)
        executed = np.full((k, pred_horizon, action_dim), np.nan, np.float32)
        if eps.actions is not None:
            a = np.asarray(eps.actions[e], np.float32)
            if a.shape != (o.shape[0], action_dim):
                raise ValueError(f"episode {e}: expected actions ({o.shape[0]}, {action_dim}), received {a.shape}")
            executed = a[window_index(a.shape[0], steps, -n_obs + 1, pred_horizon)]
        parts.append(ConditionSet(
            obs=windows(o, steps, n_obs).astype(np.float32), domain=np.full(k, domain, np.int16),
            source=np.full(k, SOURCES[source], np.int8), round=np.full(k, round_, np.int16),
            episode_success=np.full(k, bool(ok)), seed=np.full(k, int(seed), np.int64),
            t=steps.astype(np.int32), executed=executed))
    if not parts:
        raise ValueError("from_episodes: expected at least one episode, received none")
    return ConditionSet.concat(parts)


def reset_observations(make_env: Callable[[], object], seeds: Sequence[int]) -> Episodes:
    """The initial observation of each seed, as one-step "episodes" (success True: there is no rollout)."""
    env = make_env()
    try:
        obs = [np.asarray(env.reset(seed=int(s))[0], np.float32)[None] for s in seeds]
    finally:
        env.close()
    n = len(obs)
    return Episodes(obs=obs, success=np.ones(n, bool), seeds=np.asarray(seeds, np.int64),
                    lengths=np.ones(n, int))


def subsample(cs: ConditionSet, m: int, rng: np.random.Generator) -> ConditionSet:
    """At most ``m`` conditions, uniformly without replacement (order kept)."""
    if len(cs) <= m:
        return cs
    return cs.subset(np.sort(rng.choice(len(cs), size=m, replace=False)))
