"""Planar geometry of the T-block: its rectangles, poses, and goal coverage (area of overlap / area of goal)."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import mujoco
import numpy as np

BLOCK_GEOMS = ("block_bar", "block_stem")


@dataclass(frozen=True)
class TShape:
    """The T as a union of disjoint axis-aligned rectangles in the block frame.

    Attributes:
        centers: (R, 2) rectangle centres in the block frame (m).
        half_sizes: (R, 2) rectangle half extents along the block's x and y axes (m).
    """

    centers: np.ndarray
    half_sizes: np.ndarray

    @classmethod
    def from_model(cls, model: mujoco.MjModel) -> TShape:
        """Reads the block's box geoms (``block_bar``, ``block_stem``) from a MuJoCo model.

        Raises:
            KeyError: if the model has no such geoms.
        """
        centers = np.array([model.geom(name).pos[:2] for name in BLOCK_GEOMS])
        half_sizes = np.array([model.geom(name).size[:2] for name in BLOCK_GEOMS])
        return cls(centers=centers, half_sizes=half_sizes)

    @property
    def area(self) -> float:
        """Area of the T (m^2)."""
        return float(np.sum(4 * self.half_sizes[:, 0] * self.half_sizes[:, 1]))

    @property
    def centroid(self) -> np.ndarray:
        """Area centroid of the T in the block frame (m); MuJoCo puts the block's centre of mass there."""
        areas = 4 * self.half_sizes[:, 0] * self.half_sizes[:, 1]
        return (self.centers * areas[:, None]).sum(0) / areas.sum()

    def polygons(self, pose: np.ndarray) -> list[np.ndarray]:
        """Corners (4, 2) of each rectangle, counter-clockwise, in the world for a planar pose ``(x, y, theta)``."""
        x, y, theta = pose
        rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
        signs = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=float)
        return [(c + signs * h) @ rot.T + (x, y) for c, h in zip(self.centers, self.half_sizes)]

    def coverage(self, pose: np.ndarray, goal: np.ndarray) -> float:
        """Fraction of the goal T's area covered by the T at ``pose``; both poses planar ``(x, y, theta)``.

        Exact polygon clipping (Sutherland-Hodgman) of each block rectangle against each goal rectangle, done in the
        goal's frame, where the goal rectangles are axis-aligned boxes, on Python floats (a few microseconds; the
        same area as :func:`clip_convex` of the world-frame polygons to float rounding).
        """
        gx, gy, gtheta = float(goal[0]), float(goal[1]), float(goal[2])
        cg, sg = math.cos(gtheta), math.sin(gtheta)
        dx, dy = float(pose[0]) - gx, float(pose[1]) - gy
        x, y = cg * dx + sg * dy, -sg * dx + cg * dy  # the block's frame origin in the goal frame
        theta = float(pose[2]) - gtheta
        c, s = math.cos(theta), math.sin(theta)
        overlap = 0.0
        for (cx, cy), (hx, hy) in self._rectangles:
            quad = [(x + c * px - s * py, y + s * px + c * py)
                    for px, py in ((cx - hx, cy - hy), (cx + hx, cy - hy), (cx + hx, cy + hy), (cx - hx, cy + hy))]
            for box in self._boxes:
                overlap += _box_overlap(quad, box)
        return min(max(overlap / self.area, 0.0), 1.0)

    @functools.cached_property
    def _rectangles(self) -> tuple[tuple[tuple[float, float], tuple[float, float]], ...]:
        """(centre, half size) of each rectangle as Python floats (block frame, m)."""
        return tuple(((float(c[0]), float(c[1])), (float(h[0]), float(h[1])))
                     for c, h in zip(self.centers, self.half_sizes))

    @functools.cached_property
    def _boxes(self) -> tuple[tuple[float, float, float, float], ...]:
        """Each rectangle as an axis-aligned box ``(x_min, x_max, y_min, y_max)`` in the block frame (m)."""
        return tuple((cx - hx, cx + hx, cy - hy, cy + hy) for (cx, cy), (hx, hy) in self._rectangles)

    def boundary_points(self, spacing: float) -> tuple[np.ndarray, np.ndarray]:
        """Points on the T's outline (block frame) about ``spacing`` m apart, with their outward unit normals.

        Points on an edge shared by the two rectangles (inside the T) are left out.
        """
        points, normals = [], []
        for center, half in zip(self.centers, self.half_sizes):
            for axis in (0, 1):
                for side in (-1.0, 1.0):
                    normal = np.zeros(2)
                    normal[axis] = side
                    along = 1 - axis
                    count = max(2, int(round(2 * half[along] / spacing)) + 1)
                    for s in np.linspace(-half[along], half[along], count)[1:-1]:
                        point = center.copy()
                        point[axis] += side * half[axis]
                        point[along] += s
                        if not self.contains(point + 1e-4 * normal):
                            points.append(point)
                            normals.append(normal)
        return np.array(points), np.array(normals)

    def contains(self, points: np.ndarray, margin: float = 0.0) -> np.ndarray | bool:
        """Whether block-frame point(s) lie inside the T grown by ``margin`` (m) (a box grow, not a round one)."""
        p = np.atleast_2d(points)
        inside = np.zeros(len(p), dtype=bool)
        for center, half in zip(self.centers, self.half_sizes):
            inside |= np.all(np.abs(p - center) <= half + margin, axis=1)
        return inside if np.ndim(points) == 2 else bool(inside[0])


