"""Batched on-policy evaluation: many envs step together, one batched policy call serves them all.

Every evaluation in simdiff (``simdiff policy eval``, the MOL pipeline, the shift commands) goes through
:func:`evaluate`, so experts, specialists and generalists are scored by one code path.

Episodes and seeds
    Episode ``i`` resets its env with seed ``seed + i``; a policy that samples (diffusion noise) draws from its
    own generator seeded from the same number. An episode's course therefore does not depend on which other
    episodes share the batch, on ``batch_size`` or on ``workers``. (Batched matrix products may round
    differently from batch-1 ones, by ~1e-7 in float32; an episode near a success threshold can in principle
    flip. Run the policy in float64 to make batched and sequential evaluation agree to ~1e-15.)

Scheduling
    ``batch_size`` env slots run at once; when an episode ends, the next pending episode starts in its slot,
    so the batch stays full. ``workers > 1`` splits the episodes into contiguous blocks evaluated in separate
    processes (``simdiff.executors.run_jobs``, spawn); records are merged in episode order.

The policy protocol (:class:`BatchPolicy`)
    ``reset(n)`` allocates ``n`` slots; ``begin(slot, env, seed)`` starts an episode in a slot (the env has
    just been reset with ``seed``); ``act(obs (k, Do), slots (k,)) -> (k, Da)`` returns one action per
    listed slot, called once per env step with every running slot. Adapters: :class:`ExpertBatchPolicy`
    (one scripted expert per slot), :class:`CallableBatchPolicy` (a stateless ``fn(obs (B, Do)) -> (B, Da)``),
    and ``DiffusionPolicy.batch_policy()``.

Result (a plain dict, JSON-ready)::

    {"env_id", "level", "seed", "episodes", "success_rate", "ci95": [lo, hi], "successes",
     "mean_return", "std_return", "mean_length", "lengths": {"mean", "std", "min", "max", "median"},
     "per_domain": {param: [{"lo", "hi", "episodes", "success_rate", "ci95"}, ...]},
     "records": [{"episode", "seed", "success", "return", "length", "domain"}, ...],
     "policy", "workers", "batch_size", "wall_time_s", "episodes_per_s"}
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from simdiff.utils.progress import progress

Z95 = 1.959963984540054


@runtime_checkable
class BatchPolicy(Protocol):
    """A policy that drives ``n`` env slots at once (see the module docstring)."""

    def reset(self, n: int) -> None: ...

    def begin(self, slot: int, env: Any, seed: int) -> None: ...

    def act(self, obs: np.ndarray, slots: np.ndarray) -> np.ndarray: ...


class ExpertBatchPolicy:
    """The env's scripted expert (``envs.scripted_expert``), one instance per slot."""

    def __init__(self) -> None:
        self._experts: list[Any] = []

    def reset(self, n: int) -> None:
        self._experts = [None] * n

    def begin(self, slot: int, env: Any, seed: int) -> None:
        from envs import scripted_expert

        expert = scripted_expert(env)
        expert.reset(seed)
        self._experts[slot] = expert

    def act(self, obs: np.ndarray, slots: np.ndarray) -> np.ndarray:
        return np.stack([self._experts[s].act(o) for s, o in zip(np.asarray(slots).tolist(), obs)])


class CallableBatchPolicy:
    """A stateless ``fn(obs (B, Do)) -> (B, Da)`` as a :class:`BatchPolicy`."""

    def __init__(self, fn: Callable[[np.ndarray], np.ndarray]):
        if not callable(fn):
            raise TypeError(f"fn: expected a callable obs (B, Do) -> actions (B, Da), received {fn!r}")
        self.fn = fn

    def reset(self, n: int) -> None:
        pass

    def begin(self, slot: int, env: Any, seed: int) -> None:
        pass

    def act(self, obs: np.ndarray, slots: np.ndarray) -> np.ndarray:
        return np.asarray(self.fn(obs))


PolicySpec = Any  # "expert" | checkpoint path | BatchPolicy | DiffusionPolicy-like | zero-arg factory


def make_batch_policy(spec: PolicySpec, task: int | None = None) -> BatchPolicy:
    """Resolve a policy spec: ``"expert"``, a policy directory (``str``/``Path``), an object with
    ``batch_policy()`` (a ``DiffusionPolicy``), a :class:`BatchPolicy`, or a zero-argument factory of one."""
    if isinstance(spec, str) and spec == "expert":
        return ExpertBatchPolicy()
    if isinstance(spec, (str, os.PathLike)):
        from policies.diffusion.policy import DiffusionPolicy

        return DiffusionPolicy.load(spec).batch_policy(task)
    if hasattr(spec, "batch_policy"):
        return spec.batch_policy(task)
    if isinstance(spec, BatchPolicy):
        return spec
    if callable(spec):
        made = spec()
        if isinstance(made, BatchPolicy):
            return made
        if hasattr(made, "batch_policy"):
            return made.batch_policy(task)
        raise TypeError(f"policy factory returned {type(made).__name__}; expected a BatchPolicy "
                        "(reset(n), begin(slot, env, seed), act(obs, slots))")
    raise TypeError(f"policy: expected 'expert', a policy directory, a BatchPolicy or a factory, received "
                    f"{type(spec).__name__}")


