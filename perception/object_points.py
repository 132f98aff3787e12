"""Depth frames -> the world points of the object on the table: the table, the robot and everything outside the
object's height band removed.

Inputs are plain arrays and numbers (no env, no simulator): the caller says where the robot's tool is (from its
joints) and how far around it points belong to the robot.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from kernels.pointcloud import depth_to_points
from perception.frames import DepthFrame


@dataclasses.dataclass(frozen=True)
class Segmentation:
    """Which depth points belong to the object (units m).

    Raises:
        ValueError: an empty or inverted height band, or a negative robot radius (the message names the field).
    """

    # object points lie strictly between these heights above the table (the table itself is at 0 and is dropped)
    height_band: tuple[float, float] = (0.004, 0.045)
    # points within this planar distance of the robot's tool axis belong to the robot (tool radius + clearance)
    robot_radius: float = 0.0

    def __post_init__(self) -> None:
        low, high = self.height_band
        if not low < high:
            raise ValueError(f"Segmentation.height_band must be (low, high) with low < high, got {self.height_band}")
        if self.robot_radius < 0:
            raise ValueError(f"Segmentation.robot_radius must be >= 0, got {self.robot_radius}")


def world_points(frames: Sequence[DepthFrame]) -> np.ndarray:
    """Every valid depth pixel of ``frames`` as a world point, (N, 3) float32 (m); frames without any return add
    nothing."""
    clouds = []
    for frame in frames:
        depth = np.asarray(frame.depth, dtype=np.float32)
        if not np.any(depth > 0):
            continue
        clouds.append(np.asarray(depth_to_points(depth, frame.intrinsics, world_from_camera=frame.world_from_camera)
                                 .points))
    return np.concatenate(clouds) if clouds else np.zeros((0, 3), np.float32)


def object_points(frames: Sequence[DepthFrame], segmentation: Segmentation,
                  robot_xy: np.ndarray | None = None) -> np.ndarray:
    """World points (N, 3) of the object seen in ``frames``: points outside ``segmentation.height_band`` (the table,
    the air above the object) and within ``segmentation.robot_radius`` of any of ``robot_xy`` ((2,) or (K, 2) m,
    where the robot's vertical tool is) removed."""
    return segmented(world_points(frames), segmentation, robot_xy)


def segmented(points: np.ndarray, segmentation: Segmentation, robot_xy: np.ndarray | None = None) -> np.ndarray:
    """The object's points among world ``points`` (N, 3) m, by ``segmentation`` and ``robot_xy`` as
    :func:`object_points` (from any sensor's points: depth, a reconstruction)."""
    if not len(points):
        return points
    low, high = segmentation.height_band
    keep = (points[:, 2] > low) & (points[:, 2] < high)
    if robot_xy is not None:
        for xy in np.atleast_2d(np.asarray(robot_xy, dtype=float)):
            keep &= np.linalg.norm(points[:, :2] - xy, axis=1) > segmentation.robot_radius
    return points[keep]
