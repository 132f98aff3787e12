"""The Real-is-Sim digital twin: the PushT simulation kept in sync with measurements of the real world.

The policy only ever acts on the twin. Every correction tick the twin ingests the latest measurements and is pulled
towards them (DESIGN.md section 6):

* objects: an estimator (:class:`perception.protocol.Estimator`; by default the depth ICP tracker of
  :func:`sim.block_perception.depth_block_tracker`) measures the real block's pose in the frames, and a critically
  damped wrench pulls the twin's block towards it (``pose`` mode); or the depth frames' object points
  (:mod:`perception.object_points`) pull the twin's block through spring-damper wrenches on the nearest block surface
  points (``kernels.CorrectionForces``, the depth analogue of Real-is-Sim's visual forces; ``forces`` mode); the
  wrench is applied in the following physics steps through ``xfrc_applied``;
* robot: in ``collect`` mode the twin's arm follows the measured joints of the real robot (teleoperation), in
  ``deploy`` mode the twin's arm is driven by the policy and the real robot tracks the twin's joint targets; the
  robot is never corrected by vision.

The twin hooks into its env's physics through ``PushTEnv.wrap_physics`` (:meth:`DigitalTwin.attach`); perception
(segmentation, ICP, relocalisation) lives in ``perception/``; this module only turns its answers into physics.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import mujoco
import numpy as np

from kernels.cameras import camera_intrinsics, world_from_camera_cv
from kernels.forces import CorrectionForces
from perception.frames import CameraModel, DepthFrame, Frame, restamped
from perception.object_points import object_points
from perception.protocol import Estimate, Estimator, Prior
from sim.block_perception import default_estimator, segmentation
from sim.pusht_config import DomainRandomizationConfig, PushTConfig
from sim.pusht_env import PushTEnv
from sim.pusht_geometry import wrap_angle

TWIN_MODES = ("collect", "deploy", "evaluate")
MAX_ANGLE_ERROR = 0.5  # rad; pose mode pulls no harder on the block's yaw than for this error
TELEPORT_LIFT = 0.01  # m; a twin block this far above or below its resting height has left the table
CORRECTIONS = ("pose", "forces", "recon", "none")
ESTIMATOR_CORRECTIONS = ("pose", "recon")  # corrections that pull the block towards an estimator's pose
MAX_FOLLOW_LEAD = 0.05  # s; collect mode carries measured joints forward at most this long (a stalled feed: the arm stops)


@dataclass
class TwinConfig:
    """How the twin is kept in sync (units m, s, N)."""

    mode: str = "deploy"  # collect | deploy | evaluate
    # pose: point-to-plane ICP (kernels) estimates the real block pose from the depth points, and a critically
    #       damped spring-damper wrench pulls the twin's block towards it (extrapolated with its velocity);
    # forces: each depth point pulls on the nearest block surface point (kernels.CorrectionForces), the depth
    #       analogue of Real-is-Sim's visual forces;
    # recon: as pose, but the pose comes from RGB cameras only: a reconstruction model's points (twin.recon_model)
    #       registered by the same ICP (perception.recon_estimator); none: open loop.
    correction: str = "pose"
    gain: float = 3000.0  # forces mode: spring stiffness (N/m), averaged over the attracting points
    damping: float = 40.0  # forces mode: dashpot on the block surface velocity (N s/m)
    cutoff: float = 0.06  # observed points farther than this from the block are ignored (m)
    bandwidth: float = 80.0  # pose mode: natural frequency of the critically damped pull (rad/s)
    min_fitness: float = 0.3  # pose mode: ICP inlier fraction below which a measurement is not trusted
    max_rmse: float = 0.006  # pose mode: ICP inlier RMS distance (m) above which a fit is wrong (a misaligned T: ~8 mm)
    rate_hz: float = 50.0  # measurements ingested per second of simulated time
    # pose mode: a measurement the twin's pusher is not driving is carried forward (over the camera's latency) as a
    # slide to rest under the twin's table friction, not at constant velocity: an unmodelled push ends unseen for a
    # latency, and at constant velocity the twin ran on past where the real block had stopped (bench.py sync)
    free_slide: bool = True
    force_substeps: int = 1  # physics steps between re-evaluations of the correction wrench
    planar: bool = True  # keep only the force in the table plane and the torque about z (PushT's free motions)
    cameras: tuple[str, ...] = ("side", "overhead")  # calibrated depth cameras
    depth_size: tuple[int, int] = (64, 64)  # (height, width) of the depth frames
    height_band: tuple[float, float] = (0.004, 0.045)  # object points lie between these heights above the table (m)
    pusher_clearance: float = 0.006  # points this close to the pusher's surface belong to the robot (m)
    device: str = "cpu"  # Warp device of the correction kernels
    # recon mode: the reconstruction model (perception.recon.load_recon directory, e.g. a train_recon.py checkpoint)
    recon_model: str = ""
    recon_min_opacity: float = 0.5  # reconstructed points below this opacity are not the block's
    recon_query_scale: int = 1  # the model is read at the input cameras at this many times their resolution

    def __post_init__(self) -> None:
        if self.mode not in TWIN_MODES:
            raise ValueError(f"twin.mode must be one of {TWIN_MODES}, got {self.mode!r}")
        if self.correction not in CORRECTIONS:
            raise ValueError(f"twin.correction must be one of {CORRECTIONS}, got {self.correction!r}")
        if self.gain <= 0 or self.cutoff <= 0 or self.rate_hz <= 0 or self.damping < 0:
            raise ValueError("twin.gain, twin.cutoff and twin.rate_hz must be > 0 and twin.damping >= 0")
        if not self.cameras:
            raise ValueError("twin.cameras must name at least one depth camera")
        if not 0 <= self.recon_min_opacity <= 1 or self.recon_query_scale < 1:
            raise ValueError(f"twin.recon_min_opacity must be in [0, 1] and twin.recon_query_scale >= 1, got "
                             f"{self.recon_min_opacity} and {self.recon_query_scale}")


def following_env(config: PushTConfig | dict) -> PushTEnv:
    """The env of a twin that follows reality (collect and deploy modes): ``config`` with nominal physics and no
    disturbance model, since reality supplies both (the randomisation is for training and offline evaluation)."""
    config = PushTConfig(**config) if isinstance(config, dict) else config
    return PushTEnv(replace(config, randomization=DomainRandomizationConfig()))


class DigitalTwin:
    """A PushT twin that ingests measurements and corrects itself; the policy acts on ``twin.env``.

    Args:
        env: the twin's simulation (its own physics: nominal parameters, never the real ones).
        config: correction gains, rate and cameras.
        estimator: measures the real block's pose for ``pose`` / ``recon`` correction and :meth:`measure_block_pose`;
            default :func:`sim.block_perception.default_estimator`: ICP on depth, or with ``correction=recon`` the
            reconstruction model ``recon_model`` on RGB (built from ``env``'s block and ``config``).
            Any :class:`perception.protocol.Estimator` (an RGB reconstruction, a streaming video model) plugs in here.

    Raises:
        ValueError: bad config, a camera the scene does not have, ``correction=recon`` without ``recon_model``, or a
            twin that follows reality (collect, deploy) on an env with a disturbance model (its pushes would fight
            the corrections; see :func:`following_env`).
        TypeError: an ``estimator`` without ``reset()`` and ``update()``.
    """

    def __init__(self, env: PushTEnv, config: TwinConfig | None = None, estimator: Estimator | None = None) -> None:
        self.env = env
        self.config = config or TwinConfig()
        if self.config.mode != "evaluate" and env.config.randomization.push_force > 0:
            raise ValueError(f"twin.mode={self.config.mode!r} follows reality, which supplies the disturbances: build "
                             f"its env without randomization pushes (sim.twin.following_env)")
        for camera in self.config.cameras:
            if mujoco.mj_name2id(env.model, mujoco.mjtObj.mjOBJ_CAMERA, camera) < 0:
                raise ValueError(f"twin.cameras: the scene has no camera {camera!r}")
        if estimator is not None and not isinstance(estimator, Estimator):
            raise TypeError(f"DigitalTwin's estimator must implement perception.protocol.Estimator, got {estimator!r}")
        self.estimator: Estimator = estimator if estimator is not None else default_estimator(env, self.config)
        self._segmentation = segmentation(env, self.config)  # forces mode: which depth points pull on the block
        self._forces: CorrectionForces | None = None
        self._points = np.zeros((0, 3), np.float32)
        self._measure: Callable[[], list[Frame]] | None = None
        self._sim_time_of: Callable[[float], float] | None = None
        self._unwrap: Callable[[], None] | None = None
        self._next_measurement = 0.0
        self.measurements = 0  # measurements ingested so far
        self._target: np.ndarray | None = None  # pose mode: last measured block pose (x, y, theta)
        self._target_time = 0.0  # simulated time of that measurement (s)
        self._target_velocity = np.zeros(3)  # its rate of change between the last two measurements
        self._block = env.model.body("block").id
        self._rest_height = float(env.model.geom("block_bar").size[2])  # body origin height when resting on the table
        self.teleports = 0  # times pose mode put a diverged block back at the measurement
        self._follow: tuple[np.ndarray, np.ndarray, float] | None = None  # collect mode: measured q, qdot, twin time
        self.tally = CorrectionTally()  # the wrench applied and the pusher contact since the last take (episode logs)
        self._pusher_geom = env.model.geom("pusher").id
        self._block_geoms = {env.model.geom(name).id for name in ("block_bar", "block_stem")}
        self._slide_geoms = np.array([env.model.geom("block_bar").id, env.model.geom("table").id])

    @property
    def forces(self) -> CorrectionForces:
        """The Warp correction kernel (built on first use: compiling it is not free)."""
        if self._forces is None:
            cfg = self.config
            self._forces = CorrectionForces(
                self.env.model, ["block"], gain=cfg.gain, cutoff=cfg.cutoff, damping=cfg.damping, average=True,
                device=cfg.device,
            )
        return self._forces

    # ------------------------------------------------------------------------------------------- sensing
    def camera_calibration(self, camera: str) -> CameraModel:
        """Intrinsics (3x3) and world_from_camera (4x4, OpenCV) of a static scene camera at ``depth_size``."""
        height, width = self.config.depth_size
        return CameraModel(camera_intrinsics(self.env.model, camera, height, width),
                           world_from_camera_cv(self.env.model, self.env.data, camera))

    def prior(self) -> Prior:
        """What the twin knows for an estimator now: its time, its block's pose and height, where its pusher is."""
        env = self.env
        return Prior(time=float(env.data.time), pose=env.block_pose, height=float(env.data.xpos[self._block, 2]),
                     robot_xy=env.pusher_xy)

    def _on_twin_clock(self, frames: list[Frame]) -> list[Frame]:
        """``frames`` stamped with their capture time in twin time: mapped by the clock given to :meth:`attach`, else
        the twin's current time (no latency compensation)."""
        if self._sim_time_of is None:
            now = float(self.env.data.time)
            return restamped(frames, lambda _: now)
        return restamped(frames, self._sim_time_of)

    # ----------------------------------------------------------------------------------------- correction
    def ingest(self, frames: list[Frame]) -> int:
        """Takes the latest frames; the correction pulls the block towards them until the next ones.

        Returns the number of object points that survived segmentation (forces mode), or whether the estimator
        accepted a pose (1 or 0; pose mode).
        """
        self.measurements += 1
        correction = self.config.correction
        if correction == "none":
            return 0
        if correction == "forces":
            depth = [frame for frame in frames if isinstance(frame, DepthFrame)]
            self._points = object_points(depth, self._segmentation, self.env.pusher_xy)
            return len(self._points)
        estimate = self.estimator.update(self._on_twin_clock(frames), self.prior())
        if estimate is not None:
            self._set_target(estimate)
        return int(estimate is not None)

    @property
    def measured_pose(self) -> np.ndarray | None:
        """The latest accepted measurement of the block pose (x, y, theta; m, rad), or None before any (pose mode)."""
        return None if self._target is None else self._target.copy()

    @property
    def measured_time(self) -> float | None:
        """The capture time (s, twin clock) of :attr:`measured_pose`, or None before any."""
        return None if self._target is None else self._target_time

    def pusher_in_contact(self) -> bool:
        """Whether the twin's pusher touches its block now."""
        data = self.env.data
        for i in range(data.ncon):
            pair = {int(data.contact[i].geom1), int(data.contact[i].geom2)}
            if self._pusher_geom in pair and pair & self._block_geoms:
                return True
        return False

    def measure_block_pose(self, frames: list[Frame]) -> np.ndarray | None:
        """The block pose (x, y, theta) measured in ``frames`` alone by the twin's estimator (the same tracking as pose
        correction: from the twin's block, searched for afresh once lost) but applied to nothing: the raw baseline's
        estimate. None when no fit is accepted (or the frames were already fitted)."""
        estimate = self.estimator.update(self._on_twin_clock(frames), self.prior())
        return None if estimate is None else estimate.pose

    def _set_target(self, estimate: Estimate) -> None:
        """Pose mode: the estimate becomes the pose the block is pulled towards (with its velocity, if known)."""
        self._target, self._target_time = np.asarray(estimate.pose, dtype=float), float(estimate.time)
        if estimate.velocity is not None:
            self._target_velocity = np.asarray(estimate.velocity, dtype=float)

    def apply_correction(self) -> np.ndarray:
        """Sets the block's ``xfrc_applied`` from the latest measurement and the twin's current state; returns it."""
        data = self.env.data
        wrench = np.zeros(6)
        if self.config.correction == "forces" and len(self._points):
            wrench = self.forces.wrench_from_data(data, self._points)[self._block]
        elif self.config.correction in ESTIMATOR_CORRECTIONS and self._target is not None:
            if self._diverged():
                self._teleport_to_target()
            wrench = self._pose_wrench()
        if self.config.planar:  # the table carries the block: correct only x, y and yaw
            wrench[[2, 3, 4]] = 0.0
        data.xfrc_applied[self._block] = wrench
        return wrench.copy()

    def _diverged(self) -> bool:
        """Whether the twin's block is off the table or farther than ``cutoff`` from a fresh measurement: physics
        (a violent contact) took it where no pull brings it back in time."""
        env = self.env
        lifted = abs(env.data.xpos[self._block, 2] - self._rest_height) > TELEPORT_LIFT
        fresh = env.data.time - self._target_time <= 2.0 / self.config.rate_hz
        return lifted or (fresh and np.linalg.norm(env.block_pose[:2] - self._target[:2]) > self.config.cutoff)

    def _teleport_to_target(self) -> None:
        """Puts the twin's block at the latest measured pose, at rest (counted in ``teleports``)."""
        env = self.env
        env.set_block_pose(self._target)
        env.data.qvel[env.block_dof] = 0.0
        mujoco.mj_forward(env.model, env.data)
        self.teleports += 1

    def _pose_wrench(self) -> np.ndarray:
        """Critically damped pull of the block (centre of mass) towards the extrapolated measured pose."""
        env, data = self.env, self.env.data
        # Extrapolate at most two measurement periods: past that the measurement is stale (fits failed, frames
        # dropped) and its velocity no longer says where the block is.
        lead = float(np.clip(data.time - self._target_time, -2.0 / self.config.rate_hz, 2.0 / self.config.rate_hz))
        target, target_velocity = self._carried_forward(lead)
        omega = self.config.bandwidth
        mass = env.model.body_mass[self._block]
        inertia = env.model.body_inertia[self._block][2]
        pose = env.block_pose
        velocity = np.zeros(6)
        mujoco.mj_objectVelocity(env.model, data, mujoco.mjtObj.mjOBJ_BODY, self._block, velocity, 0)
        # xfrc_applied acts at the centre of mass: pull the COM towards where the target pose puts it.
        com_offset = data.xipos[self._block, :2] - pose[:2]
        com_target = target[:2] + _rot2(target[2] - pose[2]) @ com_offset
        relative_velocity = velocity[[3, 4, 2]] - target_velocity  # (vx, vy, wz) minus the target's
        # Errors are capped (the cutoff and MAX_ANGLE_ERROR) so that a wrong fit pulls no harder than a far one: the
        # block can lag a bad measurement but is never launched by it.
        cutoff = self.config.cutoff
        error = np.clip(com_target - data.xipos[self._block, :2], -cutoff, cutoff)
        angle = float(np.clip(wrap_angle(target[2] - pose[2]), -MAX_ANGLE_ERROR, MAX_ANGLE_ERROR))
        slip = np.clip(relative_velocity, -cutoff * omega, cutoff * omega)
        force = mass * (omega**2 * error - 2 * omega * slip[:2])
        torque = inertia * (omega**2 * angle - 2 * omega * slip[2])
        return np.array([force[0], force[1], 0.0, 0.0, 0.0, torque])

    def _carried_forward(self, lead: float) -> tuple[np.ndarray, np.ndarray]:
        """The measured pose (x, y, theta) and velocity carried ``lead`` s forward: at constant velocity while the
        twin's pusher touches the block (it drives it), else (``free_slide``) sliding to rest at the deceleration of
        the twin's block-table friction, the angle slowing in proportion."""
        velocity = self._target_velocity
        speed = float(np.hypot(velocity[0], velocity[1]))
        if not self.config.free_slide or lead <= 0 or speed == 0 or self.pusher_in_contact():
            return self._target + velocity * lead, velocity
        model = self.env.model  # MuJoCo's contact friction is the larger of the two geoms' (read now: randomised)
        deceleration = float(model.geom_friction[self._slide_geoms, 0].max() * -model.opt.gravity[2])
        slide_time = min(lead, speed / deceleration)
        travelled = slide_time - 0.5 * deceleration * slide_time**2 / speed  # distance / speed (s)
        return self._target + velocity * travelled, velocity * (1.0 - deceleration * slide_time / speed)

    def attach(self, measure: Callable[[], list[Frame]], sim_time_of: Callable[[float], float] | None = None) -> None:
        """Drives the correction from ``measure`` (the latest frames) inside every physics advance of the env: the twin
        wraps the env's physics (``PushTEnv.wrap_physics``) until :meth:`detach`. Attaching again replaces the feed.

        Measurements are taken at ``rate_hz`` of simulated time; the wrench is re-evaluated every
        ``force_substeps`` physics steps against the twin's current pose (a wrench held for a whole measurement
        period would make a stiff spring unstable). ``sim_time_of(timestamp)`` maps a frame's capture timestamp to
        twin time; with it, pose mode extrapolates each measurement from when it was captured rather than from when
        it arrived, which removes the camera-to-twin latency from the sync error.
        """
        self.detach()
        self._measure = measure
        self._sim_time_of = sim_time_of
        self._unwrap = self.env.wrap_physics(self._advance)

    def detach(self) -> None:
        """Stops correcting inside the env's physics advance (a no-op when not attached)."""
        if self._unwrap is not None:
            self._unwrap()
            self._unwrap = None
        self._measure = None

    def _advance(self, inner: Callable[[int], None], n_steps: int) -> None:
        """The physics wrapper: ``n_steps`` steps of ``inner`` (the env's plain physics), measuring at ``rate_hz``,
        re-evaluating the correction wrench every ``force_substeps`` steps and, in collect mode, driving the arm at
        the measured joints before every step."""
        data = self.env.data
        period = 1.0 / self.config.rate_hz
        k = self.config.force_substeps
        for start in range(0, n_steps, k):
            if self._measure is not None and data.time >= self._next_measurement - 1e-9:
                self.ingest(self._measure())
                self._next_measurement = data.time + period
            wrench = self.apply_correction()
            n = min(k, n_steps - start)
            if self._follow is None:
                inner(n)
            else:
                for _ in range(n):
                    self._drive_arm()
                    inner(1)
            self.tally.add(wrench, n, self.pusher_in_contact())

    def follow_joints(self, joint_positions: np.ndarray, joint_velocities: np.ndarray | None = None,
                      measured_at: float | None = None) -> None:
        """Collect mode: puts the twin's arm at the measured joints of the real robot (rad).

        Without ``joint_velocities`` the arm holds there. With them (rad/s), the arm moves on kinematically at that
        velocity inside every physics step, from ``measured_at`` (twin time of the measurement, s; default now) for
        at most ``MAX_FOLLOW_LEAD`` s, as the real arm does between two measurements: the twin's block meets a
        moving pusher rather than one that jumps at every measurement.

        Raises:
            ValueError: a wrong shape (the message names it).
        """
        n_joints = (len(self.env.arm_qpos_adr),)
        q = np.asarray(joint_positions, dtype=float)
        if q.shape != n_joints:
            raise ValueError(f"joint_positions must have shape {n_joints} (the twin's arm joints), got {q.shape}")
        qd = np.zeros(n_joints) if joint_velocities is None else np.asarray(joint_velocities, dtype=float)
        if qd.shape != n_joints:
            raise ValueError(f"joint_velocities must have shape {n_joints} (the twin's arm joints), got {qd.shape}")
        self._follow = (q.copy(), qd.copy(), float(self.env.data.time if measured_at is None else measured_at))
        self._drive_arm()
        if joint_velocities is None:
            self._follow = None  # hold: the arm's servos keep it at q
        mujoco.mj_forward(self.env.model, self.env.data)

    def _drive_arm(self) -> None:
        """Collect mode: the arm at the measured joints carried forward to the twin's time at their velocity."""
        q, qd, measured_at = self._follow
        env, data = self.env, self.env.data
        lead = min(max(data.time - measured_at, 0.0), MAX_FOLLOW_LEAD)
        target = np.clip(q + qd * lead, env.ik.lower, env.ik.upper)
        data.qpos[env.arm_qpos_adr] = target
        data.qvel[env.arm_dof_adr] = qd if lead < MAX_FOLLOW_LEAD else 0.0
        data.ctrl[:] = target

    def observation(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """The env's observation and info of the twin's current state, without stepping (collect mode records it)."""
        return self.env.observe()

    def step_physics(self, duration: float) -> None:
        """Advances the twin's physics by ``duration`` s with its controls, correcting as it goes (measuring too when
        attached); the env's other physics wrappers (a deployment's pacing) are not involved."""
        self._advance(self.env.mj_step, max(1, int(round(duration / self.env.model.opt.timestep))))


class CorrectionTally:
    """Accumulates the correction wrench applied to the block (planar: fx, fy in N, tz in N m) over physics steps and
    whether the pusher touched the block, between two :meth:`take` calls (one per control step in episode logs)."""

    def __init__(self) -> None:
        self._sum, self._steps, self._contact = np.zeros(3), 0, False

    def add(self, wrench: np.ndarray, n_steps: int, contact: bool) -> None:
        """Adds ``wrench`` (6-vector of ``xfrc_applied``) held for ``n_steps`` physics steps, and the contact flag."""
        self._sum += np.asarray(wrench)[[0, 1, 5]] * n_steps
        self._steps += n_steps
        self._contact = self._contact or bool(contact)

    def take(self) -> tuple[np.ndarray, bool]:
        """The mean wrench (fx, fy, tz) over the steps since the last take, and whether the pusher touched the block
        meanwhile; then starts afresh."""
        mean = self._sum / max(self._steps, 1)
        contact = self._contact
        self.__init__()
        return mean, contact


def _rot2(theta: float) -> np.ndarray:
    return np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
