"""The Real-is-Sim digital twin: the PushT simulation kept in sync with measurements of the real world.

The policy only ever acts on the twin. Every correction tick the twin ingests the latest measurements and is pulled
towards them (DESIGN.md section 6):

* objects: depth frames from calibrated cameras become world points; points on the table, on the robot or outside
  the object's height band are dropped, and the rest pull the twin's block through spring-damper wrenches on the
  nearest block surface points (``kernels.CorrectionForces``, the depth analogue of Real-is-Sim's visual forces),
  applied in the following physics steps through ``xfrc_applied``;
* robot: in ``collect`` mode the twin's arm follows the measured joints of the real robot (teleoperation), in
  ``deploy`` mode the twin's arm is driven by the policy and the real robot tracks the twin's joint targets; the
  robot is never corrected by vision.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import mujoco
import numpy as np

from kernels.cameras import camera_intrinsics, world_from_camera_cv
from kernels.forces import CorrectionForces
from kernels.icp import icp_point_to_plane
from kernels.pointcloud import depth_to_points
from sim.pusht_config import DomainRandomizationConfig, PushTConfig
from sim.pusht_env import PushTEnv
from sim.pusht_geometry import BLOCK_GEOMS, wrap_angle

TWIN_MODES = ("collect", "deploy", "evaluate")
MAX_ANGLE_ERROR = 0.5  # rad; pose mode pulls no harder on the block's yaw than for this error
RELOCALIZE_AFTER = 0.2  # s of twin time without an accepted fit before the block is searched for from scratch
RELOCALIZE_YAWS = 24  # initial yaws tried by that search
TELEPORT_LIFT = 0.01  # m; a twin block this far above or below its resting height has left the table
CORRECTIONS = ("pose", "forces", "none")
MAX_FOLLOW_LEAD = 0.05  # s; collect mode carries measured joints forward at most this long (a stalled feed: the arm stops)


@dataclass
class TwinConfig:
    """How the twin is kept in sync (units m, s, N)."""

    mode: str = "deploy"  # collect | deploy | evaluate
    # pose: point-to-plane ICP (kernels) estimates the real block pose from the depth points, and a critically
    #       damped spring-damper wrench pulls the twin's block towards it (extrapolated with its velocity);
    # forces: each depth point pulls on the nearest block surface point (kernels.CorrectionForces), the depth
    #       analogue of Real-is-Sim's visual forces; none: open loop.
    correction: str = "pose"
    gain: float = 3000.0  # forces mode: spring stiffness (N/m), averaged over the attracting points
    damping: float = 40.0  # forces mode: dashpot on the block surface velocity (N s/m)
    cutoff: float = 0.06  # observed points farther than this from the block are ignored (m)
    bandwidth: float = 80.0  # pose mode: natural frequency of the critically damped pull (rad/s)
    min_fitness: float = 0.3  # pose mode: ICP inlier fraction below which a measurement is not trusted
    max_rmse: float = 0.006  # pose mode: ICP inlier RMS distance (m) above which a fit is wrong (a misaligned T: ~8 mm)
    rate_hz: float = 50.0  # measurements ingested per second of simulated time
    force_substeps: int = 1  # physics steps between re-evaluations of the correction wrench
    planar: bool = True  # keep only the force in the table plane and the torque about z (PushT's free motions)
    cameras: tuple[str, ...] = ("side", "overhead")  # calibrated depth cameras
    depth_size: tuple[int, int] = (64, 64)  # (height, width) of the depth frames
    height_band: tuple[float, float] = (0.004, 0.045)  # object points lie between these heights above the table (m)
    pusher_clearance: float = 0.006  # points this close to the pusher's surface belong to the robot (m)
    device: str = "cpu"  # Warp device of the correction kernels

    def __post_init__(self) -> None:
        if self.mode not in TWIN_MODES:
            raise ValueError(f"twin.mode must be one of {TWIN_MODES}, got {self.mode!r}")
        if self.correction not in CORRECTIONS:
            raise ValueError(f"twin.correction must be one of {CORRECTIONS}, got {self.correction!r}")
        if self.gain <= 0 or self.cutoff <= 0 or self.rate_hz <= 0 or self.damping < 0:
            raise ValueError("twin.gain, twin.cutoff and twin.rate_hz must be > 0 and twin.damping >= 0")
        if not self.cameras:
            raise ValueError("twin.cameras must name at least one depth camera")


@dataclass
class DepthFrame:
    """One calibrated depth measurement: (H, W) float32 metres along the optical axis (0 = missing)."""

    camera: str
    depth: np.ndarray
    intrinsics: np.ndarray  # 3x3 pinhole, pixels
    world_from_camera: np.ndarray  # 4x4, OpenCV axes (x right, y down, z forward)
    timestamp: float = 0.0  # s


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

    Raises:
        ValueError: bad config, a camera the scene does not have, or a twin that follows reality (collect, deploy)
            on an env with a disturbance model (its pushes would fight the corrections; see :func:`following_env`).
    """

    def __init__(self, env: PushTEnv, config: TwinConfig | None = None) -> None:
        self.env = env
        self.config = config or TwinConfig()
        if self.config.mode != "evaluate" and env.config.randomization.push_force > 0:
            raise ValueError(f"twin.mode={self.config.mode!r} follows reality, which supplies the disturbances: build "
                             f"its env without randomization pushes (sim.twin.following_env)")
        for camera in self.config.cameras:
            if mujoco.mj_name2id(env.model, mujoco.mjtObj.mjOBJ_CAMERA, camera) < 0:
                raise ValueError(f"twin.cameras: the scene has no camera {camera!r}")
        self._forces: CorrectionForces | None = None
        self._points = np.zeros((0, 3), np.float32)
        self._measure: Callable[[], list[DepthFrame]] | None = None
        self._sim_time_of: Callable[[float], float] | None = None
        self._next_measurement = 0.0
        self.measurements = 0  # measurements ingested so far
        self._target: np.ndarray | None = None  # pose mode: last measured block pose (x, y, theta)
        self._target_time = 0.0  # simulated time of that measurement (s)
        self._target_velocity = np.zeros(3)  # its rate of change between the last two measurements
        self._surface_points, self._surface_normals = block_surface(env.model, spacing=0.004)
        self._block = env.model.body("block").id
        self._rest_height = float(env.model.geom("block_bar").size[2])  # body origin height when resting on the table
        self.teleports = 0  # times pose mode put a diverged block back at the measurement
        self._pusher_radius = float(env.model.geom("pusher").size[0])
        self._follow: tuple[np.ndarray, np.ndarray, float] | None = None  # collect mode: measured q, qdot, twin time

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
    def camera_calibration(self, camera: str) -> tuple[np.ndarray, np.ndarray]:
        """Intrinsics (3x3) and world_from_camera (4x4, OpenCV) of a static scene camera at ``depth_size``."""
        height, width = self.config.depth_size
        return camera_intrinsics(self.env.model, camera, height, width), world_from_camera_cv(
            self.env.model, self.env.data, camera
        )

    def object_points(self, frames: list[DepthFrame]) -> np.ndarray:
        """World points (N, 3) of the object seen in ``frames``: table, robot and out-of-band points removed."""
        clouds = []
        for frame in frames:
            depth = np.asarray(frame.depth, dtype=np.float32)
            if not np.any(depth > 0):
                continue
            clouds.append(
                np.asarray(depth_to_points(depth, frame.intrinsics, world_from_camera=frame.world_from_camera).points)
            )
        if not clouds:
            return np.zeros((0, 3), np.float32)
        points = np.concatenate(clouds)
        low, high = self.config.height_band
        keep = (points[:, 2] > low) & (points[:, 2] < high)
        pusher = self.env.pusher_xy
        keep &= np.linalg.norm(points[:, :2] - pusher, axis=1) > self._pusher_radius + self.config.pusher_clearance
        return points[keep]

    # ----------------------------------------------------------------------------------------- correction
    def ingest(self, frames: list[DepthFrame]) -> int:
        """Takes the latest depth frames; the correction pulls the block towards them until the next ones.

        Returns the number of object points that survived segmentation.
        """
        self.measurements += 1
        correction = self.config.correction
        if correction == "none":
            return 0
        points = self.object_points(frames)
        if correction == "forces":
            self._points = points
        else:
            self._track_block(points, self._capture_time(frames))
        return len(points)

    def measure_block_pose(self, frames: list[DepthFrame]) -> np.ndarray | None:
        """The block pose (x, y, theta) measured in ``frames`` alone, by the same tracking as pose correction (ICP
        from the last accepted pose, a search from scratch once the block is lost) but applied to nothing: the raw
        baseline's estimate. None when no fit is accepted (or the frames were already fitted)."""
        return self._track_block(self.object_points(frames), self._capture_time(frames))

    def _track_block(self, points: np.ndarray, captured: float) -> np.ndarray | None:
        """Fits the block to ``points`` captured at twin time ``captured``; an accepted fit becomes the pose target
        (with the velocity since the previous one) and is returned, else None."""
        if self._sim_time_of is not None and self._target is not None and captured <= self._target_time:
            return None  # the same frames again: already fitted
        estimate = self.estimate_block_pose(points) if len(points) >= 10 else None
        if estimate is not None:
            if self._target is not None and captured > self._target_time:
                elapsed = captured - self._target_time
                self._target_velocity = (estimate - self._target) / elapsed
                self._target_velocity[2] = wrap_angle(estimate[2] - self._target[2]) / elapsed
            self._target, self._target_time = estimate, captured
        return estimate

    def _capture_time(self, frames: list[DepthFrame]) -> float:
        """Twin time (s) at which the newest of ``frames`` was captured: mapped from its timestamp by the clock
        given to :meth:`attach`, else the twin's current time (no latency compensation)."""
        if self._sim_time_of is None or not frames:
            return float(self.env.data.time)
        return float(self._sim_time_of(max(frame.timestamp for frame in frames)))

    def estimate_block_pose(self, points: np.ndarray) -> np.ndarray | None:
        """Planar pose (x, y, theta) of the real block from its depth points, by point-to-plane ICP against the
        block's surface placed at the twin's block pose; None when the fit is poor (fewer than ``min_fitness`` of
        the points match, or their RMS distance exceeds ``max_rmse``). If no fit was accepted for
        ``RELOCALIZE_AFTER`` s (the twin lost the block), the block is searched for from scratch: ICP from the points'
        centroid at ``RELOCALIZE_YAWS`` yaws, the tightest fit wins."""
        cfg = self.config
        pose, fitness, rmse = self._fit(points, self.env.block_pose)
        lost = self._target is not None and self.env.data.time - self._target_time > RELOCALIZE_AFTER
        if (fitness < cfg.min_fitness or rmse > cfg.max_rmse) and lost:
            # A misaligned T can match most points loosely (rmse ~8 mm against ~1.5 mm for the right pose): the
            # tightest of the fits from RELOCALIZE_YAWS starting yaws wins.
            center = points[:, :2].mean(axis=0)
            fits = [self._fit(points, np.array([center[0], center[1], yaw]))
                    for yaw in np.linspace(-np.pi, np.pi, RELOCALIZE_YAWS, endpoint=False)]
            pose, fitness, rmse = min(fits, key=lambda fit: fit[2] if fit[1] >= cfg.min_fitness else np.inf)
        return pose if fitness >= cfg.min_fitness and rmse <= cfg.max_rmse else None

    def _fit(self, points: np.ndarray, initial: np.ndarray) -> tuple[np.ndarray, float, float]:
        """Point-to-plane ICP of ``points`` onto the block surface placed at ``initial`` (x, y, theta); returns the
        fitted pose, its fitness and its inlier RMS distance (m)."""
        rot = _rot3z(initial[2])
        pos = np.array([initial[0], initial[1], self.env.data.xpos[self._block, 2]])
        fit = icp_point_to_plane(
            points, self._surface_points @ rot.T + pos, self.config.cutoff / 2, target_normals=self._surface_normals @ rot.T,
            loss="huber", loss_scale=0.005, max_iterations=20,
        )
        real = np.linalg.inv(np.asarray(fit.transformation)) @ _pose_matrix(pos, rot)
        pose = np.array([real[0, 3], real[1, 3], np.arctan2(real[1, 0], real[0, 0])])
        return pose, float(fit.fitness), float(fit.inlier_rmse)

    def apply_correction(self) -> np.ndarray:
        """Sets the block's ``xfrc_applied`` from the latest measurement and the twin's current state; returns it."""
        data = self.env.data
        wrench = np.zeros(6)
        if self.config.correction == "forces" and len(self._points):
            wrench = self.forces.wrench_from_data(data, self._points)[self._block]
        elif self.config.correction == "pose" and self._target is not None:
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
        target = self._target + self._target_velocity * lead
        omega = self.config.bandwidth
        mass = env.model.body_mass[self._block]
        inertia = env.model.body_inertia[self._block][2]
        pose = env.block_pose
        velocity = np.zeros(6)
        mujoco.mj_objectVelocity(env.model, data, mujoco.mjtObj.mjOBJ_BODY, self._block, velocity, 0)
        # xfrc_applied acts at the centre of mass: pull the COM towards where the target pose puts it.
        com_offset = data.xipos[self._block, :2] - pose[:2]
        com_target = target[:2] + _rot2(target[2] - pose[2]) @ com_offset
        relative_velocity = velocity[[3, 4, 2]] - self._target_velocity  # (vx, vy, wz) minus the target's
        # Errors are capped (the cutoff and MAX_ANGLE_ERROR) so that a wrong fit pulls no harder than a far one: the
        # block can lag a bad measurement but is never launched by it.
        cutoff = self.config.cutoff
        error = np.clip(com_target - data.xipos[self._block, :2], -cutoff, cutoff)
        angle = float(np.clip(wrap_angle(target[2] - pose[2]), -MAX_ANGLE_ERROR, MAX_ANGLE_ERROR))
        slip = np.clip(relative_velocity, -cutoff * omega, cutoff * omega)
        force = mass * (omega**2 * error - 2 * omega * slip[:2])
        torque = inertia * (omega**2 * angle - 2 * omega * slip[2])
        return np.array([force[0], force[1], 0.0, 0.0, 0.0, torque])

    def attach(self, measure: Callable[[], list[DepthFrame]],
               sim_time_of: Callable[[float], float] | None = None) -> None:
        """Drives the correction from ``measure`` (the latest frames) inside every physics advance of the env.

        Measurements are taken at ``rate_hz`` of simulated time; the wrench is re-evaluated every
        ``force_substeps`` physics steps against the twin's current pose (a wrench held for a whole measurement
        period would make a stiff spring unstable). ``sim_time_of(timestamp)`` maps a frame's capture timestamp to
        twin time; with it, pose mode extrapolates each measurement from when it was captured rather than from when
        it arrived, which removes the camera-to-twin latency from the sync error.
        """
        self._measure = measure
        self._sim_time_of = sim_time_of
        self.env.advance_physics = self._advance

    def _advance(self, n_steps: int) -> None:
        model, data = self.env.model, self.env.data
        period = 1.0 / self.config.rate_hz
        k = self.config.force_substeps
        for start in range(0, n_steps, k):
            if self._measure is not None and data.time >= self._next_measurement - 1e-9:
                self.ingest(self._measure())
                self._next_measurement = data.time + period
            self.apply_correction()
            if self._follow is None:
                mujoco.mj_step(model, data, nstep=min(k, n_steps - start))
                continue
            for _ in range(min(k, n_steps - start)):
                self._drive_arm()
                mujoco.mj_step(model, data)

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
        q = np.asarray(joint_positions, dtype=float)
        if q.shape != (7,):
            raise ValueError(f"joint_positions must have shape (7,), got {q.shape}")
        qd = np.zeros(7) if joint_velocities is None else np.asarray(joint_velocities, dtype=float)
        if qd.shape != (7,):
            raise ValueError(f"joint_velocities must have shape (7,), got {qd.shape}")
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
        data.qpos[env._arm_qpos] = target
        data.qvel[env._arm_dof] = qd if lead < MAX_FOLLOW_LEAD else 0.0
        data.ctrl[:] = target

    def observation(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """The env's observation and info of the twin's current state, without stepping (collect mode records it)."""
        return self.env._observation(), self.env._info()

    def step_physics(self, duration: float) -> None:
        """Advances the twin's physics by ``duration`` s with its controls, correcting as it goes."""
        self._advance(max(1, int(round(duration / self.env.model.opt.timestep))))


def block_surface(model: mujoco.MjModel, spacing: float) -> tuple[np.ndarray, np.ndarray]:
    """Points about ``spacing`` m apart on the faces of the block's boxes, with outward normals (block frame)."""
    points, normals = [], []
    for name in BLOCK_GEOMS:
        geom = model.geom(name)
        center, half = geom.pos.copy(), geom.size.copy()
        for axis in range(3):
            u, v = [a for a in range(3) if a != axis]
            nu, nv = (max(2, round(2 * half[a] / spacing) + 1) for a in (u, v))
            grid = np.stack(np.meshgrid(np.linspace(-half[u], half[u], nu), np.linspace(-half[v], half[v], nv)), -1)
            for side in (-1.0, 1.0):
                face = np.zeros((grid.shape[0] * grid.shape[1], 3))
                face[:, u], face[:, v] = grid[..., 0].ravel(), grid[..., 1].ravel()
                face[:, axis] = side * half[axis]
                normal = np.zeros(3)
                normal[axis] = side
                points.append(face + center)
                normals.append(np.repeat(normal[None], len(face), 0))
    points, normals = np.concatenate(points), np.concatenate(normals)
    # Drop faces shared by the two boxes (inside the T) and the duplicates on box edges.
    boxes = [(model.geom(name).pos, model.geom(name).size) for name in BLOCK_GEOMS]
    probe = points + 1e-3 * normals
    inside = np.zeros(len(points), dtype=bool)
    for center, half in boxes:
        inside |= np.all(np.abs(probe - center) < half, axis=1)
    points, normals = points[~inside], normals[~inside]
    _, keep = np.unique(np.round(points / (spacing / 4)), axis=0, return_index=True)
    return points[np.sort(keep)], normals[np.sort(keep)]


def _pose_matrix(pos: np.ndarray, rot: np.ndarray) -> np.ndarray:
    out = np.eye(4)
    out[:3, :3], out[:3, 3] = rot, pos
    return out


def _rot3z(theta: float) -> np.ndarray:
    c, s = np.cos(theta), np.sin(theta)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _rot2(theta: float) -> np.ndarray:
    return np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
