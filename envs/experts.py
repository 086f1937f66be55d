"""Scripted experts: closed-loop controllers that solve the simdiff envs, so demonstrations cost nothing.

``scripted_expert(env)`` returns an object with ``reset(seed=None)`` and ``act(obs) -> action`` (also
callable). Experts are **privileged**: they ignore the (noisy) observation and read the true state and the
sampled domain from ``env.unwrapped`` (positions, actuator gain, action delay, pending delayed actions).
Call ``expert.reset()`` after every ``env.reset()``; ``act`` must be called on the env's current state.

For a gymnasium vector env (``SyncVectorEnv``), :class:`VectorExpert` runs one expert per sub-env and
returns a ``(num_envs, Da)`` batch.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def scripted_expert(env: Any):
    """The scripted expert for a simdiff env (wrapped or not) or a ``SyncVectorEnv`` of them."""
    if hasattr(env, "envs") and hasattr(env, "num_envs"):
        return VectorExpert(env)
    base = getattr(env, "unwrapped", env)
    from envs.push import PushEnv

    if isinstance(base, PushEnv):
        return PushExpert(base)
    if type(base).__name__ == "LiftEnv":  # by name: importing envs.lift is fine, but keep this module light
        return LiftExpert(base)
    raise TypeError(f"no scripted expert for {type(base).__name__}; expected a simdiff env (PushEnv or LiftEnv)")


class VectorExpert:
    """One scripted expert per sub-env of a ``SyncVectorEnv``; ``act(obs) -> (num_envs, Da)`` float32."""

    def __init__(self, vec_env: Any):
        self.experts = [scripted_expert(e) for e in vec_env.envs]

    def reset(self, seed: int | None = None, index: int | None = None) -> None:
        for i, e in enumerate(self.experts):
            if index is None or i == index:
                e.reset(seed)

    def act(self, obs: np.ndarray) -> np.ndarray:
        return np.stack([e.act(o) for e, o in zip(self.experts, obs)])

    __call__ = act


class PushExpert:
    """Push-v0 expert: get behind the box on the box->goal line, then push along it.

    Privileged inputs: true box pose and size, pusher position predicted through the action delay from the
    env's pending actions, and the actuator gain (commands are divided by it).
    """

    SPEED = 0.25  # m/s while moving around the box
    PUSH_SPEED = 0.2  # m/s while pushing, reduced near the goal
    CLEAR = 0.015  # m of clearance kept from the box while moving around it
    K_POS = 4.0  # 1/s, proportional gain toward waypoints

    def __init__(self, env: Any):
        self.env = env
        self._pushing = False

    def reset(self, seed: int | None = None) -> None:
        """Forget the push/go-around mode (the controller draws no random numbers)."""
        self._pushing = False

    def act(self, obs: np.ndarray | None = None) -> np.ndarray:
        from envs import push

        env = self.env
        dom = env.domain
        b, g, yaw, a = env.box_pos, env.goal, env.box_yaw, dom.box_size
        gain_speed = dom.actuator_gain * push.MAX_SPEED
        p_now = env.pusher_pos
        to_goal = g - b
        dist = float(np.hypot(*to_goal))
        u = to_goal / max(dist, 1e-9)
        n = np.array([-u[1], u[0]])
        contact = _face_distance(-u, yaw, a) + push.PUSHER_RADIUS
        rel = p_now - b
        along, lateral = float(rel @ u), float(rel @ n)
        # Hysteresis: once pushing, tolerate more lateral drift before going around again.
        lat_tol = (0.8 if self._pushing else 0.5) * a
        self._pushing = -contact - 0.04 < along < -contact + 0.015 and abs(lateral) < lat_tol
        if self._pushing:
            # Push along the box->goal line, correcting the contact point sideways; slower gains when the
            # action delay is long, so the correction does not oscillate.
            k = self.K_POS / (1.0 + dom.action_delay)
            speed = min(self.PUSH_SPEED, 0.05 + 1.5 * dist)
            v = (speed + max(0.0, k * (-contact + 0.005 - along))) * u - k * lateral * n
        else:
            # Where the pusher will be when this action takes effect (delay compensation).
            p = p_now + env.pending_actions.sum(axis=0) * gain_speed * push.CONTROL_DT
            v = self._go_around(p, b, u, a, contact)
        return np.clip(v / gain_speed, -1.0, 1.0).astype(np.float32)

    __call__ = act

    def _go_around(self, p, b, u, a, contact) -> np.ndarray:
        from envs import push

        rho = math.sqrt(2.0) * a + push.PUSHER_RADIUS + self.CLEAR
        rel = p - b
        r = float(np.hypot(*rel))
        want = math.atan2(-u[1], -u[0])
        have = math.atan2(rel[1], rel[0])
        diff = (want - have + math.pi) % (2.0 * math.pi) - math.pi
        if abs(diff) < 0.35:
            # Roughly behind: approach the staging point straight on.
            target = b - u * (contact + 0.01)
        else:
            step = math.copysign(min(abs(diff), 0.7), diff)
            target = b + max(rho, min(r, rho + 0.02)) * np.array([math.cos(have + step), math.sin(have + step)])
        v = self.K_POS * (target - p)
        speed = float(np.hypot(*v))
        if speed > self.SPEED:
            v *= self.SPEED / speed
        return v


def _face_distance(direction: np.ndarray, yaw: float, half: float) -> float:
    """Distance from a square's center to its boundary along unit ``direction`` (square rotated by yaw)."""
    c, s = math.cos(yaw), math.sin(yaw)
    wx = c * direction[0] + s * direction[1]
    wy = -s * direction[0] + c * direction[1]
    return half / max(abs(wx), abs(wy), 1e-9)


