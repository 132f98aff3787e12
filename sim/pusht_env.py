"""PushT in the MuJoCo twin: a Franka Panda pushes a T-block onto a goal; gymnasium API, LeRobot keys."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import asdict
from importlib import resources
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium import spaces

from sim.disturbance import PushSchedule
from sim.ik import DifferentialIK, limit_joint_step
from sim.pusht_config import PushTConfig
from sim.pusht_geometry import TShape, quat_to_yaw, wrap_angle, yaw_to_quat

ARM_JOINTS = tuple(f"joint{i}" for i in range(1, 8))
# A comfortable posture with the pusher pointing down above the table; IK's null space pulls towards it.
NOMINAL_POSTURE = np.array([0.0, 0.1, 0.0, -2.2, 0.0, 2.3, 0.785])
# Pusher pointing straight down (tool z = world -z), tool x along world x.
PUSHER_DOWN = np.array([[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, -1.0]])
TASK = "Push the T-shaped block onto the green T-shaped goal."
# wrapper(inner, n_steps): advances the physics n_steps MuJoCo steps, calling inner(k) for the wrapped advance
PhysicsWrapper = Callable[[Callable[[int], None], int], None]


def _read_only(array: np.ndarray) -> np.ndarray:
    out = np.array(array)
    out.flags.writeable = False
    return out


def scene_path() -> str:
    """Filesystem path of the PushT MJCF scene shipped with the package."""
    return str(resources.files("sim") / "assets" / "pusht.xml")


class PushTEnv(gym.Env):
    """The PushT digital twin as a gymnasium environment (``realsim/PushT-v0``).

    Action (``pusher_xy``): the pusher tip's target ``(x, y)`` in metres, world frame, at ``control_hz``; it is
    clipped to the workspace and to ``max_pusher_step`` per step, then turned into joint targets by differential IK
    (``info["joint_targets"]``, the joints a real robot tracks). ``joint_pos`` mode takes the 7 joint targets (rad).

    Observations (a Dict, keys as LeRobot): ``observation.state`` pusher tip xy (m);
    ``observation.environment_state`` block ``[x, y, cos(theta), sin(theta)]``; optionally
    ``observation.joint_position`` / ``observation.joint_velocity`` (rad, rad/s), ``observation.images.<cam>``
    (HxWx3 uint8) and ``observation.depth.<cam>`` (HxW float32, m).

    Reward and success as gym-pusht: ``coverage`` = area(T and goal) / area(goal); reward = min(coverage /
    threshold, 1); the episode terminates on success (coverage >= threshold) and truncates after
    ``max_episode_steps``. Resets are deterministic in the seed: the same seed gives the same initial state and
    the same randomised physics.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, config: PushTConfig | dict | None = None, render_mode: str | None = "rgb_array", **overrides):
        if isinstance(config, dict):
            config = PushTConfig(**config)
        config = config or PushTConfig()
        if overrides:
            config = PushTConfig(**{**asdict(config), **overrides})
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.config = config
        self.render_mode = render_mode
        self.metadata = {**self.metadata, "render_fps": int(config.control_hz)}

        self.model = self._build_model()
        self.data = mujoco.MjData(self.model)
        self.shape = TShape.from_model(self.model)
        self.ik = DifferentialIK(self.model, "pusher_tip", ARM_JOINTS, posture=NOMINAL_POSTURE)
        self._arm_qpos = _read_only(self.ik.qpos_adr)
        self._arm_dof = _read_only(self.ik.dof_adr)
        self._block_qpos = self.model.jnt_qposadr[self.model.joint("block").id]
        dof = self.model.jnt_dofadr[self.model.joint("block").id]
        self.block_dof = slice(dof, dof + 6)  # the block's free-joint velocities in qvel
        self._block_body = self.model.body("block").id
        self._goal_mocap = self.model.body_mocapid[self.model.body("goal").id]
        self._tip_site = self.model.site("pusher_tip").id
        self._n_substeps = int(round(1.0 / (config.control_hz * self.model.opt.timestep)))
        if self._n_substeps % config.ik_substeps:
            raise ValueError(
                f"env.ik_substeps={config.ik_substeps} must divide the {self._n_substeps} physics steps per control step"
            )
        self._nominal = {
            "geom_friction": self.model.geom_friction.copy(),
            "body_mass": self.model.body_mass.copy(),
            "body_inertia": self.model.body_inertia.copy(),
            "dof_damping": self.model.dof_damping.copy(),
        }
        self._renderers: dict[tuple[int, int], mujoco.Renderer] = {}
        self._goal = np.asarray(config.goal_pose, dtype=float)
        self._pusher_target = np.zeros(2)
        self._joint_targets = NOMINAL_POSTURE.copy()
        self._steps = 0
        self.physics_params: dict[str, float] = {}
        self._pushes: PushSchedule | None = None
        # Physics wrappers (wrap_physics), innermost first, and the advance they compose around mj_step.
        self._physics_wrappers: list[PhysicsWrapper] = []
        self._physics: Callable[[int], None] = self.mj_step

        self.observation_space = self._make_observation_space()
        if config.action_mode == "pusher_xy":
            self.action_space = spaces.Box(
                np.array(config.workspace_low, dtype=np.float32), np.array(config.workspace_high, dtype=np.float32)
            )
        else:
            ranges = self.model.jnt_range[[self.model.joint(j).id for j in ARM_JOINTS]]
            self.action_space = spaces.Box(ranges[:, 0].astype(np.float32), ranges[:, 1].astype(np.float32))

    # Whether the goal is a position only: the block's area centroid must reach ``goal_pose[:2]`` and its angle is
    # free (the expert then ignores ``goal_pose[2]``); PushT's goal is a full planar pose.
    position_goal = False

    def _build_model(self) -> mujoco.MjModel:
        """The MuJoCo model of the scene (PushT's MJCF); subclasses add to the scene here."""
        return mujoco.MjModel.from_xml_path(scene_path())

    # ----------------------------------------------------------------------------------------------- spaces
    def _make_observation_space(self) -> spaces.Dict:
        cfg = self.config
        obs: dict[str, spaces.Space] = {}
        if cfg.state:
            obs["observation.state"] = spaces.Box(-np.inf, np.inf, (2,), np.float32)
        if cfg.environment_state:
            obs["observation.environment_state"] = spaces.Box(-np.inf, np.inf, (4,), np.float32)
        if cfg.joints:
            obs["observation.joint_position"] = spaces.Box(-np.pi * 2, np.pi * 2, (7,), np.float32)
            obs["observation.joint_velocity"] = spaces.Box(-np.inf, np.inf, (7,), np.float32)
        height, width = cfg.image_size
        for cam in cfg.cameras:
            obs[f"observation.images.{cam}"] = spaces.Box(0, 255, (height, width, 3), np.uint8)
            if cfg.depth:
                obs[f"observation.depth.{cam}"] = spaces.Box(0, np.inf, (height, width), np.float32)
        if not obs:
            raise ValueError("env config selects no observation: set env.state, env.environment_state, env.joints or "
                             "env.cameras")
        return spaces.Dict(obs)

    # ------------------------------------------------------------------------------------------------ state
    @property
    def block_pose(self) -> np.ndarray:
        """Planar pose ``(x, y, theta)`` of the block frame (m, rad)."""
        qpos = self.data.qpos[self._block_qpos : self._block_qpos + 7]
        return np.array([qpos[0], qpos[1], quat_to_yaw(qpos[3:7])])

    @property
    def arm_qpos_adr(self) -> np.ndarray:
        """Addresses of the 7 arm joints in ``data.qpos`` (read-only array)."""
        return self._arm_qpos

    @property
    def arm_dof_adr(self) -> np.ndarray:
        """Addresses of the 7 arm joints in ``data.qvel`` / ``data.ctrl``-sized dof arrays (read-only array)."""
        return self._arm_dof

    @property
    def goal_pose(self) -> np.ndarray:
        """Planar goal pose ``(x, y, theta)`` (m, rad)."""
        return self._goal.copy()

    @property
    def pusher_xy(self) -> np.ndarray:
        """Pusher tip position in the table plane (m)."""
        return self.data.site_xpos[self._tip_site, :2].copy()

    def coverage(self, pose: np.ndarray | None = None) -> float:
        """Fraction of the goal covered by the block now, or by a block at planar ``pose`` (x, y, theta; m, rad)."""
        return self.shape.coverage(self.block_pose if pose is None else np.asarray(pose, dtype=float), self._goal)

    # ------------------------------------------------------------------------------------------------ reset
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Starts an episode. ``options`` may pin ``block_pose`` (x, y, theta) and/or ``pusher_xy``."""
        super().reset(seed=seed)
        options = options or {}
        mujoco.mj_resetData(self.model, self.data)
        self._randomize_physics()
        self.data.mocap_pos[self._goal_mocap, :2] = self._goal[:2]
        self.data.mocap_quat[self._goal_mocap] = yaw_to_quat(self._goal[2])

        block = np.asarray(options["block_pose"], float) if "block_pose" in options else self._sample_block_pose()
        self.set_block_pose(block)
        pusher = np.asarray(options["pusher_xy"], float) if "pusher_xy" in options else self._sample_pusher(block)
        q = self.ik.solve(NOMINAL_POSTURE, self._tip_target(pusher), PUSHER_DOWN, iterations=100)
        self.data.qpos[self._arm_qpos] = q
        self.data.ctrl[:] = q
        mujoco.mj_forward(self.model, self.data)
        self._joint_targets = q.copy()
        self._joint_target_velocity = np.zeros_like(q)
        self._pusher_target = self.pusher_xy
        self._steps = 0
        self._pushes = self._push_schedule()
        return self._observation(), self._info()

    def _sample_block_pose(self) -> np.ndarray:
        cfg = self.config
        distance = self.np_random.uniform(*cfg.block_offset_range)
        direction = self.np_random.uniform(-np.pi, np.pi)
        angle = self.np_random.uniform(*cfg.block_angle_range)
        pose = self._goal + np.array([distance * np.cos(direction), distance * np.sin(direction), angle])
        noise = np.array(cfg.randomization.init_pose_noise)
        if noise.any():
            pose += self.np_random.normal(0, [noise[0], noise[0], noise[1]])
        pose[2] = wrap_angle(pose[2])
        return pose

    def _sample_pusher(self, block: np.ndarray) -> np.ndarray:
        """A pusher start in the start box, clear of the block by its radius plus 1 cm."""
        x0, y0, x1, y1 = self.config.pusher_start_box
        clearance = self.model.geom("pusher").size[0] + 0.01
        for _ in range(1000):
            xy = self.np_random.uniform((x0, y0), (x1, y1))
            if not self.shape.contains(self._to_block_frame(xy, block), margin=clearance):
                return xy
        raise RuntimeError("could not place the pusher clear of the block; check env.pusher_start_box")

    @staticmethod
    def _to_block_frame(xy: np.ndarray, block: np.ndarray) -> np.ndarray:
        c, s = np.cos(block[2]), np.sin(block[2])
        d = np.asarray(xy) - block[:2]
        return np.array([c * d[0] + s * d[1], -s * d[0] + c * d[1]])

    def _push_schedule(self) -> PushSchedule | None:
        """The episode's pushes (drawn after the initial state, so they leave it unchanged), or None without them."""
        dr = self.config.randomization
        if dr.push_force <= 0:
            return None
        rng = np.random.default_rng(self.np_random.integers(2**63))
        force = max(rng.normal(dr.push_force, dr.push_force_std), 0.0) if dr.push_force_std > 0 else dr.push_force
        return PushSchedule(rng, dr.push_interval, force, dr.push_duration)

    @property
    def n_pushes(self) -> int:
        """Pushes of the disturbance model so far this episode."""
        return self._pushes.n_pushes if self._pushes is not None else 0

    def set_block_pose(self, pose: np.ndarray) -> None:
        """Puts the block at planar pose (x, y, theta) (m, rad) on the table (velocities untouched); call mj_forward after."""
        adr = self._block_qpos
        half_height = self.model.geom("block_bar").size[2]
        self.data.qpos[adr : adr + 3] = (pose[0], pose[1], half_height)
        self.data.qpos[adr + 3 : adr + 7] = yaw_to_quat(pose[2])

    def _randomize_physics(self) -> None:
        """Restores nominal physics, then scales it by factors drawn from the reset rng (see the DR config)."""
        dr = self.config.randomization
        m, nominal = self.model, self._nominal
        m.geom_friction[:] = nominal["geom_friction"]
        m.body_mass[:] = nominal["body_mass"]
        m.body_inertia[:] = nominal["body_inertia"]
        m.dof_damping[:] = nominal["dof_damping"]
        friction = dr.draw_scale("friction_scale", self.np_random)
        mass = dr.draw_scale("block_mass_scale", self.np_random)
        damping = self.np_random.uniform(*dr.joint_damping_scale)
        for name in ("block_bar", "block_stem", "table", "pusher"):
            m.geom_friction[m.geom(name).id, 0] *= friction
        m.body_mass[self._block_body] *= mass
        m.body_inertia[self._block_body] *= mass
        m.dof_damping[self._arm_dof] *= damping
        self.physics_params = {"friction_scale": friction, "block_mass_scale": mass, "joint_damping_scale": damping}

    # ------------------------------------------------------------------------------------------------- step
    def _tip_target(self, xy: np.ndarray) -> np.ndarray:
        return np.array([xy[0], xy[1], self.config.pusher_height])

    def step(self, action: np.ndarray):
        """Applies one control step (1 / control_hz s of physics). Raises ValueError on a wrong-shaped action."""
        action = np.asarray(action, dtype=float)
        if action.shape != self.action_space.shape:
            raise ValueError(f"action must have shape {self.action_space.shape}, got {action.shape}")
        if not np.all(np.isfinite(action)):
            raise ValueError(f"action must be finite, got {action}")
        n_ik = self.config.ik_substeps
        physics_per_ik = self._n_substeps // n_ik
        if self.config.action_mode == "pusher_xy":
            start = self._pusher_target
            target = np.clip(action, self.config.workspace_low, self.config.workspace_high)
            delta = target - start
            step = np.linalg.norm(delta)
            if step > self.config.max_pusher_step:
                target = start + delta * (self.config.max_pusher_step / step)
            for k in range(1, n_ik + 1):
                waypoint = start + (target - start) * (k / n_ik)
                solution = self.ik.solve(self._joint_targets, self._tip_target(waypoint), PUSHER_DOWN)
                self._joint_targets = self._limit_joint_motion(solution, physics_per_ik * self.model.opt.timestep)
                self.data.ctrl[:] = self._joint_targets
                self._advance(physics_per_ik)
            self._pusher_target = target
        else:
            self._joint_targets = np.clip(action, self.action_space.low, self.action_space.high).astype(float)
            self.data.ctrl[:] = self._joint_targets
            self._advance(self._n_substeps)
            self._pusher_target = self.pusher_xy
        self._steps += 1
        reward, success, info = self._outcome()
        truncated = self._steps >= self.config.max_episode_steps
        return self._observation(), reward, success, truncated, info

    def _outcome(self) -> tuple[float, bool, dict[str, Any]]:
        """Reward, success (which terminates the episode) and info of the current state: coverage-based for PushT."""
        coverage = self.coverage()
        success = coverage >= self.config.success_threshold
        reward = min(coverage / self.config.success_threshold, 1.0)
        return reward, success, self._info(coverage)

    def _limit_joint_motion(self, desired: np.ndarray, dt: float) -> np.ndarray:
        """The next joint target towards ``desired`` after ``dt`` s under the config's velocity and acceleration
        limits: the target's velocity changes by at most ``a dt`` and never exceeds ``sqrt(2 a d)`` at distance ``d``
        (so it can stop at ``desired`` without overshooting)."""
        cfg = self.config
        targets, self._joint_target_velocity = limit_joint_step(
            desired, self._joint_targets, self._joint_target_velocity, dt, cfg.joint_velocity_limit,
            cfg.joint_acceleration_limit)
        return targets

    def _advance(self, n: int) -> None:
        """n physics steps, the disturbance model's push (held for the n steps) on the block."""
        if self._pushes is not None:
            self.data.xfrc_applied[self._block_body, :2] = self._pushes.force_at(self.data.time)
        self.advance_physics(n)

    def advance_physics(self, n_steps: int) -> None:
        """Advances the physics by ``n_steps`` MuJoCo steps through every wrapper (:meth:`wrap_physics`); ``step``
        calls it for each IK substep."""
        self._physics(n_steps)

    def mj_step(self, n_steps: int) -> None:
        """``n_steps`` plain MuJoCo steps with the current controls and applied forces (no wrapper)."""
        mujoco.mj_step(self.model, self.data, nstep=n_steps)

    def wrap_physics(self, wrapper: PhysicsWrapper) -> Callable[[], None]:
        """Wraps the physics advance: from now on ``advance_physics(n)`` calls ``wrapper(inner, n)``, where
        ``inner(k)`` is the advance as it was before (ultimately :meth:`mj_step`). The wrapper decides when and how
        often to call ``inner`` (the twin interleaves correction wrenches with it, a deployment paces it to the wall
        clock, a kinematic baseline never calls it). The last wrapped is the outermost.

        Returns:
            ``unwrap()``, which removes this wrapper again (the others keep their order).
        """
        self._physics_wrappers.append(wrapper)
        self._compose_physics()

        def unwrap() -> None:
            if wrapper in self._physics_wrappers:
                self._physics_wrappers.remove(wrapper)
                self._compose_physics()

        return unwrap

    def _compose_physics(self) -> None:
        physics: Callable[[int], None] = self.mj_step
        for wrapper in self._physics_wrappers:
            physics = functools.partial(wrapper, physics)
        self._physics = physics

    # ------------------------------------------------------------------------------------------ observation
    def observe(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """The observation and info of the current state, without stepping (as ``reset`` and ``step`` return them)."""
        return self._observation(), self._info()

    def _observation(self) -> dict[str, np.ndarray]:
        cfg = self.config
        obs: dict[str, np.ndarray] = {}
        if cfg.state:
            obs["observation.state"] = self.pusher_xy.astype(np.float32)
        if cfg.environment_state:
            x, y, theta = self.block_pose
            obs["observation.environment_state"] = np.array([x, y, np.cos(theta), np.sin(theta)], np.float32)
        if cfg.joints:
            obs["observation.joint_position"] = self.data.qpos[self._arm_qpos].astype(np.float32)
            obs["observation.joint_velocity"] = self.data.qvel[self._arm_dof].astype(np.float32)
        for cam in cfg.cameras:
            obs[f"observation.images.{cam}"] = self.render_camera(cam, cfg.image_size)
            if cfg.depth:
                obs[f"observation.depth.{cam}"] = self.render_camera(cam, cfg.image_size, depth=True)
        return obs

    def _info(self, coverage: float | None = None) -> dict[str, Any]:
        coverage = self.coverage() if coverage is None else coverage
        return {
            "coverage": coverage,
            "is_success": coverage >= self.config.success_threshold,
            "block_pose": self.block_pose,
            "goal_pose": self.goal_pose,
            "pusher_xy": self.pusher_xy,
            "joint_targets": self._joint_targets.copy(),
            "task": TASK,
        }

    def render_camera(self, camera: str, size: tuple[int, int], depth: bool = False) -> np.ndarray:
        """Image from a named camera: HxWx3 uint8 RGB, or HxW float32 depth (m) when ``depth``.

        Raises:
            KeyError: if the camera does not exist in the scene.
        """
        self.model.camera(camera)  # raises KeyError naming the camera
        key = (int(size[0]), int(size[1]))
        if key not in self._renderers:
            self._renderers[key] = mujoco.Renderer(self.model, height=key[0], width=key[1])
        renderer = self._renderers[key]
        if depth:
            renderer.enable_depth_rendering()
        renderer.update_scene(self.data, camera=camera)
        image = renderer.render()
        if depth:
            renderer.disable_depth_rendering()
            return image.astype(np.float32)
        return image

    def render(self) -> np.ndarray | None:
        """RGB frame of ``render_camera`` at ``render_size`` (for videos), or None without a render mode."""
        if self.render_mode is None:
            return None
        return self.render_camera(self.config.render_camera, self.config.render_size)

    def close(self) -> None:
        """Releases the renderers' GL contexts."""
        for renderer in self._renderers.values():
            renderer.close()
        self._renderers.clear()
