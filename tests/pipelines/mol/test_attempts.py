"""Specialist rollouts with several tries per seed (``conditions.attempts``)."""

from __future__ import annotations

import numpy as np
import pytest

from simdiff.config import ConfigError, load_config
from simdiff.pipelines.evaluate import ExpertBatchPolicy
from simdiff.pipelines.mol.adapters import ATTEMPT_SEED_STRIDE, rollouts_with_attempts
from simdiff.pipelines.mol.config import MolConfig, with_overrides

ENV = "simdiff/Push-v0"


class _StubbornExpert(ExpertBatchPolicy):
    """The scripted expert from try ``seed % 3`` on (counted from 0); before that it holds still (and fails)."""

    def begin(self, slot, env, seed):
        super().begin(slot, env, seed % ATTEMPT_SEED_STRIDE)
        self._late = getattr(self, "_late", {})
        self._late[slot] = seed // ATTEMPT_SEED_STRIDE < (seed % ATTEMPT_SEED_STRIDE) % 3

    def act(self, obs, slots):
        a = super().act(obs, slots)
        a[[self._late[s] for s in np.asarray(slots).tolist()]] = 0.0
        return a


class _Policy:
    def batch_policy(self):
        return _StubbornExpert()


@pytest.mark.parametrize("attempts, solved, episodes", [(1, 3, 9), (2, 6, 15), (3, 9, 18)])
def test_failed_seeds_are_retried_with_fresh_noise(attempts, solved, episodes):
    seeds = list(range(30, 39))  # 3 solved at the first try, 3 at the second, 3 at the third
    recs, st = rollouts_with_attempts(_Policy(), ENV, 0, seeds, attempts, batch_envs=4,
                                      make_kwargs={"max_episode_steps": 60})
    assert len(recs) == st["rollout_episodes"] == episodes
    assert st["rollout_success"] == pytest.approx(1 / 3)
    assert st["seeds_solved"] == pytest.approx(solved / 9)
    winners = [r["seed"] for r in recs if r["success"]]
    assert len(winners) == len(set(winners)) == solved  # a solved seed is never rolled out again


def test_attempts_config_range_and_fingerprint():
    with pytest.raises(ConfigError, match="conditions.attempts"):
        load_config(MolConfig, {"conditions": {"attempts": 0}})
    cfg = MolConfig()
    # at its default the new key leaves fingerprints (and so the resume of older runs) unchanged
    assert with_overrides(cfg, conditions={"attempts": 1}).fingerprint() == cfg.fingerprint()
    assert with_overrides(cfg, conditions={"attempts": 4}).fingerprint() != cfg.fingerprint()
