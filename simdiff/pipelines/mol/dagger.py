"""Searched DAgger: the generalist acts, the specialist labels its states with simulator-verified chunks.

Plain DAgger labels a state the generalist visited with one fresh specialist sample; measured on Push-v0 that
label is often worse than none (the specialist never reaches such states itself). :class:`SearchLabeler`
instead runs the domain's specialist as :class:`policies.critic.outcomes.OracleBatchPolicy` next to the
generalist: at each of the generalist's replanning points the specialist samples ``k`` chunks, replays each
from a snapshot of the live world (plus ``lookahead`` specialist chunks) and keeps the best-ending one. That
chunk becomes the label of the state; the generalist's own chunk is what the world executes, so the labeled
states are exactly those the generalist visits. No expert acts anywhere.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from policies.batching import ChunkedBatchPolicy
from simdiff.utils.io import atomic_write_bytes


class SearchLabeler:
    """A runner ``BatchPolicy`` executing ``student`` and recording ``teacher``'s searched chunks.

    ``student`` and ``teacher`` are chunked batch policies with the same observation and action horizons, so
    they replan at the same steps. After a rollout, :meth:`labels` gives, for an episode's policy seed, the
    steps ``t`` at which the teacher planned and its full predicted chunks ``(n, Tp, Da)``.
    """

    def __init__(self, student: Any, teacher: Any):
        self.student, self.teacher = student, teacher
        self._records: dict[int, tuple[list[int], list[np.ndarray], list[float]]] = {}

    @property
    def source(self) -> str:
        return f"dagger_search[{self.teacher.source}]"

    def reset(self, n: int) -> None:
        self.student.reset(n)
        self.teacher.reset(n)
        self._slot_seed = np.zeros(n, dtype=np.int64)
        self._t = np.zeros(n, dtype=np.int64)
        self._past: np.ndarray | None = None  # (n, To - 1, Da): the actions the world executed last

    def begin(self, slot: int, env: Any, seed: int) -> None:
        self.student.begin(slot, env, seed)
        self.teacher.begin(slot, env, seed)
        self._slot_seed[slot], self._t[slot] = int(seed), 0
        self._records[int(seed)] = ([], [], [])

    def act(self, obs: np.ndarray, slots: np.ndarray) -> np.ndarray:
        slots = np.asarray(slots, dtype=np.int64)
        teacher = self.teacher
        n_past = int(teacher._hist.shape[1]) - 1  # To - 1 label entries lie before the current step
        planning = slots[teacher._pos[slots] >= teacher._queue.shape[1]]
        teacher.act(obs, slots)  # snapshots the worlds before the step: the teacher sees the true state
        for i, slot in enumerate(planning.tolist()):
            steps, chunks, utils = self._records[int(self._slot_seed[slot])]
            steps.append(int(self._t[slot]))
            chunks.append(self._with_past(slot, np.array(teacher.last_full[i], np.float32), n_past))
            utils.append(float(teacher.last_utility[i]))
        self._t[slots] += 1
        actions = np.asarray(self.student.act(obs, slots), np.float32)
        if self._past is None:
            self._past = np.zeros((self._t.shape[0], n_past, actions.shape[1]), np.float32)
        if n_past:
            self._past[slots] = np.concatenate([self._past[slots, 1:], actions[:, None]], axis=1)
        return actions

    def _with_past(self, slot: int, chunk: np.ndarray, n_past: int) -> np.ndarray:
        """A label window starts ``To - 1`` steps in the past, like a demonstration window: those entries are the
        actions the world executed (before the episode's start, its first action, as demo windows clamp)."""
        t = int(self._t[slot])
        for j in range(n_past):
            step = max(t - n_past + j, 0)
            chunk[j] = chunk[n_past] if step >= t else self._past[slot, n_past - (t - step)]
        return chunk

    def labels(self, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(steps (n,), chunks (n, Tp, Da), utility (n,))`` recorded for the episode run with policy seed
        ``seed``; ``utility`` is the verified outcome of each chosen chunk (NaN for the expert teacher)."""
        steps, chunks, utils = self._records[int(seed)]
        if not steps:
            raise ValueError(f"searched DAgger: no label was recorded for policy seed {seed}")
        return np.asarray(steps, np.int64), np.stack(chunks), np.asarray(utils, np.float64)


class ExpertChunkTeacher(ChunkedBatchPolicy):
    """DIAGNOSTIC teacher, not MOL: the privileged scripted expert's next ``Tp - To + 1`` actions from the true
    state (run on a spare world restored from a snapshot). Labels from it bound what any specialist labels at
    the generalist's states could give; a run using it is flagged in its report."""

    def __init__(self, obs_horizon: int, pred_horizon: int, action_horizon: int, obs_dim: int, action_dim: int,
                 env_id: str):
        self.dims = (obs_horizon, pred_horizon, action_horizon, obs_dim, action_dim)
        self.env_id = env_id
        self._spares: list[Any] = []
        self.reset(0)

    @property
    def source(self) -> str:
        return "scripted expert (privileged diagnostic)"

    def reset(self, n: int) -> None:
        To, _, Ta, Do, Da = self.dims
        self._allocate(n, To, Do, Ta, Da)
        self._envs: list[Any] = [None] * n

    def begin(self, slot: int, env: Any, seed: int | None) -> None:
        super().begin(slot, env, seed)
        self._envs[slot] = env

    def _chunks(self, need: np.ndarray) -> np.ndarray:
        from envs.experts import scripted_expert
        from policies.critic.outcomes import spare_envs
        from policies.critic.sim_state import restore, snapshot

        To, Tp, Ta, _, Da = self.dims
        if len(self._spares) < need.size:
            self._spares += spare_envs(self.env_id, need.size - len(self._spares))
        full = np.zeros((need.size, Tp, Da), np.float32)
        for i, slot in enumerate(need.tolist()):
            env = self._spares[i]
            restore(env, snapshot(self._envs[slot]))
            expert = scripted_expert(env)
            for j in range(To - 1, Tp):
                a = expert.act()
                full[i, j] = a
                _, _, terminated, truncated, _ = env.step(a)
                if terminated or truncated:  # pad like a demo window clamped at the episode's end
                    full[i, j + 1:] = a
                    break
        self.last_full = full
        self.last_utility = np.full(need.size, np.nan)
        return full[:, To - 1:To - 1 + Ta]


def searched_conditions(records: list[dict], labeler: SearchLabeler, n_obs: int, domain: int, round_: int):
    """Conditions at the labeled steps of each rollout, their chunks in ``executed``; and the chosen chunks'
    verified utilities ``(K,)`` in the same order."""
    from simdiff.pipelines.mol.conditions import SOURCES, ConditionSet, windows

    parts, utils = [], []
    for r in records:
        steps, chunks, u = labeler.labels(int(r["seed"]))
        obs = np.asarray(r["observations"][:-1], np.float32)
        if steps.max() >= obs.shape[0]:
            raise ValueError(f"searched DAgger: label at step {steps.max()} beyond the episode's {obs.shape[0]} "
                             "steps")
        k = len(steps)
        parts.append(ConditionSet(
            obs=windows(obs, steps, n_obs), domain=np.full(k, domain, np.int16),
            source=np.full(k, SOURCES["dagger"], np.int8), round=np.full(k, round_, np.int16),
            episode_success=np.full(k, bool(r["success"])), seed=np.full(k, int(r["seed"]), np.int64),
            t=steps.astype(np.int32), executed=chunks.astype(np.float32)))
        utils.append(u)
    if not parts:
        raise ValueError("searched DAgger: expected at least one rollout, received none")
    return ConditionSet.concat(parts), np.concatenate(utils)


def utility_path(conditions_file: str | Path) -> Path:
    """Where the verified utilities of a searched-DAgger condition file are kept (``.npy``, no pickle)."""
    p = Path(conditions_file)
    return p.with_name(p.stem + ".utility.npy")


def save_utility(conditions_file: str | Path, utility: np.ndarray) -> Path:
    buf = io.BytesIO()
    np.save(buf, np.asarray(utility, np.float64), allow_pickle=False)
    return atomic_write_bytes(utility_path(conditions_file), buf.getvalue())


def load_utility(conditions_file: str | Path, n: int) -> np.ndarray | None:
    """The utilities saved next to ``conditions_file`` (None when there are none), checked against its ``n``."""
    p = utility_path(conditions_file)
    if not p.is_file():
        return None
    u = np.load(p, allow_pickle=False)
    if u.shape != (n,):
        raise ValueError(f"{p}: expected {n} utilities (one per condition), received shape {u.shape}")
    return u


__all__ = ["SearchLabeler", "ExpertChunkTeacher", "searched_conditions", "utility_path", "save_utility", "load_utility"]
