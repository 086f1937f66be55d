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

from typing import Any

import numpy as np


class SearchLabeler:
    """A runner ``BatchPolicy`` executing ``student`` and recording ``teacher``'s searched chunks.

    ``student`` and ``teacher`` are chunked batch policies with the same observation and action horizons, so
    they replan at the same steps. After a rollout, :meth:`labels` gives, for an episode's policy seed, the
    steps ``t`` at which the teacher planned and its full predicted chunks ``(n, Tp, Da)``.
    """

    def __init__(self, student: Any, teacher: Any):
        self.student, self.teacher = student, teacher
        self._records: dict[int, tuple[list[int], list[np.ndarray]]] = {}

    @property
    def source(self) -> str:
        return f"dagger_search[{self.teacher.source}]"

    def reset(self, n: int) -> None:
        self.student.reset(n)
        self.teacher.reset(n)
        self._slot_seed = np.zeros(n, dtype=np.int64)
        self._t = np.zeros(n, dtype=np.int64)

    def begin(self, slot: int, env: Any, seed: int) -> None:
        self.student.begin(slot, env, seed)
        self.teacher.begin(slot, env, seed)
        self._slot_seed[slot], self._t[slot] = int(seed), 0
        self._records[int(seed)] = ([], [])

    def act(self, obs: np.ndarray, slots: np.ndarray) -> np.ndarray:
        slots = np.asarray(slots, dtype=np.int64)
        teacher = self.teacher
        planning = slots[teacher._pos[slots] >= teacher._queue.shape[1]]
        teacher.act(obs, slots)  # snapshots the worlds before the step: the search sees the true state
        if planning.size:
            for slot, chunk in zip(planning.tolist(), teacher.last_full):
                steps, chunks = self._records[int(self._slot_seed[slot])]
                steps.append(int(self._t[slot]))
                chunks.append(np.asarray(chunk, np.float32))
        self._t[slots] += 1
        return self.student.act(obs, slots)

    def labels(self, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """``(steps (n,), chunks (n, Tp, Da))`` recorded for the episode run with policy seed ``seed``."""
        steps, chunks = self._records[int(seed)]
        if not steps:
            raise ValueError(f"searched DAgger: no label was recorded for policy seed {seed}")
        return np.asarray(steps, np.int64), np.stack(chunks)


def searched_conditions(records: list[dict], labeler: SearchLabeler, n_obs: int, domain: int, round_: int):
    """Conditions at the labeled steps of each rollout, their searched chunks in ``executed``."""
    from simdiff.pipelines.mol.conditions import SOURCES, ConditionSet, windows

    parts = []
    for r in records:
        steps, chunks = labeler.labels(int(r["seed"]))
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
    if not parts:
        raise ValueError("searched DAgger: expected at least one rollout, received none")
    return ConditionSet.concat(parts)


__all__ = ["SearchLabeler", "searched_conditions"]
