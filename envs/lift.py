"""``simdiff/Lift-v0``: robosuite's Panda Lift under our domain randomization (needs ``simdiff[robot]``).

World
    robosuite 1.5 ``Lift`` with a Panda arm driven by an operational-space controller (``OSC_POSE``, delta
    inputs in the robot base frame) at 20 Hz, 25 physics steps of 2 ms each. The env is built once and
    soft-reset (robosuite's hard reset rebuilds the model, ~0.15 s); every domain parameter is written into
    the compiled model / controller at each reset instead. robosuite is imported when the env is made, so
    ``import envs`` works without it.

Action (float32, [-1, 1]^7)
    ``dx, dy, dz`` (x 5 cm), ``drx, dry, drz`` (axis-angle, x 0.5 rad), gripper (-1 open, +1 close),
    applied after ``action_delay`` control steps.

Observation (float32, flat; ``env.unwrapped.obs_layout``)
    ``state`` (20): eef position (3) and quaternion xyzw (4), finger joints (2), cube position (3) and
    quaternion xyzw (4), cube minus eef (3) [all with Gaussian noise of std ``obs_noise``], goal height
    (world z the cube center must exceed, 1, exact). ``context`` (10, when ``observe_domain``): normalized
    domain.

Reward and termination
    Reward ``-(|eef - cube| + max(0, goal_z - cube_z))`` (meters). Success when the cube center rises
    ``goal_height`` above its resting height; the episode then terminates. Truncated at 120 steps (6 s).
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import sys
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from envs.domains import DomainSpec, domain_dict, param, parse_level

CONTROL_FREQ = 20
MAX_EPISODE_STEPS = 120
KP_NOMINAL = 150.0
POS_SCALE = 0.05  # m per unit action (robosuite OSC output_max)
ROT_SCALE = 0.5  # rad per unit action
SPREAD_FULL = 0.1  # init_spread at which the cube yaw is fully random
JOINT_NOISE = 0.05  # rad of robot joint noise at full spread
FINGER_FRICTION = 0.05  # fingers take the cube's friction (MuJoCo uses the max of the pair)
INSTALL_HINT = "simdiff/Lift-v0 needs robosuite: pip install simdiff[robot]"

STATE_NAMES = ("eef_x", "eef_y", "eef_z", "eef_qx", "eef_qy", "eef_qz", "eef_qw", "finger_1", "finger_2",
               "cube_x", "cube_y", "cube_z", "cube_qx", "cube_qy", "cube_qz", "cube_qw", "cube_rel_x",
               "cube_rel_y", "cube_rel_z", "goal_z")
STATE_DIM = len(STATE_NAMES)
_OBS_KEYS = ("robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos", "cube_pos", "cube_quat",
             "gripper_to_cube_pos")


@dataclass(frozen=True)
class LiftDomain:
    """Physical and task parameters of one Lift-v0 domain (fields default to nominal)."""

    cube_mass: float = param(0.1, [(0.09, 0.11), (0.07, 0.15), (0.05, 0.25), (0.03, 0.4)], [(0.4, 0.7)],
                             (0.005, 5.0), unit="kg", doc="cube mass")
    cube_friction: float = param(1.0, [(0.9, 1.1), (0.7, 1.2), (0.5, 1.4), (0.35, 1.6)], [(0.2, 0.35)],
                                 (0.05, 5.0), doc="sliding friction of the cube (against the fingers)")
    cube_size: float = param(0.021, [(0.02, 0.022), (0.018, 0.025), (0.016, 0.028), (0.014, 0.032)],
                             [(0.01, 0.014), (0.032, 0.036)], (0.008, 0.038), unit="m", doc="cube half extent")
    table_friction: float = param(1.0, [(0.9, 1.1), (0.7, 1.3), (0.5, 1.6), (0.3, 2.0)],
                                  [(0.1, 0.3), (2.0, 3.0)], (0.0, 5.0), doc="table sliding friction (cube-table)")
    kp_scale: float = param(1.0, [(0.95, 1.05), (0.8, 1.25), (0.65, 1.5), (0.5, 1.8)],
                            [(0.3, 0.5), (1.8, 2.0)], (0.05, 2.0), doc="OSC stiffness / 150 (actuation gain)")
    damping_ratio: float = param(1.0, [(0.95, 1.05), (0.8, 1.2), (0.6, 1.5), (0.5, 2.0)],
                                 [(0.3, 0.5), (2.0, 3.0)], (0.05, 10.0), doc="OSC damping ratio")
    init_spread: float = param(0.0, [(0.0, 0.01), (0.0, 0.03), (0.0, 0.06), (0.0, 0.1)], [(0.1, 0.14)],
                               (0.0, 0.25), unit="m",
                               doc="radius of the cube start disc; also widens cube yaw and robot joint noise "
                                   "as (init_spread / 0.1)^2")
    goal_height: float = param(0.04, [(0.035, 0.045), (0.03, 0.06), (0.03, 0.08), (0.03, 0.1)],
                               [(0.1, 0.14)], (0.005, 0.3), unit="m",
                               doc="lift above the resting height that counts as success")
    obs_noise: float = param(0.0, [(0.0, 0.0005), (0.0, 0.002), (0.0, 0.004), (0.0, 0.006)],
                             [(0.006, 0.012)], (0.0, 0.1), doc="std of Gaussian noise on the state entries")
    action_delay: int = param(0, [(0, 0), (0, 1), (0, 2), (0, 3)], [(4, 6)], (0, 20), integer=True,
                              unit="steps", doc="control steps between an action and its effect")


DOMAIN_SPEC = DomainSpec(LiftDomain)


def import_robosuite():
    """Import robosuite quietly, or raise an ImportError naming the extra to install."""
    try:
        # robosuite warns at import about optional models and macro files: noise for our use. Its console
        # handler is created during the import, so point it back at the real stderr afterwards.
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            import robosuite
            from robosuite.controllers import load_composite_controller_config
    except ImportError as exc:
        raise ImportError(f"{INSTALL_HINT} ({exc})") from exc
    logger = logging.getLogger("robosuite_logs")
    logger.setLevel(logging.ERROR)
    for h in logger.handlers:
        if isinstance(h, logging.StreamHandler) and isinstance(h.stream, io.StringIO):
            h.setStream(sys.stderr)
    return robosuite, load_composite_controller_config


class LiftEnv(gym.Env):
    """Domain-randomized robosuite Lift. See the module docstring for spaces, reward and domain."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": CONTROL_FREQ}

    def __init__(self, level: int | str | None = 0, domain: dict[str, Any] | None = None,
                 observe_domain: bool = True, render_mode: str | None = None, width: int = 320,
                 height: int = 240, camera: str = "frontview"):
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array'; received {render_mode!r}")
        self.level = parse_level(level)
        self.domain_spec = DOMAIN_SPEC
        self._overrides = DOMAIN_SPEC.validate(domain)
        self.observe_domain = bool(observe_domain)
        self.render_mode = render_mode
        self._width, self._height, self._camera = int(width), int(height), camera

        self._rs = make_robosuite_lift()
        self._sim = self._rs.sim
        m = self._sim.model
        self._cube_body = self._rs.cube_body_id
        self._cube_geoms = [m.geom_name2id(n) for n in ("cube_g0", "cube_g0_vis")]
        self._table_geom = m.geom_name2id("table_collision")
        self._finger_geoms = [i for i in range(m.ngeom)
                              if (m.geom_id2name(i) or "").startswith("gripper0_right_finger")]
        self._grip_site = m.site_name2id("gripper0_right_grip_site")
        self._cube_joint = self._rs.cube.joints[0]
        self._robot = self._rs.robots[0]
        self._init_qpos = np.array(self._robot.init_qpos, dtype=np.float64)
        self.table_z = float(self._rs.model.mujoco_arena.table_offset[2])
        # Table contacts use the table's friction (priority), finger contacts the cube's (max of the pair).
        m._model.geom_priority[self._table_geom] = 1
        for g in self._finger_geoms:
            m._model.geom_friction[g, 0] = FINGER_FRICTION

        ctx_dim = len(DOMAIN_SPEC) if self.observe_domain else 0
        self.state_names = STATE_NAMES
        self.context_names = DOMAIN_SPEC.names if self.observe_domain else ()
        self.obs_layout = {"state": slice(0, STATE_DIM)}
        if self.observe_domain:
            self.obs_layout["context"] = slice(STATE_DIM, STATE_DIM + ctx_dim)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (STATE_DIM + ctx_dim,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (7,), np.float32)

        self.domain: LiftDomain = DOMAIN_SPEC.nominal()
        self._domain_info = domain_dict(self.domain)
        self._context = np.zeros(ctx_dim, dtype=np.float32)
        self.goal_z = self.table_z + self.domain.cube_size + self.domain.goal_height
        self._buf = np.zeros((1, 7))
        self._ptr = 0
        self._rs_obs: dict[str, np.ndarray] = {}
        self._renderer = None

    # -- gymnasium API ---------------------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        level, overrides = self.level, self._overrides
        if options:
            unknown = set(options) - {"level", "domain"}
            if unknown:
                raise ValueError(f"reset options may hold 'level' and 'domain'; received {sorted(unknown)}")
            level = parse_level(options.get("level", level))
            overrides = {**overrides, **DOMAIN_SPEC.validate(options.get("domain"))}
        rng = self.np_random
        dom = DOMAIN_SPEC.sample(level, rng, overrides)
        self._apply_model(dom)
        frac = min(1.0, dom.init_spread / SPREAD_FULL) ** 2
        self._robot.init_qpos = self._init_qpos + JOINT_NOISE * frac * rng.uniform(-1, 1, self._init_qpos.shape)
        self._rs.reset()  # soft reset: robosuite rebuilds controllers and places the cube; we override below
        self._apply_controller(dom)
        r = dom.init_spread * math.sqrt(rng.random())
        t = 2.0 * math.pi * rng.random()
        yaw = (math.pi / 4.0) * frac * rng.uniform(-1.0, 1.0)
        pos = [r * math.cos(t), r * math.sin(t), self.table_z + dom.cube_size]
        quat = [math.cos(yaw / 2.0), 0.0, 0.0, math.sin(yaw / 2.0)]  # wxyz
        self._sim.data.set_joint_qpos(self._cube_joint, np.concatenate([pos, quat]))
        self._sim.forward()
        self._rs_obs = self._rs._get_observations(force_update=True)
        return self._obs(), {"success": self._success(), "domain": dict(self._domain_info)}

    def step(self, action):
        a = np.asarray(action, dtype=np.float64)
        if a.shape != (7,):
            raise ValueError(f"Lift-v0 action must have shape (7,); received {a.shape}")
        if not np.isfinite(a).all():
            raise ValueError(f"Lift-v0 action must be finite; received {a}")
        self._buf[self._ptr] = np.clip(a, -1.0, 1.0)
        self._ptr = (self._ptr + 1) % self._buf.shape[0]
        self._rs_obs, _, _, _ = self._rs.step(self._buf[self._ptr].copy())
        success = self._success()
        eef, cube = self._rs_obs["robot0_eef_pos"], self._rs_obs["cube_pos"]
        reward = -(float(np.linalg.norm(eef - cube)) + max(0.0, self.goal_z - float(cube[2])))
        return self._obs(), reward, success, False, {"success": success, "domain": dict(self._domain_info)}

    def render(self):
        if self.render_mode != "rgb_array":
            return None
        if self._renderer is None:
            from envs.video import make_renderer

            self._renderer = make_renderer(self._sim.model._model, self._height, self._width)
        self._renderer.update_scene(self._sim.data._data, camera=self._camera)
        return self._renderer.render()

    def close(self):
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    # -- privileged access (experts, replay, video) ----------------------------------------------------------
    @property
    def cube_pos(self) -> np.ndarray:
        return self._sim.data.body_xpos[self._cube_body].copy()

    @property
    def cube_yaw(self) -> float:
        w, x, y, z = self._sim.data.body_xquat[self._cube_body]
        return math.atan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))

    @property
    def eef_pos(self) -> np.ndarray:
        return self._sim.data.site_xpos[self._grip_site].copy()

    @property
    def eef_yaw(self) -> float:
        r = self._sim.data.site_xmat[self._grip_site].reshape(3, 3)
        return math.atan2(r[1, 0], r[0, 0])

    @property
    def eef_approach(self) -> np.ndarray:
        """Unit vector (world) along which the gripper points; (0, 0, -1) when pointing straight down."""
        r = self._sim.data.site_xmat[self._grip_site].reshape(3, 3)
        return r[:, 2].copy()

    @property
    def eef_velocity(self) -> np.ndarray:
        """``(6,)`` world-frame gripper velocity: angular (3) then linear (3)."""
        import mujoco

        out = np.zeros(6)
        mujoco.mj_objectVelocity(self._sim.model._model, self._sim.data._data, mujoco.mjtObj.mjOBJ_SITE,
                                 self._grip_site, out, 0)
        return out

    @property
    def gripper_width(self) -> float:
        q = self._rs_obs["robot0_gripper_qpos"]
        return float(q[0] - q[1])

    @property
    def pending_actions(self) -> np.ndarray:
        """``(action_delay, 7)`` clipped actions already issued but not yet applied, oldest first."""
        n = self._buf.shape[0]
        return self._buf[[(self._ptr + 1 + i) % n for i in range(n - 1)]].copy()

    def get_state(self) -> np.ndarray:
        """MuJoCo state flattened as robosuite does: ``(1 + nq + nv,)`` time, qpos, qvel."""
        return np.asarray(self._sim.get_state().flatten(), dtype=np.float64)

    def set_state(self, state: np.ndarray) -> None:
        state = np.asarray(state, dtype=np.float64)
        m = self._sim.model
        if state.shape != (1 + m.nq + m.nv,):
            raise ValueError(f"Lift-v0 state must have shape ({1 + m.nq + m.nv},); received {state.shape}")
        self._sim.set_state_from_flattened(state)
        self._sim.forward()

    # -- internals -------------------------------------------------------------------------------------------
    def _apply_model(self, dom: LiftDomain) -> None:
        import mujoco

        m = self._sim.model._model
        a = dom.cube_size
        for g in self._cube_geoms:
            m.geom_size[g] = a
            m.geom_rbound[g] = math.sqrt(3.0) * a
            m.geom_aabb[g, 3:] = a
        m.geom_friction[self._cube_geoms[0], 0] = dom.cube_friction
        m.geom_friction[self._table_geom, 0] = dom.table_friction
        m.body_mass[self._cube_body] = dom.cube_mass
        m.body_inertia[self._cube_body] = dom.cube_mass * (2.0 / 3.0) * a * a
        mujoco.mj_setConst(m, self._sim.data._data)
        self._buf = np.zeros((dom.action_delay + 1, 7))
        self._ptr = 0
        self.domain = dom
        self._domain_info = domain_dict(dom)
        self.goal_z = self.table_z + a + dom.goal_height
        if self.observe_domain:
            self._context = DOMAIN_SPEC.normalize(dom)

    def _apply_controller(self, dom: LiftDomain) -> None:
        # robosuite re-creates its controllers at every reset, so gains are set after it.
        ctrl = self._robot.part_controllers["right"]
        ctrl.kp = np.full_like(ctrl.kp, KP_NOMINAL * dom.kp_scale)
        ctrl.kd = 2.0 * np.sqrt(ctrl.kp) * dom.damping_ratio

    def _obs(self) -> np.ndarray:
        o = self._rs_obs
        s = np.concatenate([o[k] for k in _OBS_KEYS] + [[self.goal_z]])
        if self.domain.obs_noise > 0.0:
            s[:-1] += self.np_random.normal(0.0, self.domain.obs_noise, STATE_DIM - 1)
        if self.observe_domain:
            return np.concatenate((s.astype(np.float32), self._context))
        return s.astype(np.float32)

    def _success(self) -> bool:
        return bool(self._sim.data.body_xpos[self._cube_body][2] > self.goal_z)


def make_robosuite_lift(**overrides: Any):
    """The plain robosuite Lift used under Lift-v0 (Panda, OSC_POSE, 20 Hz, soft resets, no cameras)."""
    suite, load_config = import_robosuite()
    cfg = load_config(controller="BASIC", robot="Panda")
    kwargs = dict(robots="Panda", controller_configs=cfg, has_renderer=False, has_offscreen_renderer=False,
                  use_camera_obs=False, use_object_obs=True, control_freq=CONTROL_FREQ, horizon=10**9,
                  ignore_done=True, hard_reset=False, initialization_noise=None, reward_shaping=False)
    kwargs.update(overrides)
    with contextlib.redirect_stdout(io.StringIO()):
        return suite.make("Lift", **kwargs)
