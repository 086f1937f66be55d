"""Stage 3: unlabeled conditions (observation window + domain; no expert action).

Sources, per domain and round:

* ``reset`` (round 0): the first observation of fresh seeds, i.e. the initial-state distribution;
* ``specialist`` (round 0): every ``stride``-th state visited by on-policy rollouts of the domain's specialist;
* ``dagger`` (round r >= 1): states visited by the round r-1 generalist rolled out in the domain, so the next
  generalist is trained where it actually goes (DAgger: the specialists provide the labels there).

A condition is the policy's input at a step: the last ``To`` observations (padded at the start of an episode
by repeating the first one, as the policy does at run time). Each carries its episode's success, which the
pseudo-label filter uses. Files are ``.npz`` written atomically (no pickle).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from simdiff.utils.io import atomic_write_bytes

SOURCES = {"reset": 0, "specialist": 1, "dagger": 2}

# chunk_fn(obs_windows (B, To, Do) float32) -> actions (B, Ta, Da) to execute open-loop, in order.
ChunkFn = Callable[[np.ndarray], np.ndarray]


@dataclass
class Episodes:
    """Observations of rollouts in one domain: ``obs[e]`` is ``(T_e, Do)`` (the states actions were taken in)."""

    obs: list[np.ndarray]
    success: np.ndarray  # (E,) bool
    seeds: np.ndarray  # (E,) int64
    lengths: np.ndarray  # (E,) int


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

    def __post_init__(self) -> None:
        if self.obs.ndim != 3:
            raise ValueError(f"ConditionSet.obs: expected (K, To, Do), received shape {self.obs.shape}")
        k = self.obs.shape[0]
        for name in ("domain", "source", "round", "episode_success", "seed", "t"):
            a = getattr(self, name)
            if a.shape != (k,):
                raise ValueError(f"ConditionSet.{name}: expected shape ({k},), received {a.shape}")

    def __len__(self) -> int:
        return self.obs.shape[0]

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
        with np.load(path, allow_pickle=False) as z:
            missing = [f for f in _FIELDS if f not in z.files]
            if missing:
                raise ValueError(f"{path}: not a condition file (missing arrays {missing})")
            return ConditionSet(**{f: z[f] for f in _FIELDS})


_FIELDS = ("obs", "domain", "source", "round", "episode_success", "seed", "t")


def windows(obs: np.ndarray, steps: np.ndarray, n_obs: int) -> np.ndarray:
    """Observation windows ending at ``steps``: ``obs (T, Do)`` -> ``(len(steps), n_obs, Do)``.

    Indices before the episode start are clamped to 0 (the first observation repeated).
    """
    if obs.ndim != 2:
        raise ValueError(f"windows: expected obs of shape (T, Do), received {obs.shape}")
    idx = np.asarray(steps)[:, None] + np.arange(-n_obs + 1, 1)[None, :]
    return obs[np.clip(idx, 0, obs.shape[0] - 1)]


def from_episodes(eps: Episodes, n_obs: int, domain: int, source: str, round_: int, stride: int = 1,
                  ) -> ConditionSet:
    """Every ``stride``-th state of every episode as a condition."""
    parts = []
    for o, ok, seed in zip(eps.obs, eps.success, eps.seeds):
        steps = np.arange(0, o.shape[0], stride)
        k = len(steps)
        parts.append(ConditionSet(
            obs=windows(o, steps, n_obs).astype(np.float32), domain=np.full(k, domain, np.int16),
            source=np.full(k, SOURCES[source], np.int8), round=np.full(k, round_, np.int16),
            episode_success=np.full(k, bool(ok)), seed=np.full(k, int(seed), np.int64),
            t=steps.astype(np.int32)))
    if not parts:
        return empty(n_obs, 0, domain)
    return ConditionSet.concat(parts)


def empty(n_obs: int, obs_dim: int, domain: int = 0) -> ConditionSet:
    z = np.zeros(0)
    return ConditionSet(obs=np.zeros((0, n_obs, obs_dim), np.float32), domain=z.astype(np.int16),
                        source=z.astype(np.int8), round=z.astype(np.int16), episode_success=z.astype(bool),
                        seed=z.astype(np.int64), t=z.astype(np.int32))


# -- environment interaction -----------------------------------------------------------------------------------
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


def rollout(make_env: Callable[[], object], chunk_fn: ChunkFn, seeds: Sequence[int], n_obs: int,
            batch_envs: int = 32, progress_desc: str | None = None) -> Episodes:
    """Roll out a chunking policy on-policy, ``batch_envs`` environments in lockstep, one batched call per
    replanning step; record every observation an action was taken in and whether the episode succeeded.

    ``chunk_fn`` receives ``(B, To, Do)`` windows and returns ``(B, Ta, Da)`` actions executed open-loop.
    An episode ends at termination or truncation; success means ``info["success"]`` was ever True.
    """
    from simdiff.utils.progress import progress

    seeds = [int(s) for s in seeds]
    out_obs: list[np.ndarray] = [None] * len(seeds)  # type: ignore[list-item]
    success = np.zeros(len(seeds), bool)
    envs = [make_env() for _ in range(min(batch_envs, max(1, len(seeds))))]
    bar = progress(total=len(seeds), desc=progress_desc)
    try:
        for start in range(0, len(seeds), len(envs)):
            batch = seeds[start:start + len(envs)]
            obs_b, ok_b = _rollout_batch(envs[:len(batch)], chunk_fn, batch, n_obs)
            for j, (o, ok) in enumerate(zip(obs_b, ok_b)):
                out_obs[start + j], success[start + j] = o, ok
            bar.update(len(batch))
    finally:
        bar.close()
        for e in envs:
            e.close()
    return Episodes(obs=out_obs, success=success, seeds=np.asarray(seeds, np.int64),
                    lengths=np.array([o.shape[0] for o in out_obs]))


def _rollout_batch(envs: list, chunk_fn: ChunkFn, seeds: list[int], n_obs: int):
    hist: list[list[np.ndarray]] = []
    for env, s in zip(envs, seeds):
        o, _ = env.reset(seed=s)
        hist.append([np.asarray(o, np.float32)])
    queues: list[list[np.ndarray]] = [[] for _ in envs]
    active = [True] * len(envs)
    success = [False] * len(envs)
    while any(active):
        need = [i for i, a in enumerate(active) if a and not queues[i]]
        if need:
            batch = np.stack([windows(np.stack(hist[i]), np.array([len(hist[i]) - 1]), n_obs)[0] for i in need])
            chunks = np.asarray(chunk_fn(batch))
            if chunks.ndim != 3 or chunks.shape[0] != len(need):
                raise ValueError(f"chunk_fn: expected (B={len(need)}, Ta, Da) actions, received {chunks.shape}")
            for i, c in zip(need, chunks):
                queues[i] = list(c)
        for i, env in enumerate(envs):
            if not active[i]:
                continue
            o, _, term, trunc, info = env.step(queues[i].pop(0))
            success[i] = success[i] or bool(info.get("success", False))
            if term or trunc:
                active[i] = False
            else:
                hist[i].append(np.asarray(o, np.float32))
    return [np.stack(h) for h in hist], success


def subsample(cs: ConditionSet, m: int, rng: np.random.Generator) -> ConditionSet:
    """At most ``m`` conditions, uniformly without replacement (order kept)."""
    if len(cs) <= m:
        return cs
    return cs.subset(np.sort(rng.choice(len(cs), size=m, replace=False)))
