"""TSDF fusion of posed depth frames into a dense voxel grid, and surface point extraction.

One Warp module. ``TSDFVolume`` allocates the grid once; ``integrate`` projects every voxel centre
into the frame (OpenCV pinhole camera) and folds the truncated projective distance
``clamp((depth - z) / sdf_trunc, -1, 1)`` into a running weighted mean (voxels more than ``sdf_trunc``
behind the surface are left alone); ``extract_points`` returns the zero crossings between
neighbouring voxels, linearly interpolated, as Open3D's ``ExtractPointCloud`` does, with normals from
the TSDF gradient.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import warp as wp

from kernels._arrays import as_matrix, as_rigid, as_warp, positive, to_kind
from kernels._runtime import launch_rows, resolve_device

# Only voxels whose |tsdf| is below this are trusted near the surface (Open3D uses 0.98 too).
_SURFACE_LIMIT = wp.constant(0.98)


@wp.func
def _voxel_index(i: int, ny: int, nz: int) -> wp.vec3i:
    return wp.vec3i(i // (ny * nz), (i // nz) % ny, i % nz)


@wp.kernel
def _integrate(tsdf: wp.array(dtype=float), weight: wp.array(dtype=float), dims: wp.vec3i, origin: wp.vec3,
               voxel: float, sdf_trunc: float, max_weight: float, camera_from_world: wp.mat44,
               fx: float, fy: float, cx: float, cy: float, depth: wp.array2d(dtype=float),
               inv_scale: float, depth_trunc: float, offset: int):
    # One thread per (x, y) column of voxels; stepping along z moves the camera-frame point by a constant.
    col = wp.tid() + offset
    ix = col // dims[1]
    iy = col % dims[1]
    base = origin + voxel * wp.vec3(float(ix) + 0.5, float(iy) + 0.5, 0.5)
    pc = wp.transform_point(camera_from_world, base)
    step = wp.transform_vector(camera_from_world, wp.vec3(0.0, 0.0, voxel))
    i = col * dims[2]
    for iz in range(dims[2]):
        if pc[2] > 0.0:
            u = wp.int32(wp.round(fx * pc[0] / pc[2] + cx))
            v = wp.int32(wp.round(fy * pc[1] / pc[2] + cy))
            if u >= 0 and v >= 0 and u < depth.shape[1] and v < depth.shape[0]:
                d = depth[v, u] * inv_scale
                if d > 0.0 and d <= depth_trunc:
                    sdf = d - pc[2]
                    if sdf >= -sdf_trunc:
                        value = wp.min(1.0, sdf / sdf_trunc)
                        w = weight[i + iz]
                        tsdf[i + iz] = (tsdf[i + iz] * w + value) / (w + 1.0)
                        weight[i + iz] = wp.min(w + 1.0, max_weight)
        pc = pc + step


@wp.func
def _trusted(tsdf: wp.array(dtype=float), weight: wp.array(dtype=float), i: int) -> bool:
    return weight[i] > 0.0 and tsdf[i] < _SURFACE_LIMIT and tsdf[i] >= -_SURFACE_LIMIT


@wp.func
def _crossing(tsdf: wp.array(dtype=float), weight: wp.array(dtype=float), i: int, ijk: wp.vec3i,
              dims: wp.vec3i, axis: int) -> int:
    """Neighbour index along +axis when the surface crosses between it and voxel i, else -1."""
    if ijk[axis] + 1 >= dims[axis]:
        return -1
    stride = wp.where(axis == 0, dims[1] * dims[2], wp.where(axis == 1, dims[2], 1))
    j = i + stride
    if not _trusted(tsdf, weight, j):
        return -1
    if tsdf[i] * tsdf[j] >= 0.0:
        return -1
    return j


@wp.kernel
def _count_crossings(tsdf: wp.array(dtype=float), weight: wp.array(dtype=float), dims: wp.vec3i,
                     counts: wp.array(dtype=wp.int32), offset: int):
    i = wp.tid() + offset
    c = wp.int32(0)
    if _trusted(tsdf, weight, i):
        ijk = _voxel_index(i, dims[1], dims[2])
        for axis in range(3):
            if _crossing(tsdf, weight, i, ijk, dims, axis) >= 0:
                c += 1
    counts[i] = c


@wp.func
def _gradient(tsdf: wp.array(dtype=float), ijk: wp.vec3i, dims: wp.vec3i) -> wp.vec3:
    g = wp.vec3(0.0)
    for axis in range(3):
        lo = wp.vec3i(ijk[0], ijk[1], ijk[2])
        hi = wp.vec3i(ijk[0], ijk[1], ijk[2])
        lo[axis] = wp.max(ijk[axis] - 1, 0)
        hi[axis] = wp.min(ijk[axis] + 1, dims[axis] - 1)
        a = tsdf[(lo[0] * dims[1] + lo[1]) * dims[2] + lo[2]]
        b = tsdf[(hi[0] * dims[1] + hi[1]) * dims[2] + hi[2]]
        g[axis] = (b - a) / float(wp.max(hi[axis] - lo[axis], 1))
    return g


@wp.kernel
def _write_crossings(tsdf: wp.array(dtype=float), weight: wp.array(dtype=float), dims: wp.vec3i, origin: wp.vec3,
                     voxel: float, starts: wp.array(dtype=wp.int32), points: wp.array(dtype=wp.vec3),
                     normals: wp.array(dtype=wp.vec3), offset: int):
    i = wp.tid() + offset
    if not _trusted(tsdf, weight, i):
        return
    ijk = _voxel_index(i, dims[1], dims[2])
    k = starts[i]
    f0 = tsdf[i]
    p0 = origin + voxel * wp.vec3(float(ijk[0]) + 0.5, float(ijk[1]) + 0.5, float(ijk[2]) + 0.5)
    g0 = _gradient(tsdf, ijk, dims)
    for axis in range(3):
        j = _crossing(tsdf, weight, i, ijk, dims, axis)
        if j >= 0:
            f1 = tsdf[j]
            t = f0 / (f0 - f1)
            step = wp.vec3(0.0)
            step[axis] = voxel
            points[k] = p0 + t * step
            nb = wp.vec3i(ijk[0], ijk[1], ijk[2])
            nb[axis] = ijk[axis] + 1
            g = (1.0 - t) * g0 + t * _gradient(tsdf, nb, dims)
            length = wp.length(g)
            normals[k] = wp.where(length > 0.0, g / length, wp.vec3(0.0, 0.0, 1.0))
            k += 1


class SurfacePoints(NamedTuple):
    """Surface samples from ``TSDFVolume.extract_points``: points ``(K, 3)`` (m) and unit outward normals."""

    points: Any
    normals: Any


class TSDFVolume:
    """Dense truncated signed distance volume over a box, fused from posed depth frames.

    Args:
        origin: world position (m) of the volume's minimum corner.
        dims: voxel counts ``(nx, ny, nz)``.
        voxel_size: voxel edge (m).
        sdf_trunc: truncation distance (m); a few voxels is typical.
        max_weight: cap on the per-voxel weight (limits how slowly old frames are forgotten).
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``auto``.

    Raises:
        ValueError: on non-positive sizes or counts, or a non-finite origin.
    """

    def __init__(self, origin: Any, dims: tuple[int, int, int], voxel_size: float, sdf_trunc: float, *,
                 max_weight: float = 1.0e4, device: str | None = None):
        self.device = resolve_device(device)
        o = np.asarray(origin, dtype=np.float64)
        if o.shape != (3,) or not np.isfinite(o).all():
            raise ValueError(f"origin must be 3 finite numbers, got {origin!r}")
        if len(dims) != 3:
            raise ValueError(f"dims must be (nx, ny, nz), got {dims!r}")
        self.dims = tuple(positive(d, f"dims[{i}]", integer=True) for i, d in enumerate(dims))
        self.voxel_size = positive(voxel_size, "voxel_size")
        self.sdf_trunc = positive(sdf_trunc, "sdf_trunc")
        self.max_weight = positive(max_weight, "max_weight")
        self.origin = o
        self.num_voxels = int(np.prod(self.dims))
        if self.num_voxels >= 2**31:
            raise ValueError(f"dims {self.dims} give {self.num_voxels} voxels; at most 2**31 - 1 are supported")
        self.tsdf = wp.zeros(self.num_voxels, dtype=float, device=self.device)
        self.weight = wp.zeros(self.num_voxels, dtype=float, device=self.device)
        self._counts = wp.zeros(self.num_voxels, dtype=wp.int32, device=self.device)
        self._starts = wp.zeros(self.num_voxels, dtype=wp.int32, device=self.device)

    def reset(self) -> None:
        """Forget every integrated frame."""
        self.tsdf.zero_()
        self.weight.zero_()

    def integrate(self, depth: Any, intrinsics: Any, world_from_camera: Any, *, depth_scale: float = 1.0,
                  depth_trunc: float = float("inf")) -> None:
        """Fuse one depth frame ``(H, W)`` seen by an OpenCV pinhole camera at ``world_from_camera``.

        ``depth`` and ``depth_scale`` follow ``depth_to_points``; ``intrinsics`` is the 3x3 matrix.

        Raises:
            ValueError: on a bad image, intrinsics or pose.
        """
        d = as_warp(depth, "depth", self.device, shape=(None, None), dtype=wp.float32, element="depth")
        k = as_matrix(intrinsics, "intrinsics", 3, 3)
        if k[0, 0] <= 0 or k[1, 1] <= 0:
            raise ValueError(f"intrinsics must have fx, fy > 0, got {k.tolist()}")
        pose = as_rigid(world_from_camera, "world_from_camera")
        scale = positive(depth_scale, "depth_scale")
        trunc = positive(depth_trunc, "depth_trunc") if np.isfinite(depth_trunc) else 1.0e30
        cam = np.linalg.inv(pose).astype(np.float32)
        launch_rows(_integrate, self.dims[0] * self.dims[1], [
            self.tsdf, self.weight, wp.vec3i(*self.dims), wp.vec3(*self.origin), float(self.voxel_size),
            float(self.sdf_trunc), float(self.max_weight), wp.mat44(*cam.reshape(-1).tolist()),
            float(k[0, 0]), float(k[1, 1]), float(k[0, 2]), float(k[1, 2]), d, 1.0 / scale, float(trunc)],
            self.device, min_split=64)

    def extract_points(self, *, like: str = "numpy") -> SurfacePoints:
        """Return the fused surface as points ``(K, 3)`` and unit normals ``(K, 3)`` (pointing to free space).

        ``like`` picks the returned kind: ``numpy``, ``torch`` or ``warp``.

        Raises:
            ValueError: on an unknown ``like``.
        """
        if like not in ("numpy", "torch", "warp"):
            raise ValueError(f"like must be 'numpy', 'torch' or 'warp', got {like!r}")
        dims = wp.vec3i(*self.dims)
        launch_rows(_count_crossings, self.num_voxels, [self.tsdf, self.weight, dims, self._counts], self.device)
        wp.utils.array_scan(self._counts, self._starts, inclusive=False)
        n = self.num_voxels
        total = int(self._starts[n - 1 : n].numpy()[0] + self._counts[n - 1 : n].numpy()[0])
        points = wp.empty(total, dtype=wp.vec3, device=self.device)
        normals = wp.empty(total, dtype=wp.vec3, device=self.device)
        launch_rows(_write_crossings, n, [self.tsdf, self.weight, dims, wp.vec3(*self.origin), float(self.voxel_size),
                                          self._starts, points, normals], self.device)
        return SurfacePoints(to_kind(points, like), to_kind(normals, like))
