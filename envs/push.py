"""``simdiff/Push-v0``: a planar pusher pushes a box into a goal disc (pure MuJoCo, ``assets/push.xml``).

World
    A sphere pusher (radius 1 cm, on x/y slides, velocity actuators with finite stiffness) and a square box
    (slides x/y/z and a yaw hinge, so it cannot tip) resting on a table with Coulomb friction. Nominally the
    box starts at the origin, the pusher 4 cm behind it (-x), and the goal is 20 cm away along +x.

Control
    10 Hz (10 physics steps of 10 ms). Action ``a`` in [-1, 1]^2 is the commanded pusher velocity in units of
    ``MAX_SPEED`` (0.25 m/s); the actuator receives ``actuator_gain * MAX_SPEED * a`` after ``action_delay``
    control steps. The actuator is a velocity servo with stiffness ``ACTUATOR_KV`` N/(m/s), so a heavy,
    high-friction box slows the pusher down.

Observation (float32, flat; ``env.unwrapped.obs_layout`` gives the slices)
    ``state`` (12): pusher x, y, vx, vy; box x, y, cos(4 yaw), sin(4 yaw) (yaw modulo the square's 90 degree
    symmetry); box vx, vy; goal x, y. Every entry but the goal carries Gaussian noise of std ``obs_noise``.
    ``context`` (8, only when ``observe_domain=True``): the domain, normalized by level 3's range
    (see :meth:`envs.domains.DomainSpec.normalize`), noise-free.

Reward and termination
    Reward is ``-|box - goal|`` (meters) every step. ``info["success"]`` is True once the box center is within
    ``GOAL_TOL`` (2.5 cm) of the goal; the episode then terminates. The registered env truncates at
    ``MAX_EPISODE_STEPS`` (100 steps = 10 s).

Domain (``PushDomain``; levels nested, ``shift`` outside level 3), see the field declarations below.
"""

from __future__ import annotations

import copy
import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np

from envs.domains import DomainSpec, domain_dict, param, parse_level

ASSET = Path(__file__).parent / "assets" / "push.xml"
N_SUBSTEPS = 10  # physics steps (10 ms) per control step
CONTROL_DT = 0.1
MAX_SPEED = 0.25  # m/s at |a| = 1 and actuator_gain = 1
ACTUATOR_KV = 300.0  # N/(m/s), set in push.xml too; documented here for experts and readers
GOAL_TOL = 0.025  # m
GOAL_NOMINAL = (0.2, 0.0)
MIN_GOAL_DISTANCE = 0.08  # resample the start/goal pair when closer than this
PUSHER_RADIUS = 0.01
PUSHER_GAP = 0.04  # initial clearance between the pusher and the box's circumscribed circle
MAX_EPISODE_STEPS = 100
SPREAD_FULL = 0.12  # init_spread at which the box yaw and the pusher's start side become fully random

STATE_NAMES = ("pusher_x", "pusher_y", "pusher_vx", "pusher_vy", "box_x", "box_y", "box_cos4yaw",
               "box_sin4yaw", "box_vx", "box_vy", "goal_x", "goal_y")
STATE_DIM = len(STATE_NAMES)
_NOISY = STATE_DIM - 2  # the goal is known exactly
#: The reflection y -> -y maps the task onto itself: the nominal layout lies on the x axis, the start and goal
#: discs, the box yaw and the pusher's start side are drawn symmetrically, the box is square and the domain
#: parameters are scalars. Signs of the state entries and of the action under it (the context is unchanged).
MIRROR_STATE_SIGN = (1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1)
MIRROR_ACTION_SIGN = (1, -1)

# qpos / qvel layout of push.xml
_BOX_X, _BOX_Y, _BOX_Z, _BOX_YAW, _PUSH_X, _PUSH_Y = range(6)


