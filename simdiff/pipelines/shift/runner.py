"""The shift commands' only contact with the batched evaluation runner (:mod:`simdiff.pipelines.evaluate`).

A sweep or grid is a list of *cells* (policy x domain override), each evaluated on the same seeds. Cells run
through ``simdiff.pipelines.evaluate`` -- :func:`~simdiff.pipelines.evaluate.evaluate` for scores,
:func:`~simdiff.pipelines.evaluate.run_episodes` when the visited observations are needed (covariate shift) --
and are spread over ``workers`` processes with ``simdiff.executors.run_jobs``: one pool for the whole command
(so a diffusion checkpoint is loaded once per worker, not once per cell), cells split into contiguous seed
blocks when there are fewer cells than workers. An episode depends only on its seed (the runner's contract),
so results are the same for any ``workers``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from simdiff.pipelines.shift.policies import PolicySpec


@dataclass(frozen=True)
class Cell:
    """One evaluation: ``policy`` ("expert" or a policy directory) on ``episodes`` seeds from ``seed``."""

    policy: str
    env_id: str
    level: int | str | None
    domain: dict[str, float | int] = field(default_factory=dict)
    episodes: int = 50
    seed: int = 0
    record_obs: bool = False


@dataclass
class CellResult:
    records: list[dict]  # per episode, in seed order: episode, seed, success, return, length, domain (+ observations)
    stats: dict[str, Any]  # simdiff.pipelines.evaluate.summarize of the records
    seconds: float = 0.0

    @property
    def successes(self) -> int:
        return int(self.stats["successes"])

    @property
    def episodes(self) -> int:
        return int(self.stats["episodes"])

    def summary(self) -> dict[str, Any]:
        """JSON-ready numbers of one cell (what metrics.json stores per point)."""
        s = self.stats
        return {"success": float(s["success_rate"]), "ci95": [float(x) for x in s["ci95"]],
                "successes": self.successes, "episodes": self.episodes,
                "return_mean": float(s["mean_return"]), "return_std": float(s["std_return"]),
                "length_mean": float(s["mean_length"]), "seconds": round(self.seconds, 2)}

    def observations(self) -> list[np.ndarray]:
        """``(L_e + 1, Do)`` observations of each episode (needs ``record_obs``)."""
        if not self.records or "observations" not in self.records[0]:
            raise ValueError("observations were not recorded for this cell (record_obs=False)")
        return [r["observations"] for r in self.records]


def policy_arg(spec: PolicySpec) -> str:
    """What the runner accepts for a resolved policy: "expert" or the policy directory."""
    return "expert" if spec.kind == "expert" else str(spec.path)


def cell_for(spec: PolicySpec, env_id: str, *, level: Any, domain: dict | None = None, episodes: int, seed: int,
             record_obs: bool = False) -> Cell:
    return Cell(policy=policy_arg(spec), env_id=env_id, level=level, domain=dict(domain or {}),
                episodes=episodes, seed=seed, record_obs=record_obs)


# -- jobs -------------------------------------------------------------------------------------------------------
_LOADED: dict[str, Any] = {}  # policy directory -> DiffusionPolicy, per process (pool workers are reused)


def _policy_object(policy: str) -> Any:
    if policy == "expert":
        return "expert"
    if policy not in _LOADED:
        from policies.diffusion.policy import DiffusionPolicy

        _LOADED[policy] = DiffusionPolicy.load(policy)
    return _LOADED[policy]


def preflight(specs: list[PolicySpec], env_id: str) -> None:
    """Load every diffusion policy once (a corrupt or foreign checkpoint fails here, before any rollout) and
    check it fits ``env_id``: trained on that env (when its metadata says) and the same observation size."""
    from envs.registry import make

    learned = [s for s in specs if s.kind != "expert"]
    for spec in learned:  # from metadata alone, before making (possibly slow) envs
        if spec.env_id and spec.env_id != env_id:
            raise ValueError(f"POLICY {spec.name}: trained on {spec.env_id}, but --env is {env_id}")
    if not learned:
        return
    env = make(env_id)
    try:
        obs_dim = int(np.prod(env.observation_space.shape))
        act_dim = int(np.prod(env.action_space.shape))
    finally:
        env.close()
    for spec in learned:
        pol = _policy_object(str(spec.path))
        if (pol.obs_dim, pol.action_dim) != (obs_dim, act_dim):
            raise ValueError(f"POLICY {spec.name}: expects observations of size {pol.obs_dim} and actions of size "
                             f"{pol.action_dim}; {env_id} has {obs_dim} and {act_dim}")


def block_job(policy: str, env_id: str, level: Any, domain: dict, seed: int, episodes: int, first_episode: int,
              record_obs: bool, batch_size: int) -> list[dict]:
    """Episodes ``seed .. seed + episodes - 1`` of one cell through the batched runner; per-episode records."""
    from simdiff.pipelines.evaluate import evaluate, make_batch_policy, run_episodes

    env_kwargs = {"domain": dict(domain)} if domain else None
    pol = _policy_object(policy)
    if record_obs:
        recs = run_episodes(make_batch_policy(pol), env_id, level, list(range(seed, seed + episodes)),
                            batch_size=batch_size, env_kwargs=env_kwargs, first_episode=first_episode,
                            record_actions=True)
        for r in recs:
            r.pop("actions", None)  # only the observations are needed; keep the transfer small
        return recs
    res = evaluate(pol, env_id, level, episodes, seed, workers=1, batch_size=batch_size, env_kwargs=env_kwargs,
                   show_progress=False)
    recs = res["records"]
    for r in recs:
        r["episode"] += first_episode
    return recs


def _blocks(cell: Cell, parts: int) -> list[tuple[int, int, int]]:
    """``(seed, episodes, first_episode)`` of ``parts`` contiguous seed blocks of ``cell``."""
    parts = max(1, min(parts, cell.episodes))
    return [(cell.seed + int(idx[0]), int(idx.size), int(idx[0]))
            for idx in np.array_split(np.arange(cell.episodes), parts) if idx.size]


def evaluate_cells(cells: list[Cell], *, workers: int = 1, batch_size: int = 64, desc: str = "shift") -> list[CellResult]:
    """Evaluate every cell (results in cell order) on ``workers`` processes (1: in this process)."""
    import time

    from simdiff.pipelines.evaluate import summarize

    if not cells:
        return []
    parts = max(1, math.ceil(workers / len(cells))) if workers > 1 else 1
    jobs, owner = [], []
    for ci, c in enumerate(cells):
        for seed, n, first in _blocks(c, parts):
            jobs.append({"policy": c.policy, "env_id": c.env_id, "level": c.level, "domain": dict(c.domain),
                         "seed": seed, "episodes": n, "first_episode": first, "record_obs": c.record_obs,
                         "batch_size": batch_size})
            owner.append(ci)
    if workers == 1:
        from simdiff.utils.progress import progress

        values, seconds = [], []
        for job in progress(jobs, total=len(jobs), desc=desc):
            t = time.perf_counter()
            values.append(block_job(**job))
            seconds.append(time.perf_counter() - t)
    else:
        from simdiff.executors import raise_on_failure, run_jobs

        results = raise_on_failure(run_jobs(block_job, jobs, backend="local", workers=min(workers, len(jobs)),
                                            threads_per_job=1, retries=0, desc=desc))
        values = [r.value for r in results]
        seconds = [float(r.wall_time) for r in results]
    per_cell: list[list[dict]] = [[] for _ in cells]
    secs = [0.0] * len(cells)
    for ci, recs, s in zip(owner, values, seconds):
        per_cell[ci].extend(recs)
        secs[ci] += s
    out = []
    for recs, s in zip(per_cell, secs):
        recs.sort(key=lambda r: r["episode"])
        out.append(CellResult(records=recs, stats=summarize(recs), seconds=s))
    return out


def state_slice(env_id: str) -> tuple[slice, tuple[str, ...]]:
    """Which observation entries are the world state (not the domain context), and their names."""
    from envs.registry import make

    env = make(env_id)
    try:
        base = env.unwrapped
        layout = getattr(base, "obs_layout", {}) or {}
        sl = layout.get("state", slice(0, int(np.prod(env.observation_space.shape))))
        names = tuple(getattr(base, "state_names", ()) or ())
    finally:
        env.close()
    if isinstance(sl, (tuple, list)):
        sl = slice(int(sl[0]), int(sl[1]))
    return sl, names
