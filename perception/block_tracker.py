"""The ICP block tracker: the planar pose of a rigid block from depth frames, with relocalisation once it is lost.

Each :meth:`BlockTracker.update` segments the frames' object points (:mod:`perception.object_points`) and fits the
block's surface model to them by point-to-plane ICP (``kernels.icp``), starting from the caller's predicted pose
(the digital twin's block) or else the last accepted one. A fit is accepted when at least ``min_fitness`` of the
points match the surface and their RMS distance is at most ``max_rmse``. If no fit was accepted for
``relocalize_after`` s, the block is searched for from scratch: ICP from the points' centroid at
``relocalize_yaws`` yaws, the tightest fit wins. With each fit the tracker reports the block's velocity: the
least-squares slope of the accepted poses of the last ``velocity_window`` s (two fits at least), since the difference
of two noisy fits a frame apart is mostly noise.

The surface model (points and outward normals in the block frame) is given, not computed here: the simulator that
knows the block's geometry builds it (``sim.block_perception.block_surface``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from kernels.icp import icp_point_to_plane
from perception.frames import DepthFrame, Frame, newest_stamp
from perception.object_points import Segmentation, object_points
from perception.protocol import Estimate, Prior


@dataclasses.dataclass(frozen=True)
class BlockTrackerConfig:
    """When a fit is trusted and how a lost block is searched for (units m, s).

    Raises:
        ValueError: a field out of range (the message names it).
    """

    min_fitness: float = 0.3  # ICP inlier fraction below which a fit is not trusted
    max_rmse: float = 0.006  # ICP inlier RMS distance (m) above which a fit is wrong (a misaligned T: ~8 mm)
    max_correspondence: float = 0.03  # m; point pairs farther apart are not ICP correspondences
    relocalize_after: float = 0.2  # s without an accepted fit before the block is searched for from scratch
    relocalize_yaws: int = 24  # starting yaws tried by that search
    min_points: int = 10  # fewer object points than this: no fit is tried
    loss_scale: float = 0.005  # m, the scale of ICP's Huber loss
    max_iterations: int = 20  # ICP iterations per fit
    # s of accepted fits the velocity is fitted over (0: the last two fits). bench.py sync n_episodes=10, twin RMS:
    # 0 -> 4.30 mm / 1.89 deg (worst episode 5.4 mm / 3.7 deg), 0.05 -> 3.77 / 1.25 (4.4 / 1.7), 0.1 -> 4.21 / 1.15
    # (6.2 / 1.5: a longer window lags when a push stops, and the twin extrapolating it overshoots)
    velocity_window: float = 0.05

    def __post_init__(self) -> None:
        if not 0 <= self.min_fitness <= 1:
            raise ValueError(f"BlockTrackerConfig.min_fitness must be in [0, 1], got {self.min_fitness}")
        positive = ("max_rmse", "max_correspondence", "relocalize_after", "relocalize_yaws", "min_points",
                    "loss_scale", "max_iterations")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"BlockTrackerConfig.{name} must be > 0, got {getattr(self, name)}")
        if self.velocity_window < 0:
            raise ValueError(f"BlockTrackerConfig.velocity_window must be >= 0, got {self.velocity_window}")


@dataclasses.dataclass(frozen=True)
class Fit:
    """One ICP fit: the block's planar pose (x, y, theta; m, rad), its inlier fraction and inlier RMS distance (m)."""

    pose: np.ndarray
    fitness: float
    rmse: float