@dataclass(frozen=True)
class PushDomain:
    """Physical and task parameters of one Push-v0 domain (fields default to nominal)."""

    box_mass: float = param(0.5, [(0.45, 0.55), (0.35, 0.75), (0.25, 1.1), (0.15, 1.6)],
                            [(0.08, 0.15), (1.6, 2.5)], (0.01, 20.0), unit="kg", doc="box mass")
    friction: float = param(0.4, [(0.36, 0.44), (0.28, 0.55), (0.2, 0.7), (0.12, 0.9)],
                            [(0.05, 0.12), (0.9, 1.3)], (0.0, 3.0), doc="box-table sliding friction coefficient")
    box_size: float = param(0.04, [(0.038, 0.042), (0.034, 0.047), (0.03, 0.053), (0.025, 0.06)],
                            [(0.018, 0.025), (0.06, 0.075)], (0.012, 0.1), unit="m", doc="box half extent")
    actuator_gain: float = param(1.0, [(0.96, 1.04), (0.85, 1.15), (0.72, 1.3), (0.6, 1.5)],
                                 [(0.45, 0.6), (1.5, 1.8)], (0.05, 5.0),
                                 doc="commanded pusher velocity = gain * MAX_SPEED * action")
    init_spread: float = param(0.0, [(0.0, 0.01), (0.0, 0.04), (0.0, 0.08), (0.0, 0.12)], [(0.12, 0.16)],
                               (0.0, 0.3), unit="m",
                               doc="radius of the box start disc; also widens its yaw and the pusher's start "
                                   "side, as (init_spread / 0.12)^2 (fully random at 0.12)")
    goal_spread: float = param(0.0, [(0.0, 0.01), (0.0, 0.04), (0.0, 0.08), (0.0, 0.12)], [(0.12, 0.16)],
                               (0.0, 0.3), unit="m", doc="radius of the goal disc around (0.2, 0)")
    obs_noise: float = param(0.0, [(0.0, 0.0005), (0.0, 0.002), (0.0, 0.004), (0.0, 0.006)],
                             [(0.006, 0.012)], (0.0, 0.1), doc="std of Gaussian noise on the state entries")
    action_delay: int = param(0, [(0, 0), (0, 1), (0, 2), (0, 3)], [(4, 6)], (0, 20), integer=True,
                              unit="steps", doc="control steps between an action and its effect")


DOMAIN_SPEC = DomainSpec(PushDomain)


@functools.lru_cache(maxsize=1)
def _template_model() -> mujoco.MjModel:
    # Parse once per process; every env mutates its own copy (copying is ~10x cheaper than parsing).
    return mujoco.MjModel.from_xml_path(str(ASSET))