class LiftExpert:
    """Lift-v0 expert: align above the cube, descend, close the gripper, lift past the goal height.

    Privileged inputs: true cube and gripper poses, finger opening, goal height, cube size and the pending
    delayed actions (to predict where the gripper is heading). Phases: 0 approach (above the cube, yaw
    aligned modulo 90 degrees), 1 descend, 2 close, 3 lift; a slipped cube sends it back to 0.
    """

    ABOVE = 0.06  # m above the cube center while approaching
    V_MAX = 0.4  # m/s
    LOOP = 1.0  # position-loop gain as a fraction of 1 / (total lag)
    GRASP_STEPS = 3  # minimum steps of closing before lifting (plus the action delay)

    def __init__(self, env: Any):
        self.env = env
        self.reset()

    def reset(self, seed: int | None = None) -> None:
        """Back to the approach phase (the controller draws no random numbers)."""
        self.phase = 0
        self._closing = 0
        self._width = None

    def act(self, obs: np.ndarray | None = None) -> np.ndarray:
        from envs import lift

        env = self.env
        dom = env.domain
        eef, cube = env.eef_pos, env.cube_pos
        rel = cube - eef
        xy_err = float(np.hypot(rel[0], rel[1]))
        yaw_err = (env.cube_yaw - env.eef_yaw + math.pi / 4.0) % (math.pi / 2.0) - math.pi / 4.0
        target, grip = self._plan(env, dom, eef, cube, rel, xy_err, yaw_err)

        # The OSC goal is (achieved pose + delta), so a held delta d gives a steady velocity g * d with
        # g = omega / (2 zeta), omega = sqrt(kp). Command velocities through that map, predicted over the
        # action delay, with a loop gain below 1 / (delay + controller lag) so the arm does not oscillate.
        dt = 1.0 / lift.CONTROL_FREQ
        omega = math.sqrt(lift.KP_NOMINAL * dom.kp_scale)
        g = omega / (2.0 * dom.damping_ratio)
        lag = (dom.action_delay + 1) * dt + 1.0 / g
        k = self.LOOP / lag
        vel = env.eef_velocity
        eef_pred = eef + vel[3:] * dom.action_delay * dt
        v = k * (target - eef_pred)
        speed = float(np.linalg.norm(v))
        if speed > self.V_MAX:
            v *= self.V_MAX / speed
        yaw_pred = yaw_err - vel[2] * dom.action_delay * dt
        # Keep the gripper pointing down (tilt) and turn it to the cube's yaw (modulo 90 degrees).
        w = np.zeros(3)
        w[:2] = k * np.cross(env.eef_approach, (0.0, 0.0, -1.0))[:2]
        w[2] = k * yaw_pred
        act = np.zeros(7)
        act[:3] = v / g / lift.POS_SCALE
        act[3:6] = w / g / lift.ROT_SCALE
        act[6] = grip
        return np.clip(act, -1.0, 1.0).astype(np.float32)

    def _plan(self, env, dom, eef, cube, rel, xy_err, yaw_err):
        """Phase machine: returns the gripper target position and the gripper command."""
        grip = -1.0
        if self.phase == 0:
            target = cube + np.array([0.0, 0.0, self.ABOVE])
            if xy_err < 0.01 and abs(eef[2] - target[2]) < 0.02 and abs(yaw_err) < 0.1:
                self.phase = 1
        if self.phase == 1:
            target = cube.copy()
            if xy_err > 0.02:
                self.phase = 0
                target = cube + np.array([0.0, 0.0, self.ABOVE])
            elif abs(rel[2]) < 0.008:
                self.phase, self._closing, self._width = 2, 0, None
        if self.phase == 2:
            # Close until the fingers stop moving (they rest on the cube), then lift.
            target, grip = cube.copy(), 1.0
            self._closing += 1
            width = env.gripper_width
            settled = self._width is not None and abs(width - self._width) < 1e-3
            self._width = width
            if self._closing >= self.GRASP_STEPS + dom.action_delay and settled:
                self.phase = 3
        if self.phase == 3:
            target, grip = np.array([eef[0], eef[1], env.goal_z + 0.05 - rel[2]]), 1.0
            if np.linalg.norm(rel) > dom.cube_size + 0.03:
                self.phase, grip = 0, -1.0
                target = cube + np.array([0.0, 0.0, self.ABOVE])
        return target, grip

    __call__ = act
