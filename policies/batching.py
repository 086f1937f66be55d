"""Receding-horizon bookkeeping shared by the runner adapters of every chunked policy.

The batched evaluation runner drives ``n`` env slots through one ``BatchPolicy`` (``reset(n)``,
``begin(slot, env, seed)``, ``act(obs, slots)``). Chunked policies (diffusion policy, planner, critic-guided
samplers) all keep, per slot, an observation history (the first observation repeated at an episode's start,
as in training), a queue of planned actions and a ``torch.Generator`` seeded from the episode seed. Only how
a chunk is produced differs: subclasses implement :meth:`ChunkedBatchPolicy._chunks`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


class ChunkedBatchPolicy:
    """Base class: per-slot history, action queue and generator; one batched ``_chunks`` call per refill."""

    def _allocate(self, n: int, obs_horizon: int, obs_dim: int, action_horizon: int, action_dim: int) -> None:
        self._hist = np.zeros((n, obs_horizon, obs_dim), dtype=np.float32)
        self._queue = np.zeros((n, action_horizon, action_dim), dtype=np.float32)
        self._pos = np.full(n, action_horizon, dtype=np.int64)  # next queue index; action_horizon = empty
        self._fresh = np.ones(n, dtype=bool)                     # no observation seen since begin()
        self._gens: list[torch.Generator | None] = [None] * n

    @property
    def num_slots(self) -> int:
        return self._hist.shape[0]

    def begin(self, slot: int, env: Any, seed: int | None) -> None:
        self._pos[slot] = self._queue.shape[1]
        self._fresh[slot] = True
        self._gens[slot] = None if seed is None else torch.Generator().manual_seed(int(seed))

    def _prepare_obs(self, obs: np.ndarray) -> np.ndarray:
        return obs

    def _chunks(self, need: np.ndarray) -> np.ndarray:
        """Action chunks ``(len(need), action_horizon, action_dim)`` for the slots ``need`` (histories in
        ``self._hist[need]``, generators in ``self._gens``)."""
        raise NotImplementedError

    def act(self, obs: np.ndarray, slots: np.ndarray) -> np.ndarray:
        """``obs (k, Do)`` for env slots ``slots (k,)`` -> actions ``(k, Da)``."""
        slots = np.asarray(slots, dtype=np.int64)
        obs = self._prepare_obs(np.asarray(obs, dtype=np.float32))
        fresh = self._fresh[slots]
        # Shift each history by one step; a fresh slot repeats its first observation (as at training time).
        hist = np.concatenate([self._hist[slots, 1:], obs[:, None]], axis=1)
        hist[fresh] = obs[fresh][:, None]
        self._hist[slots] = hist
        self._fresh[slots] = False
        need = slots[self._pos[slots] >= self._queue.shape[1]]
        if need.size:
            self._queue[need] = self._chunks(need)
            self._pos[need] = 0
        out = self._queue[slots, self._pos[slots]]
        self._pos[slots] += 1
        return out