def describe_policy(spec: PolicySpec) -> str:
    if isinstance(spec, (str, os.PathLike)):
        return str(spec)
    src = getattr(spec, "source", None)
    return str(src) if src else type(spec).__name__


# ------------------------------------------------------------------------------------------------ stats
def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (95% for the default ``z``)."""
    if n <= 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1.0 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1.0 - p) / n + z * z / (4.0 * n * n))
    return (max(0.0, center - half), min(1.0, center + half))


def _bins(values: np.ndarray, n_bins: int) -> list[tuple[float, float, np.ndarray]]:
    uniq = np.unique(values)
    if uniq.size <= n_bins:
        return [(float(u), float(u), values == u) for u in uniq]
    edges = np.linspace(values.min(), values.max(), n_bins + 1)
    out = []
    for k in range(n_bins):
        lo, hi = edges[k], edges[k + 1]
        mask = (values >= lo) & ((values < hi) if k < n_bins - 1 else (values <= hi))
        if mask.any():
            out.append((float(lo), float(hi), mask))
    return out


def per_domain_breakdown(records: Sequence[dict], n_bins: int = 5) -> dict[str, list[dict]]:
    """Success rate (with Wilson 95% interval) binned by each numeric domain parameter's value.

    A parameter with at most ``n_bins`` distinct values gets one bin per value; otherwise equal-width bins
    over its observed range. Constant parameters give a single bin.
    """
    if not records:
        return {}
    success = np.array([bool(r["success"]) for r in records])
    names = [k for k, v in (records[0].get("domain") or {}).items()
             if isinstance(v, (int, float)) and not isinstance(v, bool)]
    out: dict[str, list[dict]] = {}
    for name in names:
        vals = np.array([float(r["domain"][name]) for r in records])
        rows = []
        for lo, hi, mask in _bins(vals, n_bins):
            k, n = int(success[mask].sum()), int(mask.sum())
            rows.append({"lo": lo, "hi": hi, "episodes": n, "success_rate": k / n,
                         "ci95": list(wilson_interval(k, n))})
        out[name] = rows
    return out


def summarize(records: Sequence[dict]) -> dict[str, Any]:
    """Aggregate per-episode records into success (Wilson 95%), returns, lengths and the domain breakdown."""
    n = len(records)
    k = sum(bool(r["success"]) for r in records)
    returns = np.array([r["return"] for r in records], dtype=np.float64)
    lengths = np.array([r["length"] for r in records], dtype=np.float64)
    stats = {"mean": float(lengths.mean()), "std": float(lengths.std()), "min": int(lengths.min()),
             "max": int(lengths.max()), "median": float(np.median(lengths))} if n else {}
    return {"episodes": n, "successes": k, "success_rate": k / n if n else float("nan"),
            "ci95": list(wilson_interval(k, n)),
            "mean_return": float(returns.mean()) if n else float("nan"),
            "std_return": float(returns.std()) if n else float("nan"),
            "mean_length": stats.get("mean", float("nan")), "lengths": stats,
            "per_domain": per_domain_breakdown(records)}


# ------------------------------------------------------------------------------------------------ rollout
def _jsonable(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return v


def run_episodes(policy: BatchPolicy, env_id: str, level: int | str | None, seeds: Sequence[int], *,
                 batch_size: int = 64, env_kwargs: dict | None = None, first_episode: int = 0,
                 record_actions: bool = False, on_episode: Callable[[dict], None] | None = None,
                 policy_seed_offset: int = 0) -> list[dict]:
    """Roll out one episode per seed with ``batch_size`` env slots stepping together; records in seed order.

    The env of an episode is reset with its seed and the policy's own generator with ``seed +
    policy_seed_offset``: a non-zero offset replays the same initial state with fresh sampling noise.

    ``record_actions`` adds ``"actions" (L, Da)`` and ``"observations" (L+1, Do)`` arrays to each record
    (tests use them to compare runs).
    """
    from envs import make

    seeds = [int(s) for s in seeds]
    if not seeds:
        return []
    n_slots = max(1, min(int(batch_size), len(seeds)))
    envs = [make(env_id, level=level, **(env_kwargs or {})) for _ in range(n_slots)]
    policy.reset(n_slots)
    pending = list(range(len(seeds)))[::-1]          # episode indices, next one at the end
    slot_ep = [-1] * n_slots
    live: dict[int, dict] = {}
    records: list[dict | None] = [None] * len(seeds)
    obs = None

    def start(slot: int) -> None:
        nonlocal obs
        i = pending.pop()
        o, info = envs[slot].reset(seed=seeds[i])
        if obs is None:
            obs = np.zeros((n_slots, o.shape[0]), dtype=np.float32)
        obs[slot] = o
        policy.begin(slot, envs[slot], seeds[i] + policy_seed_offset)
        slot_ep[slot] = i
        live[slot] = {"episode": first_episode + i, "seed": seeds[i], "success": bool(info.get("success", False)),
                      "return": 0.0, "length": 0, "domain": _jsonable(info.get("domain", {}))}
        if record_actions:
            live[slot]["actions"], live[slot]["observations"] = [], [o.copy()]

    try:
        for slot in range(n_slots):
            start(slot)
        while live:
            slots = np.array(sorted(live), dtype=np.int64)
            actions = np.asarray(policy.act(obs[slots], slots), dtype=np.float32)
            if actions.ndim != 2 or actions.shape[0] != slots.size:
                raise ValueError(f"policy.act: expected actions of shape ({slots.size}, Da), received "
                                 f"{actions.shape}")
            for j, slot in enumerate(slots.tolist()):
                o, r, terminated, truncated, info = envs[slot].step(actions[j])
                rec = live[slot]
                rec["return"] += float(r)
                rec["length"] += 1
                rec["success"] = rec["success"] or bool(info.get("success", False))
                if record_actions:
                    rec["actions"].append(actions[j].copy())
                    rec["observations"].append(np.asarray(o, dtype=np.float32).copy())
                obs[slot] = o
                if terminated or truncated:
                    records[slot_ep[slot]] = _finish(live.pop(slot), record_actions)
                    if on_episode is not None:
                        on_episode(records[slot_ep[slot]])
                    if pending:
                        start(slot)
    finally:
        for env in envs:
            env.close()
    return records  # type: ignore[return-value]


def _finish(rec: dict, record_actions: bool) -> dict:
    if record_actions:
        rec["actions"] = np.stack(rec["actions"]) if rec["actions"] else np.zeros((0, 0), np.float32)
        rec["observations"] = np.stack(rec["observations"])
    return rec


def _eval_job(policy: PolicySpec, task: int | None, env_id: str, level: int | str | None, seeds: list[int],
              batch_size: int, env_kwargs: dict | None, first_episode: int) -> list[dict]:
    """One worker's block of episodes (module level: sent to spawned workers by reference)."""
    return run_episodes(make_batch_policy(policy, task), env_id, level, seeds, batch_size=batch_size,
                        env_kwargs=env_kwargs, first_episode=first_episode)