class PushEnv(gym.Env):
    """Domain-randomized planar pushing. See the module docstring for spaces, reward and domain."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, level: int | str | None = 0, domain: dict[str, Any] | None = None,
                 observe_domain: bool = True, render_mode: str | None = None, width: int = 320,
                 height: int = 240, camera: str = "angled"):
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array'; received {render_mode!r}")
        self.level = parse_level(level)
        self.domain_spec = DOMAIN_SPEC
        self._overrides = DOMAIN_SPEC.validate(domain)
        self.observe_domain = bool(observe_domain)
        self.render_mode = render_mode
        self._width, self._height, self._camera = int(width), int(height), camera

        self._model = copy.copy(_template_model())
        self._data = mujoco.MjData(self._model)
        m = self._model
        self._box_geom = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, "box")
        self._box_body = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, "box")
        self._goal_site = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_SITE, "goal")
        self._floor_pair = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_PAIR, "box_floor")
        m.site_size[self._goal_site, 0] = GOAL_TOL

        ctx_dim = len(DOMAIN_SPEC) if self.observe_domain else 0
        self.state_names = STATE_NAMES
        self.context_names = DOMAIN_SPEC.names if self.observe_domain else ()
        self.obs_layout = {"state": slice(0, STATE_DIM)}
        if self.observe_domain:
            self.obs_layout["context"] = slice(STATE_DIM, STATE_DIM + ctx_dim)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (STATE_DIM + ctx_dim,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)

        self.domain: PushDomain = DOMAIN_SPEC.nominal()
        self._domain_info: dict[str, Any] = domain_dict(self.domain)
        self._context = np.zeros(ctx_dim, dtype=np.float32)
        self._obs_template = np.zeros(STATE_DIM + ctx_dim, dtype=np.float32)
        self._set_goal(GOAL_NOMINAL)
        #: the task's mirror symmetry as per-entry signs of observation and action (None where a world has none)
        self.mirror = {"obs": np.array(MIRROR_STATE_SIGN + (1,) * ctx_dim, dtype=np.float32),
                       "action": np.array(MIRROR_ACTION_SIGN, dtype=np.float32)}
        self._bx = self._by = 0.0
        self._scale = MAX_SPEED
        self._buf = np.zeros((1, 2))
        self._ptr = 0
        self._renderer = None

    # -- gymnasium API ---------------------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Sample a domain (level and overrides from the constructor, or ``options`` "level"/"domain"), then
        the box, pusher and goal poses, all from ``self.np_random``."""
        super().reset(seed=seed)
        level, overrides = self.level, self._overrides
        if options:
            unknown = set(options) - {"level", "domain"}
            if unknown:
                raise ValueError(f"reset options may hold 'level' and 'domain'; received {sorted(unknown)}")
            level = parse_level(options.get("level", level))
            overrides = {**overrides, **DOMAIN_SPEC.validate(options.get("domain"))}
        rng = self.np_random
        self._apply_domain(DOMAIN_SPEC.sample(level, rng, overrides))
        self._place(rng)
        obs = self._obs()
        return obs, {"success": self._success(), "domain": dict(self._domain_info)}

    def step(self, action):
        a = np.asarray(action)
        if a.shape != (2,):
            raise ValueError(f"Push-v0 action must have shape (2,); received {a.shape}")
        # Plain floats from here on: per-step numpy calls on 2-vectors cost more than the math.
        x, y = a.tolist()
        if not (math.isfinite(x) and math.isfinite(y)):
            raise ValueError(f"Push-v0 action must be finite; received {a}")
        x, y = min(1.0, max(-1.0, x)), min(1.0, max(-1.0, y))
        d = self._data
        if self._buf.shape[0] > 1:
            # Ring buffer of delay + 1 slots: write the new action, apply the oldest one.
            self._buf[self._ptr] = x, y
            self._ptr = (self._ptr + 1) % self._buf.shape[0]
            x, y = self._buf[self._ptr].tolist()
        d.ctrl[:] = x * self._scale, y * self._scale
        mujoco.mj_step(self._model, d, nstep=N_SUBSTEPS)
        obs = self._obs()
        dist = math.hypot(self._bx - self.goal[0], self._by - self.goal[1])
        success = dist < GOAL_TOL
        # A fresh info dict per call: gymnasium requires returned data not to share objects.
        return obs, -dist, success, False, {"success": success, "domain": dict(self._domain_info)}

    def render(self):
        if self.render_mode != "rgb_array":
            return None
        if self._renderer is None:
            from envs.video import make_renderer

            self._renderer = make_renderer(self._model, self._height, self._width)
        self._renderer.update_scene(self._data, camera=self._camera)
        return self._renderer.render()

    def close(self):
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    # -- privileged access (experts, replay, video) ----------------------------------------------------------
    @property
    def box_pos(self) -> np.ndarray:
        return self._data.qpos[_BOX_X:_BOX_Y + 1].copy()

    @property
    def box_yaw(self) -> float:
        return float(self._data.qpos[_BOX_YAW])

    @property
    def pusher_pos(self) -> np.ndarray:
        return self._data.qpos[_PUSH_X:_PUSH_Y + 1].copy()

    @property
    def pending_actions(self) -> np.ndarray:
        """``(action_delay, 2)`` clipped actions already issued but not yet applied, oldest first."""
        n = self._buf.shape[0]
        return self._buf[[(self._ptr + 1 + i) % n for i in range(n - 1)]].copy()

    def get_state(self) -> np.ndarray:
        """``(14,)`` float64: qpos (6), qvel (6), goal xy (2): enough to redraw a frame."""
        return np.concatenate([self._data.qpos, self._data.qvel, self.goal])

    def set_state(self, state: np.ndarray) -> None:
        state = np.asarray(state, dtype=np.float64)
        nq, nv = self._model.nq, self._model.nv
        if state.shape != (nq + nv + 2,):
            raise ValueError(f"Push-v0 state must have shape ({nq + nv + 2},); received {state.shape}")
        self._data.qpos[:] = state[:nq]
        self._data.qvel[:] = state[nq:nq + nv]
        self._set_goal(state[nq + nv:])
        mujoco.mj_forward(self._model, self._data)

    # -- internals -------------------------------------------------------------------------------------------
    def _apply_domain(self, dom: PushDomain) -> None:
        m, a = self._model, dom.box_size
        m.geom_size[self._box_geom] = a
        m.geom_rbound[self._box_geom] = math.sqrt(3.0) * a
        m.geom_aabb[self._box_geom, 3:] = a
        m.body_mass[self._box_body] = dom.box_mass
        m.body_inertia[self._box_body] = dom.box_mass * (2.0 / 3.0) * a * a  # solid cube, side 2a
        m.pair_friction[self._floor_pair, :2] = dom.friction
        mujoco.mj_setConst(m, self._data)  # invweights depend on mass and inertia
        self._scale = dom.actuator_gain * MAX_SPEED
        self._buf = np.zeros((dom.action_delay + 1, 2))
        self._ptr = 0
        self.domain = dom
        self._domain_info = domain_dict(dom)
        if self.observe_domain:
            self._context = DOMAIN_SPEC.normalize(dom)
        self._obs_template = np.concatenate([np.zeros(STATE_DIM, np.float32), self._context])

    def _place(self, rng: np.random.Generator) -> None:
        dom = self.domain
        # Yaw and start side widen quadratically, so level 0 stays close to the nominal layout.
        frac = min(1.0, dom.init_spread / SPREAD_FULL) ** 2
        for _ in range(100):
            box = _disc(rng, dom.init_spread)
            goal = np.asarray(GOAL_NOMINAL) + _disc(rng, dom.goal_spread)
            if np.hypot(*(goal - box)) >= MIN_GOAL_DISTANCE:
                break
        yaw = (math.pi / 4.0) * frac * rng.uniform(-1.0, 1.0)
        side = math.pi + math.pi * frac * rng.uniform(-1.0, 1.0)
        r = math.sqrt(2.0) * dom.box_size + PUSHER_RADIUS + PUSHER_GAP
        d = self._data
        mujoco.mj_resetData(self._model, d)
        d.qpos[[_BOX_X, _BOX_Y, _BOX_Z, _BOX_YAW]] = box[0], box[1], dom.box_size, yaw
        d.qpos[[_PUSH_X, _PUSH_Y]] = box[0] + r * math.cos(side), box[1] + r * math.sin(side)
        self._set_goal(goal)
        mujoco.mj_forward(self._model, d)

    def _set_goal(self, goal) -> None:
        self.goal = np.array(goal, dtype=np.float64)
        self._gx, self._gy = float(self.goal[0]), float(self.goal[1])
        self._model.site_pos[self._goal_site, :2] = self.goal

    def _obs(self) -> np.ndarray:
        q, v = self._data.qpos.tolist(), self._data.qvel.tolist()
        self._bx, self._by = q[_BOX_X], q[_BOX_Y]
        yaw4 = 4.0 * q[_BOX_YAW]
        out = self._obs_template.copy()
        out[:STATE_DIM] = (q[_PUSH_X], q[_PUSH_Y], v[_PUSH_X], v[_PUSH_Y], q[_BOX_X], q[_BOX_Y], math.cos(yaw4),
                           math.sin(yaw4), v[_BOX_X], v[_BOX_Y], self._gx, self._gy)
        if self.domain.obs_noise > 0.0:
            out[:_NOISY] += self.np_random.normal(0.0, self.domain.obs_noise, _NOISY)
        return out

    def _success(self) -> bool:
        q = self._data.qpos
        return math.hypot(q[_BOX_X] - self.goal[0], q[_BOX_Y] - self.goal[1]) < GOAL_TOL


def _disc(rng: np.random.Generator, radius: float) -> np.ndarray:
    """Uniform point in a disc (two draws whatever the radius, so the stream stays aligned)."""
    r = radius * math.sqrt(rng.random())
    t = 2.0 * math.pi * rng.random()
    return np.array([r * math.cos(t), r * math.sin(t)])