def clip_convex(subject: np.ndarray, clip: np.ndarray) -> np.ndarray:
    """Sutherland-Hodgman: the intersection of two convex counter-clockwise polygons, as (N, 2) corners."""
    output = subject
    for i in range(len(clip)):
        if len(output) == 0:
            break
        a, b = clip[i], clip[(i + 1) % len(clip)]
        edge = b - a
        side = edge[0] * (output[:, 1] - a[1]) - edge[1] * (output[:, 0] - a[0])  # >= 0: inside (left of edge)
        kept = []
        for j in range(len(output)):
            p, q = output[j], output[(j + 1) % len(output)]
            sp, sq = side[j], side[(j + 1) % len(output)]
            if sp >= 0:
                kept.append(p)
            if (sp >= 0) != (sq >= 0):
                kept.append(p + (q - p) * (sp / (sp - sq)))
        output = np.array(kept) if kept else np.zeros((0, 2))
    return output


def _box_overlap(quad: list[tuple[float, float]], box: tuple[float, float, float, float]) -> float:
    """Area (m^2) of a convex counter-clockwise polygon (list of (x, y)) inside an axis-aligned box
    ``(x_min, x_max, y_min, y_max)``: Sutherland-Hodgman against the box's four sides, then the shoelace formula."""
    x_min, x_max, y_min, y_max = box
    xs, ys = [p[0] for p in quad], [p[1] for p in quad]
    if min(xs) >= x_max or max(xs) <= x_min or min(ys) >= y_max or max(ys) <= y_min:
        return 0.0
    polygon = quad
    for axis, bound, sign in ((0, x_min, 1.0), (0, x_max, -1.0), (1, y_min, 1.0), (1, y_max, -1.0)):
        sides = [sign * (p[axis] - bound) for p in polygon]  # >= 0: inside
        if min(sides) >= 0:
            continue
        kept = []
        n = len(polygon)
        for j in range(n):
            p, sp, sq = polygon[j], sides[j], sides[(j + 1) % n]
            if sp >= 0:
                kept.append(p)
            if (sp >= 0) != (sq >= 0):
                q, t = polygon[(j + 1) % n], sp / (sp - sq)
                kept.append((p[0] + (q[0] - p[0]) * t, p[1] + (q[1] - p[1]) * t))
        if len(kept) < 3:
            return 0.0
        polygon = kept
    n = len(polygon)
    twice = sum(polygon[j][0] * polygon[(j + 1) % n][1] - polygon[(j + 1) % n][0] * polygon[j][1] for j in range(n))
    return abs(twice) / 2


def polygon_area(polygon: np.ndarray) -> float:
    """Shoelace area (m^2) of a simple polygon given as (N, 2) corners; 0 for fewer than 3 corners."""
    if len(polygon) < 3:
        return 0.0
    x, y = polygon[:, 0], polygon[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2)


def quat_to_yaw(quat: np.ndarray) -> float:
    """Rotation about world z (rad) of a wxyz quaternion (assumes the rotation is planar)."""
    w, x, y, z = quat
    return float(np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z)))


def yaw_to_quat(theta: float) -> np.ndarray:
    """wxyz quaternion of a rotation by ``theta`` (rad) about world z."""
    return np.array([np.cos(theta / 2), 0.0, 0.0, np.sin(theta / 2)])


def wrap_angle(theta: np.ndarray | float) -> np.ndarray | float:
    """Angle(s) wrapped to [-pi, pi)."""
    return (np.asarray(theta) + np.pi) % (2 * np.pi) - np.pi