def _check_args(env_id: str, level: Any, episodes: int, seed: int, workers: int, batch_size: int) -> None:
    from envs.registry import check_env_id

    check_env_id(env_id)
    if not (level is None or level == "shift" or (isinstance(level, int) and not isinstance(level, bool)
                                                   and 0 <= level <= 3)):
        raise ValueError(f"level: expected 0..3, 'shift' or None, received {level!r}")
    for name, v, lo in (("episodes", episodes, 1), ("seed", seed, 0), ("workers", workers, 1),
                        ("batch_size", batch_size, 1)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ValueError(f"{name}: expected an int >= {lo}, received {v!r}")


def evaluate(policy: PolicySpec, env_id: str, level: int | str | None = 0, episodes: int = 100,
             seed: int = 1000, *, workers: int = 1, batch_size: int = 256, env_kwargs: dict | None = None,
             task: int | None = None, threads: int = 1, show_progress: bool = True) -> dict[str, Any]:
    """Evaluate ``policy`` on ``episodes`` episodes of ``env_id`` at ``level`` (seeds ``seed .. seed+episodes-1``).

    ``policy``: ``"expert"``, a policy directory, a ``DiffusionPolicy``, a :class:`BatchPolicy`, or a
    zero-argument factory (``workers > 1`` sends it to spawned processes, so it must be picklable: a path,
    ``"expert"`` or a module-level function are; an in-memory policy is pickled for the transfer).
    ``task`` is passed to policies conditioned on a task id. ``threads`` caps torch's threads per process
    during the rollouts (1 by default: the policy calls are small, and on a busy machine OpenMP threads that
    wait on each other can make them 100x slower; use ``workers`` for parallelism). Returns the dict
    described in the module docstring.
    """
    _check_args(env_id, level, episodes, seed, workers, batch_size)
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads: expected an int >= 1, received {threads!r}")
    seeds = [seed + i for i in range(episodes)]
    workers = min(workers, episodes)
    t0 = time.perf_counter()
    if workers == 1:
        import torch

        bar = progress(total=episodes, desc=f"eval {env_id} level {level}") if show_progress else None
        prev = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            records = run_episodes(make_batch_policy(policy, task), env_id, level, seeds, batch_size=batch_size,
                                   env_kwargs=env_kwargs, on_episode=(lambda _: bar.update(1)) if bar else None)
        finally:
            torch.set_num_threads(prev)
            if bar is not None:
                bar.close()
    else:
        from simdiff.executors import raise_on_failure, run_jobs

        blocks = np.array_split(np.arange(episodes), workers)
        jobs = [{"policy": policy, "task": task, "env_id": env_id, "level": level,
                 "seeds": [seeds[i] for i in b.tolist()], "batch_size": batch_size, "env_kwargs": env_kwargs,
                 "first_episode": int(b[0])} for b in blocks if b.size]
        results = raise_on_failure(run_jobs(_eval_job, jobs, backend="local", workers=workers,
                                            threads_per_job=threads, desc=f"eval {env_id} level {level}"))
        records = [rec for r in results for rec in r.value]
    wall = time.perf_counter() - t0
    out = {"env_id": env_id, "level": level, "seed": seed, **summarize(records),
           "policy": describe_policy(policy), "workers": workers, "batch_size": batch_size,
           "wall_time_s": wall, "episodes_per_s": episodes / wall if wall > 0 else float("inf"),
           "records": records}
    return out


def format_result(res: dict) -> str:
    """A few human-readable lines for a result of :func:`evaluate`."""
    lo, hi = res["ci95"]
    lines = [f"{res['policy']} on {res['env_id']} level {res['level']}: success {res['success_rate']:.3f} "
             f"[{lo:.3f}, {hi:.3f}] ({res['successes']}/{res['episodes']} episodes, seeds {res['seed']}.."
             f"{res['seed'] + res['episodes'] - 1})",
             f"  mean return {res['mean_return']:.3f}, mean length {res['mean_length']:.1f} "
             f"(min {res['lengths'].get('min')}, max {res['lengths'].get('max')}), "
             f"{res['episodes_per_s']:.1f} episodes/s"]
    for name, rows in res["per_domain"].items():
        if len(rows) < 2 or len({r["success_rate"] for r in rows}) < 2:
            continue  # only parameters along which success varies (all bins are in the JSON)
        cells = ", ".join(f"[{r['lo']:.3g},{r['hi']:.3g}]: {r['success_rate']:.2f} (n={r['episodes']})" for r in rows)
        lines.append(f"  {name}: {cells}")
    return "\n".join(lines)


def record_video(policy: PolicySpec, env_id: str, level: int | str | None, seeds: Sequence[int],
                 path: str | os.PathLike, *, env_kwargs: dict | None = None, task: int | None = None,
                 fps: int | None = None) -> Path:
    """Render the episodes of ``seeds`` one after another into one video file (mp4 or gif by suffix).

    The rollouts are the same as in :func:`evaluate` for the same seeds (one slot, same per-episode seeding).
    """
    import imageio.v2 as imageio

    from envs import make

    frames: list[np.ndarray] = []
    kwargs = {**(env_kwargs or {}), "render_mode": "rgb_array"}
    env = make(env_id, level=level, **kwargs)
    batch = make_batch_policy(policy, task)
    try:
        batch.reset(1)
        for s in seeds:
            o, _ = env.reset(seed=int(s))
            batch.begin(0, env, int(s))
            frames.append(env.render())
            done = False
            while not done:
                a = batch.act(o[None].astype(np.float32), np.array([0]))[0]
                o, _, term, trunc, _ = env.step(a)
                frames.append(env.render())
                done = term or trunc
        rate = fps or int(env.metadata.get("render_fps", 10))
    finally:
        env.close()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    imageio.mimwrite(tmp, frames, fps=rate) if path.suffix == ".gif" else imageio.mimwrite(tmp, frames, fps=rate,
                                                                                           macro_block_size=1)
    os.replace(tmp, path)
    return path


__all__ = ["BatchPolicy", "ExpertBatchPolicy", "CallableBatchPolicy", "make_batch_policy", "evaluate",
           "run_episodes", "summarize", "per_domain_breakdown", "wilson_interval", "format_result",
           "record_video"]
