from __future__ import annotations

import importlib.util
import sys
import warnings

import gymnasium as gym
import numpy as np
import pytest

import envs

ID = "simdiff/Lift-v0"
needs_robosuite = pytest.mark.skipif(importlib.util.find_spec("robosuite") is None,
                                     reason="robosuite not installed (pip install simdiff[robot])")


def test_without_robosuite_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "robosuite", None)  # makes `import robosuite` fail
    assert "cube_mass" in envs.domain_spec(ID).names  # the domain needs no robosuite
    with pytest.raises(ImportError, match=r"pip install simdiff\[robot\]"):
        gym.make(ID)


@pytest.fixture(scope="module")
def lift():
    env = gym.make(ID, level=1)
    yield env
    env.close()


@pytest.mark.robot
@needs_robosuite
def test_check_env_and_layout(lift):
    from gymnasium.utils.env_checker import check_env

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_env(lift.unwrapped, skip_render_check=True)
    base = lift.unwrapped
    obs, info = lift.reset(seed=0)
    assert obs.shape == (30,) and base.obs_layout["context"] == slice(20, 30)
    assert lift.action_space.shape == (7,)


@pytest.mark.robot
@needs_robosuite
def test_domain_written_into_model_and_reset_deterministic(lift):
    base = lift.unwrapped
    obs, info = lift.reset(seed=3, options={"domain": {"cube_mass": 0.3, "cube_size": 0.03}})
    m = base._sim.model._model
    assert m.body_mass[base._cube_body] == pytest.approx(0.3)
    assert m.geom_size[base._cube_geoms[0], 0] == pytest.approx(0.03)
    assert base.cube_pos[2] == pytest.approx(base.table_z + 0.03, abs=2e-3)
    again, info2 = lift.reset(seed=3, options={"domain": {"cube_mass": 0.3, "cube_size": 0.03}})
    np.testing.assert_array_equal(obs, again)
    assert info == info2


@pytest.mark.robot
@needs_robosuite
def test_expert_lifts_the_cube(lift):
    expert = envs.scripted_expert(lift)
    for seed in (0, 1):
        obs, _ = lift.reset(seed=seed)
        expert.reset(seed)
        while True:
            obs, _, term, trunc, info = lift.step(expert.act(obs))
            if term or trunc:
                break
        assert info["success"], f"seed {seed}: expert failed in phase {expert.phase}"