class BlockTracker:
    """Tracks a rigid block's planar pose in depth frames (module docstring); an
    :class:`perception.protocol.Estimator`.

    Args:
        surface_points: (M, 3) points on the block's surface, block frame (m).
        surface_normals: (M, 3) their outward unit normals.
        config: fit acceptance and relocalisation.
        segmentation: which depth points are the block's.

    Raises:
        ValueError: surface points and normals of different or wrong shapes.
    """

    def __init__(self, surface_points: np.ndarray, surface_normals: np.ndarray,
                 config: BlockTrackerConfig | None = None, segmentation: Segmentation | None = None) -> None:
        points, normals = np.asarray(surface_points, dtype=float), np.asarray(surface_normals, dtype=float)
        if points.ndim != 2 or points.shape[1] != 3 or points.shape != normals.shape or not len(points):
            raise ValueError(f"BlockTracker needs (M, 3) surface points and normals of the same shape, got "
                             f"{points.shape} and {normals.shape}")
        self.surface_points, self.surface_normals = points, normals
        self.config = config or BlockTrackerConfig()
        self.segmentation = segmentation or Segmentation()
        self.reset()

    def reset(self) -> None:
        """Forgets the track: the next fit starts from the prior's pose, or searches when there is none."""
        self._velocity = np.zeros(3)  # the block's rate of change over the recent accepted fits
        self._history: list[tuple[float, np.ndarray]] = []  # (capture time, pose) of the recent accepted fits, last newest

    def update(self, frames: Sequence[Frame], prior: Prior) -> Estimate | None:
        """The block's pose in the depth frames among ``frames`` (colour frames are ignored), or None when no fit is
        accepted, there are too few object points, or the frames are no newer than the last accepted fit."""
        depth = [frame for frame in frames if isinstance(frame, DepthFrame)]
        captured = newest_stamp(depth) if depth else prior.time
        if self.seen(captured):
            return None  # the same frames again: already fitted
        return self.track(object_points(depth, self.segmentation, prior.robot_xy), captured, prior)

    @property
    def pose(self) -> np.ndarray | None:
        """The last accepted pose (x, y, theta; m, rad), or None since the last reset."""
        return self._history[-1][1].copy() if self._history else None

    def seen(self, captured: float) -> bool:
        """Whether frames captured at ``captured`` (s) are no newer than the last accepted fit (already fitted)."""
        return bool(self._history) and captured <= self._history[-1][0]

    def track(self, points: np.ndarray, captured: float, prior: Prior) -> Estimate | None:
        """Fits the block to object ``points`` (N, 3) world m, captured at ``captured`` s, and advances the track:
        the estimate (with the velocity over the recent accepted fits), or None when there are fewer than
        ``min_points`` points, no fit is accepted, or the points are no newer than the last accepted fit. The shared
        step of every estimator that turns its sensor into block points (depth here, a reconstruction in
        :mod:`perception.recon_estimator`)."""
        if self.seen(captured):
            return None
        fit = self.locate(points, prior) if len(points) >= self.config.min_points else None
        if fit is None:
            return None
        recent = [(t, pose) for t, pose in self._history if t >= captured - self.config.velocity_window]
        self._history = (recent or self._history[-1:]) + [(captured, fit.pose)]  # the previous fit at least
        if len(self._history) >= 2:
            self._velocity = _pose_slope(self._history)
        return Estimate(fit.pose.copy(), captured, self._velocity.copy(), fit.fitness, fit.rmse)

    def locate(self, points: np.ndarray, prior: Prior) -> Fit | None:
        """The accepted fit of the block to object ``points`` (N, 3), or None: ICP from the prior's pose (else the
        last accepted one); if that fails and the block is lost (no accepted fit for ``relocalize_after`` s, or no
        pose to start from), the tightest of the fits from ``relocalize_yaws`` yaws at the points' centroid."""
        cfg = self.config
        last_time, last_pose = self._history[-1] if self._history else (None, None)
        start = prior.pose if prior.pose is not None else last_pose
        fit = self.fit(points, start, prior.height) if start is not None else None
        lost = start is None or (last_time is not None and prior.time - last_time > cfg.relocalize_after)
        if (fit is None or not self._accepted(fit)) and lost:
            # A misaligned T can match most points loosely (rmse ~8 mm against ~1.5 mm for the right pose): the
            # tightest of the fits wins.
            center = points[:, :2].mean(axis=0)
            fits = [self.fit(points, np.array([center[0], center[1], yaw]), prior.height)
                    for yaw in np.linspace(-np.pi, np.pi, cfg.relocalize_yaws, endpoint=False)]
            fit = min(fits, key=lambda f: f.rmse if f.fitness >= cfg.min_fitness else np.inf)
        return fit if fit is not None and self._accepted(fit) else None

    def fit(self, points: np.ndarray, initial: np.ndarray, height: float) -> Fit:
        """Point-to-plane ICP of ``points`` onto the block surface placed at ``initial`` (x, y, theta) with its
        origin ``height`` m above the table; the fit is returned whether it is accepted or not."""
        rot = _rot3z(initial[2])
        pos = np.array([initial[0], initial[1], height])
        result = icp_point_to_plane(
            points, self.surface_points @ rot.T + pos, self.config.max_correspondence,
            target_normals=self.surface_normals @ rot.T, loss="huber", loss_scale=self.config.loss_scale,
            max_iterations=self.config.max_iterations,
        )
        block = np.linalg.inv(np.asarray(result.transformation)) @ _pose_matrix(pos, rot)
        pose = np.array([block[0, 3], block[1, 3], np.arctan2(block[1, 0], block[0, 0])])
        return Fit(pose, float(result.fitness), float(result.inlier_rmse))

    def _accepted(self, fit: Fit) -> bool:
        return fit.fitness >= self.config.min_fitness and fit.rmse <= self.config.max_rmse


def _wrap_angle(theta: float | np.ndarray) -> float | np.ndarray:
    """Angle(s) wrapped to [-pi, pi)."""
    return (theta + np.pi) % (2 * np.pi) - np.pi


def _pose_slope(history: list[tuple[float, np.ndarray]]) -> np.ndarray:
    """Least-squares rate of change (vx, vy, omega; m/s, rad/s) of >= 2 timed planar poses; angles are unwrapped
    around the newest pose."""
    times = np.array([t for t, _ in history])
    poses = np.array([pose for _, pose in history], dtype=float)
    poses[:, 2] = poses[-1, 2] + _wrap_angle(poses[:, 2] - poses[-1, 2])
    centred = times - times.mean()
    return centred @ (poses - poses.mean(axis=0)) / float(centred @ centred)


def _pose_matrix(pos: np.ndarray, rot: np.ndarray) -> np.ndarray:
    out = np.eye(4)
    out[:3, :3], out[:3, 3] = rot, pos
    return out


def _rot3z(theta: float) -> np.ndarray:
    c, s = np.cos(theta), np.sin(theta)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
