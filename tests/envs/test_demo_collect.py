from __future__ import annotations

import numpy as np
import pytest

from envs.collect import collect

ID = "simdiff/Push-v0"


def test_same_episodes_for_any_number_of_workers():
    one = collect(ID, 6, seed=3, level=3, workers=1)
    two = collect(ID, 6, seed=3, level=3, workers=2)
    assert [e.seed for e in two] == list(range(3, 9))
    for a, b in zip(one, two):
        np.testing.assert_array_equal(a.actions, b.actions)
        np.testing.assert_array_equal(a.obs["obs"], b.obs["obs"])
        assert a.domain == b.domain


def test_only_success_keeps_first_successful_seeds():
    eps = collect(ID, 3, seed=0, level="shift", only_success=True)
    assert len(eps) == 3 and all(e.success for e in eps)
    assert [e.seed for e in eps] == sorted(e.seed for e in eps)
    everything = collect(ID, eps[-1].seed + 1, seed=0, level="shift")
    assert [e.seed for e in everything if e.success][:3] == [e.seed for e in eps]


def test_bad_arguments():
    with pytest.raises(ValueError, match="episodes must be >= 1"):
        collect(ID, 0)
    with pytest.raises(ValueError, match="unknown env id"):
        collect("simdiff/Nope-v0", 1)
