"""Demonstrations as training windows for an action-chunking policy.

An episode of length ``L`` has observations ``o_0 .. o_{L-1}`` and actions ``a_0 .. a_{L-1}`` (``a_t`` is
taken after seeing ``o_t``). A training window starting at ``s`` covers steps ``s .. s+Tp-1``: the policy
sees ``o_s .. o_{s+To-1}`` and learns ``a_s .. a_{s+Tp-1}``; at run time it executes the ``Ta`` actions from
index ``To-1`` (the current step) on. As in Chi et al.'s sequence sampler, windows start from ``s = -(To-1)``
to ``L - Tp + (Ta-1)``, and indices outside the episode are clamped to its first / last step: the start is
padded by repeating the first observation (as the policy does at ``reset``), the end by repeating the last
action.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from simdiff.errors import DatasetError


@dataclass(frozen=True, eq=False)
class Episodes:
    """Concatenated demonstrations.

    ``obs (N, Do)`` and ``actions (N, Da)`` float32 hold every step of every episode back to back;
    ``lengths (E,)`` their episode lengths; ``task_ids (E,)`` optional integer labels; ``obs_layout`` maps a
    part name (``state``, ``context``) to ``(start, stop)`` columns of ``obs``; ``meta`` holds the source
    (env id and kwargs, file path).
    """

    obs: np.ndarray
    actions: np.ndarray
    lengths: np.ndarray
    obs_layout: dict[str, tuple[int, int]]
    task_ids: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        obs = np.ascontiguousarray(self.obs, dtype=np.float32)
        act = np.ascontiguousarray(self.actions, dtype=np.float32)
        lengths = np.asarray(self.lengths, dtype=np.int64)
        if obs.ndim != 2 or act.ndim != 2 or obs.shape[0] != act.shape[0]:
            raise ValueError(f"Episodes: expected obs (N, Do) and actions (N, Da) with equal N, received "
                             f"{obs.shape} and {act.shape}")
        if lengths.ndim != 1 or lengths.size < 1 or (lengths < 1).any() or lengths.sum() != obs.shape[0]:
            raise ValueError(f"Episodes: expected positive lengths (E,) summing to N={obs.shape[0]}, received "
                             f"{lengths.tolist()[:10]}")
        if not (np.isfinite(obs).all() and np.isfinite(act).all()):
            raise ValueError("Episodes: expected finite observations and actions, received NaN or inf")
        layout = {k: (int(v[0]), int(v[1])) for k, v in (self.obs_layout or {}).items()}
        if "state" not in layout:
            layout["state"] = (0, obs.shape[1])
        for k, (a, b) in layout.items():
            if not 0 <= a < b <= obs.shape[1]:
                raise ValueError(f"Episodes.obs_layout[{k!r}]: expected columns within [0, {obs.shape[1]}], "
                                 f"received ({a}, {b})")
        tasks = None if self.task_ids is None else np.asarray(self.task_ids, dtype=np.int64)
        if tasks is not None and tasks.shape != lengths.shape:
            raise ValueError(f"Episodes.task_ids: expected shape {lengths.shape}, received {tasks.shape}")
        for name, v in (("obs", obs), ("actions", act), ("lengths", lengths), ("obs_layout", layout),
                        ("task_ids", tasks)):
            object.__setattr__(self, name, v)

    @property
    def num_episodes(self) -> int:
        return int(self.lengths.shape[0])

    @property
    def obs_dim(self) -> int:
        return int(self.obs.shape[1])

    @property
    def action_dim(self) -> int:
        return int(self.actions.shape[1])

    @property
    def starts(self) -> np.ndarray:
        """``(E,)`` row of each episode's first step."""
        return np.concatenate([[0], np.cumsum(self.lengths)[:-1]]).astype(np.int64)

    def select(self, keep: np.ndarray | list[int]) -> Episodes:
        """The episodes with indices ``keep`` (in that order)."""
        keep = [int(i) for i in keep]
        if not keep:
            raise ValueError("select: expected at least one episode index, received none")
        starts = self.starts
        rows = np.concatenate([np.arange(starts[i], starts[i] + self.lengths[i]) for i in keep])
        tasks = None if self.task_ids is None else self.task_ids[keep]
        return Episodes(self.obs[rows], self.actions[rows], self.lengths[keep], self.obs_layout, tasks,
                        dict(self.meta))

    def fingerprint(self) -> str:
        """SHA-256 of the arrays (lengths, observations, actions, task ids): identifies the training data."""
        h = hashlib.sha256()
        for arr in (self.lengths, self.obs, self.actions, self.task_ids):
            if arr is not None:
                h.update(str(arr.shape).encode())
                h.update(np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<"), copy=False).tobytes())
        return h.hexdigest()


def check_episode_arrays(obs: list[np.ndarray], actions: list[np.ndarray], names: list[str] | None = None) -> None:
    """Raise ``ValueError`` naming the first bad episode unless every ``obs[e]`` is ``(L_e, Do)`` and every
    ``actions[e]`` ``(L_e, Da)`` with one ``(Do, Da)`` for all episodes and finite values.

    ``names`` (e.g. a file's demo group names) label the episodes in messages; default ``episode e``.
    """
    if len(obs) != len(actions) or not obs:
        raise ValueError(f"expected equally many (>= 1) observation and action arrays, received {len(obs)} "
                         f"and {len(actions)}")
    label = (lambda e: names[e]) if names is not None else (lambda e: f"episode {e}")
    for e, (o, a) in enumerate(zip(obs, actions)):
        if np.ndim(o) != 2 or np.ndim(a) != 2 or len(o) != len(a):
            raise ValueError(f"{label(e)}: expected obs (L, Do) and actions (L, Da) of equal length, received "
                             f"{np.shape(o)} and {np.shape(a)}")
    widths = {(np.shape(o)[1], np.shape(a)[1]) for o, a in zip(obs, actions)}
    if len(widths) > 1:
        first = (np.shape(obs[0])[1], np.shape(actions[0])[1])
        e = next(e for e, (o, a) in enumerate(zip(obs, actions)) if (np.shape(o)[1], np.shape(a)[1]) != first)
        raise ValueError(f"{label(e)}: expected the observation and action widths of {label(0)}, (Do, Da) = "
                         f"{first}, received {(np.shape(obs[e])[1], np.shape(actions[e])[1])} (episodes from "
                         "different worlds or settings cannot share one dataset)")
    bad = next((e for e, (o, a) in enumerate(zip(obs, actions))
                if not (np.isfinite(o).all() and np.isfinite(a).all())), None)
    if bad is not None:
        raise ValueError(f"{label(bad)}: expected finite observations and actions, received NaN or inf")


def episodes_from_arrays(obs: list[np.ndarray], actions: list[np.ndarray],
                         obs_layout: dict[str, tuple[int, int] | slice] | None = None,
                         task_ids: list[int] | None = None, meta: dict | None = None,
                         names: list[str] | None = None) -> Episodes:
    """Build :class:`Episodes` from per-episode arrays ``obs[e] (L_e, Do)``, ``actions[e] (L_e, Da)``, checked by
    :func:`check_episode_arrays` (``names`` label the episodes in its messages)."""
    check_episode_arrays(obs, actions, names)
    layout = {k: ((v.start, v.stop) if isinstance(v, slice) else tuple(v)) for k, v in (obs_layout or {}).items()}
    return Episodes(np.concatenate(obs), np.concatenate(actions), np.array([len(o) for o in obs]), layout,
                    None if task_ids is None else np.asarray(task_ids), dict(meta or {}))


def load_episodes(path: str | os.PathLike, max_episodes: int | None = None,
                  successful_only: bool = False) -> Episodes:
    """Read a demonstration file (robomimic layout, see :mod:`envs.datasets`) as :class:`Episodes`.

    The observation is the file's flat observation (``obs_keys`` concatenated); ``obs_layout`` comes from the
    file when it has one (simdiff files: ``state`` then ``context``), else the whole vector is ``state``.
    ``meta`` records the file, its env id and env kwargs (without ``level``), so evaluation can default to
    the env the demos came from.
    """
    from envs.datasets import load_demos

    demos = load_demos(path)
    eps = list(demos.episodes)
    if successful_only:
        eps = [e for e in eps if e.success]
    if max_episodes is not None:
        eps = eps[:max_episodes]
    if not eps:
        raise ValueError(f"{path}: no episodes left to train on (successful_only={successful_only}, "
                         f"max_episodes={max_episodes})")
    layout = demos.attrs.get("obs_layout")
    layout = {k: (int(v[0]), int(v[1])) for k, v in layout.items()} if isinstance(layout, dict) else None
    env_kwargs = {k: v for k, v in demos.env_kwargs.items() if k != "level"}
    levels = sorted({str(e.level) for e in eps if e.level is not None})
    meta = {"path": str(Path(path).resolve()), "env_id": demos.env_name, "env_kwargs": env_kwargs,
            "levels": levels}
    try:
        return episodes_from_arrays([e.flat_obs() for e in eps], [e.actions for e in eps], layout, None, meta,
                                    names=[e.name or f"episode {i}" for i, e in enumerate(eps)])
    except ValueError as err:
        raise DatasetError(f"{path}: {err}") from None


# ------------------------------------------------------------------------------------------------ windows
def window_rows(lengths: np.ndarray, obs_horizon: int, pred_horizon: int, action_horizon: int) -> np.ndarray:
    """``(W, Tp)`` int64 row indices (into the concatenated arrays) of every training window.

    Window ``s`` of an episode covers its steps ``s .. s+Tp-1`` clamped to ``[0, L-1]``, for
    ``s = -(To-1) .. L - Tp + (Ta-1)`` (at least one window per episode).
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    out = []
    offset = 0
    for length in lengths.tolist():
        lo = -(obs_horizon - 1)
        hi = max(length - pred_horizon + action_horizon - 1, lo)
        s = np.arange(lo, hi + 1)[:, None] + np.arange(pred_horizon)[None, :]
        out.append(offset + np.clip(s, 0, length - 1))
        offset += length
    return np.concatenate(out).astype(np.int64)


class WindowSampler:
    """Random training windows ``{"obs": (B, To, Do), "action": (B, Tp, Da), "task": (B,) | None}`` (raw units).

    Sampling is uniform over windows and draws only from the given ``torch.Generator``.
    """

    def __init__(self, episodes: Episodes, obs_horizon: int, pred_horizon: int, action_horizon: int):
        self.obs_horizon = obs_horizon
        self.rows = torch.from_numpy(window_rows(episodes.lengths, obs_horizon, pred_horizon, action_horizon))
        self.obs = torch.from_numpy(episodes.obs)
        self.actions = torch.from_numpy(episodes.actions)
        self.tasks = None
        if episodes.task_ids is not None:
            per_row = np.repeat(episodes.task_ids, episodes.lengths)
            self.tasks = torch.from_numpy(per_row)

    def __len__(self) -> int:
        return int(self.rows.shape[0])

    def sample(self, batch_size: int, generator: torch.Generator) -> dict[str, torch.Tensor | None]:
        idx = torch.randint(len(self), (batch_size,), generator=generator)
        return self.gather(idx)

    def gather(self, idx: torch.Tensor) -> dict[str, torch.Tensor | None]:
        rows = self.rows[idx]
        return {"obs": self.obs[rows[:, :self.obs_horizon]], "action": self.actions[rows],
                "task": None if self.tasks is None else self.tasks[rows[:, 0]]}


__all__ = ["Episodes", "episodes_from_arrays", "load_episodes", "window_rows", "WindowSampler"]
