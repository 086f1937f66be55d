"""Save and restore the full state of a simdiff Push-v0 env, so candidate chunks run from the same moment.

``PushEnv.get_state`` / ``set_state`` hold qpos, qvel and the goal (enough to redraw a frame), not enough
to continue a rollout identically: the solver warm start, time and controls (MuJoCo's integration state),
the action-delay ring buffer, the observation-noise generator and the time-limit wrapper's step counter
matter too. :func:`snapshot` captures all of these from ``env`` (wrappers included) together with the
domain, and :func:`restore` puts them back into any Push-v0 env instance with the same observation layout:
when its domain differs, the snapshot's domain is applied first (``PushEnv._apply_domain``), so a pool of
spare envs can replay candidates from the states of other envs.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class EnvSnapshot:
    physics: np.ndarray          # mj_getState(mjSTATE_INTEGRATION)
    action_buffer: np.ndarray    # the action-delay ring buffer
    buffer_ptr: int
    goal: np.ndarray
    rng_state: dict              # the env's np_random bit-generator state (observation noise)
    elapsed_steps: int | None    # gymnasium TimeLimit counter, when wrapped
    max_episode_steps: int | None  # and its limit
    domain: Any                  # the PushDomain (model parameters, action delay)
    observe_domain: bool


def _time_limit(env: Any):
    w = env
    while w is not None:
        if hasattr(w, "_elapsed_steps") and hasattr(w, "_max_episode_steps"):
            return w
        w = getattr(w, "env", None)
    return None


def _push_env(env: Any):
    base = env.unwrapped
    for name in ("_model", "_data", "_buf", "_ptr", "goal"):
        if not hasattr(base, name):
            raise TypeError(f"env: expected a simdiff Push-v0 env (missing .{name}), received {type(base).__name__}")
    return base


def snapshot(env: Any) -> EnvSnapshot:
    """Everything needed to continue ``env`` from now (see module docstring)."""
    import mujoco

    base = _push_env(env)
    spec = mujoco.mjtState.mjSTATE_INTEGRATION
    phys = np.empty(mujoco.mj_stateSize(base._model, spec))
    mujoco.mj_getState(base._model, base._data, phys, spec)
    tl = _time_limit(env)
    return EnvSnapshot(phys, base._buf.copy(), int(base._ptr), np.array(base.goal, dtype=np.float64),
                       copy.deepcopy(base.np_random.bit_generator.state),
                       None if tl is None else int(tl._elapsed_steps),
                       None if tl is None else int(tl._max_episode_steps), base.domain, bool(base.observe_domain))


def restore(env: Any, snap: EnvSnapshot) -> None:
    """Put ``snap`` into ``env`` (the env it came from, or another Push-v0 env with the same observation
    layout: the snapshot's domain is applied to it first)."""
    import mujoco

    base = _push_env(env)
    if bool(base.observe_domain) != snap.observe_domain:
        raise ValueError(f"snapshot: expected an env with observe_domain={snap.observe_domain}, received "
                         f"observe_domain={base.observe_domain}")
    if base.domain != snap.domain:
        base._apply_domain(snap.domain)
    spec = mujoco.mjtState.mjSTATE_INTEGRATION
    mujoco.mj_setState(base._model, base._data, snap.physics, spec)
    mujoco.mj_forward(base._model, base._data)
    base._buf = snap.action_buffer.copy()
    base._ptr = snap.buffer_ptr
    base._set_goal(snap.goal)
    base.np_random.bit_generator.state = copy.deepcopy(snap.rng_state)
    tl = _time_limit(env)
    if tl is not None and snap.elapsed_steps is not None:
        tl._elapsed_steps = snap.elapsed_steps
        tl._max_episode_steps = snap.max_episode_steps


def box_goal_distance(env: Any) -> float:
    """Distance (m) between the box center and the goal, from the simulator (noise-free)."""
    base = env.unwrapped
    return float(np.hypot(*(base.box_pos - base.goal)))


def staging_distance(env: Any) -> float:
    """Distance (m) from the pusher to the staging point behind the box on the box->goal line (one box half
    extent plus the pusher radius and 1 cm beyond the box center): small when the pusher is placed to push the
    box straight at the goal. A task-shaping measure for searches (no policy reads it)."""
    from envs.push import PUSHER_RADIUS

    base = env.unwrapped
    b, g = base.box_pos, base.goal
    u = (g - b) / max(float(np.hypot(*(g - b))), 1e-9)
    stage = b - u * (base.domain.box_size + PUSHER_RADIUS + 0.01)
    return float(np.hypot(*(base.pusher_pos - stage)))


__all__ = ["EnvSnapshot", "snapshot", "restore", "box_goal_distance", "staging_distance"]
