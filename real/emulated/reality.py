"""An emulated reality for tests and demos: its own PushT world, physically different from the twin, in real time.

:class:`EmulatedRealityRobot` is a :class:`Robot` backend, served like hardware by :class:`real.bridge.server.ServerProcess`
(a separate OS process, so nothing it holds is shared with the twin). Compared with the twin's nominal physics
it has

* friction, block mass and arm joint damping scaled by factors drawn from config ranges (seeded);
* actuator delay (a command is applied ``actuator_delay`` s after it arrives) and Gaussian noise on applied targets;
* depth cameras with Gaussian noise (mm) and random missing pixels (value 0, as a real sensor reports no return),
  and with ``color`` RGB images of the same cameras at the same size (for RGB-only correction, ``twin.correction=recon``);
* optionally colour cameras (``color_cameras``: noise-free RGB renders, ``observation.images.<camera>``), rendered
  with the depth frames, for an online monitor (``monitor=streaming``, :mod:`real.modes.monitoring`);
* unmodelled pushes: every ``push_interval`` s (drawn uniformly) a force of ``push_force`` N in a random planar
  direction acts on the block for ``push_duration`` s (1.5 N for 0.1 s moves the block a few cm; much more
  sends it flying).

A background thread steps the physics (the MJCF's 2 ms timestep, 500 Hz) in batches of ``physics_batch`` steps,
keeping simulated time on the wall clock (times ``time_scale``: below 1 is slow motion, for a loaded CPU), and
renders the depth cameras at ``camera_hz`` (the MuJoCo renderer is created in that thread, as EGL contexts must be).
``get_joint_state`` and ``read_sensors`` copy the latest snapshot under a lock, so the bridge's 500 Hz reads cost
microseconds. ``read_sensors`` also returns the block's
true pose under ``truth.block_pose``, for measuring the twin's sync error only: the twin must never use it.

The initial state is the twin's ``env.reset(seed=config.seed)`` (same block and pusher start): start one server
process per episode (the simpler honest option; no reset message crosses the bridge).
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

import mujoco
import numpy as np

from real.connection import requires_connected, requires_disconnected
from real.robot import JOINT_POS, JOINT_TARGET, Robot, RobotConfig, joint_action, joint_features, joint_state
from real.sensors import TRUTH_BLOCK_POSE, SensorReading, calibration_arrays, depth_key, image_key
from sim.disturbance import PushSchedule

log = logging.getLogger(__name__)

BRAKED_SPEED = 1e-3  # rad/s; a holding arm whose joints are all slower than this is at rest
BRAKE_LEAD = 0.03  # s; while braking the servo target is position - BRAKE_LEAD * velocity (extra damping)


def _pair(name: str, value: Any, low: float = 0.0) -> tuple[float, float]:
    pair = tuple(float(v) for v in value)
    if len(pair) != 2 or pair[0] > pair[1] or pair[0] < low:
        raise ValueError(f"EmulatedRealityConfig.{name} must be a (low, high) pair with {low} <= low <= high, got "
                         f"{value!r}")
    return pair


@dataclasses.dataclass
class EmulatedRealityConfig(RobotConfig):
    """How the emulated reality differs from the twin (units m, s, N, rad)."""

    id: str = "emulated_reality"
    seed: int = 0  # the episode: initial state as the twin's env.reset(seed), and every random draw here
    # --- physics (factors on the MJCF's nominal values, drawn once from these ranges) --------------------------
    friction_scale: tuple[float, float] = (0.6, 0.8)  # block/table/pusher sliding friction
    block_mass_scale: tuple[float, float] = (1.2, 1.5)  # block mass and inertia
    joint_damping_scale: tuple[float, float] = (0.8, 1.3)  # arm joint damping
    # --- actuation ------------------------------------------------------------------------------------------------
    actuator_delay: float = 0.01  # s between a command's arrival and its application
    actuator_noise: float = 0.0005  # rad, std of Gaussian noise on each applied joint target
    # --- unmodelled pushes on the block ---------------------------------------------------------------------------
    push_interval: tuple[float, float] = (2.0, 4.0)  # s between pushes (uniform); (0, 0) would push constantly
    push_force: float = 1.5  # N
    push_duration: float = 0.1  # s
    pushes: bool = True  # switch the pushes off
    # --- depth cameras ---------------------------------------------------------------------------------------------
    cameras: tuple[str, ...] = ("side", "overhead")
    depth_size: tuple[int, int] = (96, 96)  # (height, width)
    camera_hz: float = 30.0  # frames per simulated second
    depth_noise_mm: float = 1.0  # std of Gaussian depth noise (mm)
    depth_dropout: float = 0.02  # fraction of pixels missing (0) in each frame
    max_depth: float = 2.0  # m; farther returns (the background) read 0
    color: bool = False  # also render RGB (observation.images.<camera>, uint8, depth_size) of every depth camera
    # --- colour cameras (none by default: rendering costs CPU; monitor=streaming asks for its camera) -------------
    color_cameras: tuple[str, ...] = ()  # RGB frames (noise-free renders) with each depth frame, at color_size
    color_size: tuple[int, int] = (64, 64)  # (height, width)
    # --- real-time loop --------------------------------------------------------------------------------------------
    physics_batch: int = 5  # physics steps per batch (5 x 2 ms = 10 ms)
    # simulated seconds per wall-clock second: 1 is real time; below 1 runs the world in slow motion (a loaded CPU
    # then still keeps up), above 1 fast-forwards. Delays and camera rates above are in simulated time. A twin deployed
    # into it must be paced with the same factor (deploy.time_scale).
    time_scale: float = 1.0
    max_catch_up: float = 0.1  # s; a thread that falls further behind the wall clock skips ahead (logged)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.friction_scale = _pair("friction_scale", self.friction_scale)
        self.block_mass_scale = _pair("block_mass_scale", self.block_mass_scale, 1e-3)
        self.joint_damping_scale = _pair("joint_damping_scale", self.joint_damping_scale)
        self.push_interval = _pair("push_interval", self.push_interval)
        self.cameras = tuple(str(c) for c in self.cameras)
        self.depth_size = tuple(int(v) for v in self.depth_size)
        self.color_cameras = tuple(str(c) for c in self.color_cameras)
        self.color_size = tuple(int(v) for v in self.color_size)
        if len(self.color_size) != 2 or min(self.color_size) < 1:
            raise ValueError(f"EmulatedRealityConfig.color_size must be a (height, width), got {self.color_size}")
        both = sorted(set(self.color_cameras) & set(self.cameras)) if self.color else []
        if both:
            raise ValueError(f"EmulatedRealityConfig: cameras {both} are in color_cameras and, with color=true, also "
                             "rendered in colour at depth_size; one image per camera: drop them from color_cameras")
        if self.actuator_delay < 0 or self.actuator_noise < 0 or self.depth_noise_mm < 0:
            raise ValueError("EmulatedRealityConfig.actuator_delay, actuator_noise and depth_noise_mm must be >= 0")
        if not 0 <= self.depth_dropout < 1:
            raise ValueError(f"EmulatedRealityConfig.depth_dropout must be in [0, 1), got {self.depth_dropout}")
        if self.push_force < 0 or self.push_duration < 0:
            raise ValueError("EmulatedRealityConfig.push_force and push_duration must be >= 0")
        if self.time_scale <= 0:
            raise ValueError(f"EmulatedRealityConfig.time_scale must be > 0, got {self.time_scale}")
        if self.camera_hz <= 0 or self.physics_batch < 1 or len(self.depth_size) != 2 or min(self.depth_size) < 1:
            raise ValueError(f"EmulatedRealityConfig: need camera_hz > 0, physics_batch >= 1 and a (height, width) "
                             f"depth_size, got {self.camera_hz}, {self.physics_batch}, {self.depth_size}")


class EmulatedRealityRobot(Robot):
    """The emulated reality as a robot backend: the PushT Panda tracking joint targets, plus depth cameras.

    Args:
        config: physics differences, noise, pushes and cameras (see :class:`EmulatedRealityConfig`).

    Raises:
        ValueError: a camera the scene does not have (at construction).
        RuntimeError: from ``connect()``, if the physics thread fails to start or to render its first frames.
    """

    name = "emulated_reality"
    config_class = EmulatedRealityConfig

    def __init__(self, config: EmulatedRealityConfig | None = None) -> None:
        from sim.pusht_env import ARM_JOINTS

        cfg = self.checked_config(config if config is not None else EmulatedRealityConfig())
        obs, action = joint_features(ARM_JOINTS)
        height, width = cfg.depth_size
        for camera in cfg.cameras:
            obs[depth_key(camera)] = {"dtype": "float32", "shape": [height, width], "names": ["height", "width"]}
            if cfg.color:
                obs[image_key(camera)] = {"dtype": "uint8", "shape": [height, width, 3],
                                          "names": ["height", "width", "channel"]}
        for camera in cfg.color_cameras:
            obs[image_key(camera)] = {"dtype": "uint8", "shape": [*cfg.color_size, 3],
                                      "names": ["height", "width", "channel"]}
        super().__init__(cfg, obs, action)
        self.config: EmulatedRealityConfig
        self._joint_names = ARM_JOINTS
        self._env = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._lock = threading.Lock()
        self._commands: collections.deque[tuple[float, np.ndarray]] = collections.deque()
        self._braking = False
        self._target = np.zeros(len(ARM_JOINTS))
        self._snapshot: dict[str, np.ndarray] = {}
        self._readings: dict[str, SensorReading] = {}
        self._calibration: dict[str, np.ndarray] = {}
        self.physics_params: dict[str, float] = {}
        self.n_pushes = 0  # pushes applied so far (physics thread)
        self.n_skips = 0  # times the physics thread fell behind the wall clock and skipped ahead

    def _link_alive(self) -> bool:
        """Whether the physics thread runs."""
        return self._thread is not None and self._thread.is_alive()

    @requires_disconnected
    def connect(self) -> None:
        """Build the world at the seeded initial state, start real-time physics, and wait for the first frames."""
        import sim  # noqa: F401  (head-less rendering default, before the renderer's GL context exists)
        from kernels.cameras import camera_intrinsics, world_from_camera_cv
        from sim.pusht_config import DomainRandomizationConfig, PushTConfig
        from sim.pusht_env import PushTEnv

        cfg = self.config
        randomization = DomainRandomizationConfig(friction_scale=cfg.friction_scale,
                                                  block_mass_scale=cfg.block_mass_scale,
                                                  joint_damping_scale=cfg.joint_damping_scale)
        env = PushTEnv(PushTConfig(randomization=randomization))
        for key, cameras in (("cameras", cfg.cameras), ("color_cameras", cfg.color_cameras)):
            for camera in cameras:
                if mujoco.mj_name2id(env.model, mujoco.mjtObj.mjOBJ_CAMERA, camera) < 0:
                    raise ValueError(f"EmulatedRealityConfig.{key}: the scene has no camera {camera!r}")
        env.reset(seed=int(cfg.seed))
        self.physics_params = dict(env.physics_params)
        height, width = cfg.depth_size
        self._calibration = calibration_arrays({c: (camera_intrinsics(env.model, c, height, width),
                                                    world_from_camera_cv(env.model, env.data, c))
                                                for c in cfg.cameras})
        self._env = env
        self._target = env.data.ctrl.copy()
        self._commands.clear()
        self._braking = False
        self._stop.clear()
        self._ready.clear()
        self._error = None
        self._thread = threading.Thread(target=self._run, name="emulated-reality", daemon=True)
        self._thread.start()
        if not self._ready.wait(30.0) or self._error is not None:
            self._stop.set()
            raise RuntimeError(f"emulated reality failed to start: {self._error!r}")
        self._mark_connected()
        log.info("emulated reality (seed %d) running: %s", cfg.seed, self.physics_params)

    @requires_connected
    def disconnect(self) -> None:
        """Stop the physics thread (the arm stays where it is) and release the renderer."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
        self._thread = None
        self._mark_disconnected()

    @requires_connected
    def get_joint_state(self) -> dict[str, np.ndarray]:
        """A copy of the latest joint snapshot (cheap: no physics, no rendering)."""
        with self._lock:
            return {key: value.copy() for key, value in self._snapshot.items()}

    @requires_connected
    def get_observation(self) -> dict[str, np.ndarray]:
        """Joint state and the latest depth frames."""
        with self._lock:
            obs = {key: value.copy() for key, value in self._snapshot.items()}
            for camera in self.config.cameras:
                obs[depth_key(camera)] = self._readings[depth_key(camera)].data.copy()
        return obs

    @requires_connected
    def read_sensors(self) -> dict[str, SensorReading]:
        """The latest depth frames (noisy, with dropouts), colour frames and ``truth.block_pose`` (tests only), with
        capture stamps."""
        with self._lock:
            return dict(self._readings)

    def sensor_calibration(self) -> dict[str, np.ndarray]:
        """Intrinsics and world_from_camera (OpenCV) of every camera at ``depth_size``."""
        return {key: value.copy() for key, value in self._calibration.items()}

    @requires_connected
    def send_action(self, action: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Queue joint targets (rad); they act ``actuator_delay`` s from now. Returns them unchanged."""
        target = joint_action(action, len(self._joint_names))
        with self._lock:
            self._commands.append((time.monotonic() + self.config.actuator_delay / self.config.time_scale, target))
            self._braking = False
            self._target = target.copy()
            self._snapshot[JOINT_TARGET] = target.copy()
        return {JOINT_POS: target}

    @requires_connected
    def hold(self) -> None:
        """Brake now and stay where the arm comes to rest (the robot's local controller: no actuator delay).

        Pending commands are dropped. While braking, the target follows the measured position every physics
        batch (the position servo then acts as a pure damper, so the arm stops without overshoot) until every
        joint is slower than ``BRAKED_SPEED``; the target is then frozen there.
        """
        with self._lock:
            self._commands.clear()
            self._braking = True
            self._target = self._snapshot[JOINT_POS].copy()
            self._snapshot[JOINT_TARGET] = self._target.copy()

    # ------------------------------------------------------------------------------------------- physics thread
    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # reported by connect() or seen as a dead thread (is_connected False)
            self._error = exc
            log.exception("emulated reality physics thread failed")
        finally:
            if self._env is not None:
                self._env.close()
            self._ready.set()

    def _loop(self) -> None:
        cfg, env = self.config, self._env
        model, data = env.model, env.data
        dt = model.opt.timestep
        rng = np.random.default_rng([int(cfg.seed), 7])
        block = model.body("block").id
        arm_qpos, arm_dof = env.arm_qpos_adr, env.arm_dof_adr
        pushes = PushSchedule(rng, cfg.push_interval, cfg.push_force, cfg.push_duration) if cfg.pushes else None
        frame_period = 1.0 / (cfg.camera_hz * cfg.time_scale)  # wall-clock s
        self._publish(env, data, arm_qpos, arm_dof, time.monotonic())
        self._render(env, rng)
        self._ready.set()
        start = time.monotonic()
        sim_origin = data.time
        next_frame = start + frame_period
        while not self._stop.is_set():
            now = time.monotonic()
            behind = (now - start) * cfg.time_scale - (data.time - sim_origin)  # simulated s
            if behind > cfg.max_catch_up:  # starved of CPU: skip ahead rather than run fast-forward
                self.n_skips += 1
                sim_origin += behind
            if behind < 0:
                time.sleep(min(-behind, cfg.physics_batch * dt) / cfg.time_scale)
                continue
            with self._lock:
                braking = self._braking
                while self._commands and self._commands[0][0] <= now:
                    _, q = self._commands.popleft()
                    data.ctrl[:] = q + rng.normal(0.0, cfg.actuator_noise, q.shape) if cfg.actuator_noise else q
            if pushes is not None:
                data.xfrc_applied[block, :2] = pushes.force_at(data.time - sim_origin)
                self.n_pushes = pushes.n_pushes
            if braking:
                self._brake(data, arm_qpos, arm_dof, model)
            else:
                mujoco.mj_step(model, data, nstep=cfg.physics_batch)
            self._publish(env, data, arm_qpos, arm_dof, time.monotonic())
            if time.monotonic() >= next_frame:
                next_frame = max(next_frame + frame_period, time.monotonic())
                self._render(env, rng)

    def _brake(self, data: mujoco.MjData, arm_qpos: np.ndarray, arm_dof: np.ndarray, model: mujoco.MjModel) -> None:
        """One batch of braking, step by step: the target leads the arm backwards by ``BRAKE_LEAD`` s of its own
        velocity, so the position servo adds ``kp * BRAKE_LEAD`` of damping to its ``kv``."""
        for _ in range(self.config.physics_batch):
            data.ctrl[:] = data.qpos[arm_qpos] - BRAKE_LEAD * data.qvel[arm_dof]
            mujoco.mj_step(model, data)
        done = bool(np.abs(data.qvel[arm_dof]).max() < BRAKED_SPEED)
        if done:
            data.ctrl[:] = data.qpos[arm_qpos]
        with self._lock:
            if self._braking:  # a command may have arrived meanwhile: it wins
                self._target = data.qpos[arm_qpos].copy()
                self._braking = not done

    def _publish(self, env: Any, data: mujoco.MjData, arm_qpos: np.ndarray, arm_dof: np.ndarray, stamp: float) -> None:
        """Store the joint snapshot the bridge reads."""
        q, v = data.qpos[arm_qpos].copy(), data.qvel[arm_dof].copy()
        with self._lock:
            self._snapshot = joint_state(q, v, self._target, stamp)

    def _render(self, env: Any, rng: np.random.Generator) -> None:
        """Render every depth camera with noise and dropouts (and RGB with ``color``), every colour camera, and record
        the block's true pose at that instant."""
        cfg = self.config
        stamp = time.monotonic()
        truth = env.block_pose.astype(np.float64)
        readings = {TRUTH_BLOCK_POSE: SensorReading(truth, stamp)}
        for camera in cfg.cameras:
            depth = env.render_camera(camera, cfg.depth_size, depth=True)
            if cfg.depth_noise_mm:
                depth = depth + rng.normal(0.0, cfg.depth_noise_mm * 1e-3, depth.shape).astype(np.float32)
            depth[(depth > cfg.max_depth) | (depth < 0)] = 0.0
            if cfg.depth_dropout:
                depth[rng.random(depth.shape) < cfg.depth_dropout] = 0.0
            readings[depth_key(camera)] = SensorReading(depth.astype(np.float32), stamp)
            if cfg.color:
                readings[image_key(camera)] = SensorReading(env.render_camera(camera, cfg.depth_size), stamp)
        for camera in cfg.color_cameras:
            readings[image_key(camera)] = SensorReading(env.render_camera(camera, cfg.color_size), stamp)
        with self._lock:
            self._readings = readings
