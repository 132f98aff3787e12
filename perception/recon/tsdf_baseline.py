"""The classical baseline of the reconstruction figures (issue 18): Open3D TSDF fusion of posed RGB-D views
(``open3d.pipelines.integration.UniformTSDFVolume``, a cube around the object), its surface points, and its mesh ray-
cast into query cameras for novel-view depth and colour. It is given the *true* depth of the input views, so it bounds
what geometry from those views can give; the learned model sees RGB only.

Cameras as :mod:`perception.recon.cameras`: pinhole intrinsics with pixel centres at integer coordinates, OpenCV
``world_from_camera``, metres; depth along the optical axis (0: none).

Why the uniform volume: in the installed Open3D (0.20, CPU wheel) ``ScalableTSDFVolume`` and the tensor
``VoxelBlockGrid`` integrate nothing (0 points extracted even from four integrations of a flat plane 1 m in front of
the camera), while ``UniformTSDFVolume`` fuses the same frames. A cube of ``extent`` around the object at ``voxel``
resolution is what the scalable volume would have allocated near it anyway.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import open3d as o3d


@dataclass
class TSDFConfig:
    """Open3D TSDF fusion settings (m).

    Raises:
        ValueError: a non-positive size (names the field).
    """

    voxel: float = 0.004  # m, voxel edge (the T-block is 30 mm tall)
    extent: float = 0.4  # m, edge of the fused cube (centred on the given point; the T-block is 150 mm wide)
    sdf_trunc: float = 0.016  # m, truncation distance (4 voxels)
    depth_trunc: float = 3.0  # m, depth beyond this is ignored

    def __post_init__(self) -> None:
        for name in ("voxel", "extent", "sdf_trunc", "depth_trunc"):
            if getattr(self, name) <= 0:
                raise ValueError(f"TSDFConfig.{name} must be > 0, got {getattr(self, name)}")


class TSDFRender(NamedTuple):
    """Per pixel of each query camera: ``depth`` (V, H, W) m along the ray (0 where the mesh is missed) and ``rgb``
    (V, H, W, 3) in [0, 1] (0 where missed)."""

    depth: np.ndarray
    rgb: np.ndarray


def tsdf_fuse(images: np.ndarray, depth: np.ndarray, intrinsics: np.ndarray, world_from_camera: np.ndarray,
              centre: np.ndarray, config: TSDFConfig | None = None) -> o3d.pipelines.integration.UniformTSDFVolume:
    """Fuses V views: ``images`` (V, H, W, 3) uint8, ``depth`` (V, H, W) m, ``intrinsics`` (V, 3, 3),
    ``world_from_camera`` (V, 4, 4), into a coloured TSDF cube of ``config.extent`` centred on ``centre`` (3,) m.

    Raises:
        ValueError: zero views, or arrays whose view counts or image sizes disagree.
    """
    config = config or TSDFConfig()
    images, depth = np.asarray(images), np.asarray(depth, np.float32)
    n = len(images)
    if n == 0 or depth.shape != images.shape[:3] or len(intrinsics) != n or len(world_from_camera) != n:
        raise ValueError(f"tsdf_fuse: need V >= 1 views with images (V, H, W, 3), depth (V, H, W), intrinsics "
                         f"(V, 3, 3), poses (V, 4, 4); got {images.shape}, {depth.shape}, {np.shape(intrinsics)}, "
                         f"{np.shape(world_from_camera)}")
    resolution = max(1, round(config.extent / config.voxel))
    volume = o3d.pipelines.integration.UniformTSDFVolume(
        length=resolution * config.voxel, resolution=resolution, sdf_trunc=config.sdf_trunc,
        color_type=o3d.pipelines.integration.TSDFVolumeColorType.RGB8,
        origin=np.asarray(centre, np.float64).reshape(3) - 0.5 * resolution * config.voxel)
    height, width = depth.shape[1:]
    for image, z, k, pose in zip(images, depth, intrinsics, world_from_camera, strict=True):
        rgbd = o3d.geometry.RGBDImage.create_from_color_and_depth(
            o3d.geometry.Image(np.ascontiguousarray(image, np.uint8)), o3d.geometry.Image(np.ascontiguousarray(z)),
            depth_scale=1.0, depth_trunc=config.depth_trunc, convert_rgb_to_intensity=False)
        intrinsic = o3d.camera.PinholeCameraIntrinsic(width, height, float(k[0, 0]), float(k[1, 1]), float(k[0, 2]),
                                                      float(k[1, 2]))
        volume.integrate(rgbd, intrinsic, np.linalg.inv(np.asarray(pose, np.float64)))
    return volume


def tsdf_points(volume: o3d.pipelines.integration.UniformTSDFVolume) -> np.ndarray:
    """The fused surface's points (N, 3) m (zero crossings of the TSDF)."""
    return np.asarray(volume.extract_point_cloud().points)


def tsdf_render(volume: o3d.pipelines.integration.UniformTSDFVolume, intrinsics: np.ndarray,
                world_from_camera: np.ndarray, height: int, width: int) -> TSDFRender:
    """The fused mesh ray-cast into V query cameras (``intrinsics`` (V, 3, 3), ``world_from_camera`` (V, 4, 4)):
    depth along each pixel's ray and the colour interpolated from the hit triangle's vertices."""
    mesh = volume.extract_triangle_mesh()
    v_count = len(intrinsics)
    if len(mesh.triangles) == 0:
        return TSDFRender(np.zeros((v_count, height, width)), np.zeros((v_count, height, width, 3)))
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.t.geometry.TriangleMesh.from_legacy(mesh))
    v, u = np.meshgrid(np.arange(height, dtype=float), np.arange(width, dtype=float), indexing="ij")
    pixels = np.stack((u, v, np.ones_like(u)), axis=-1)
    rays = []
    for k, pose in zip(intrinsics, world_from_camera, strict=True):
        d = pixels @ np.linalg.inv(np.asarray(k, float)).T @ np.asarray(pose, float)[:3, :3].T
        d /= np.linalg.norm(d, axis=-1, keepdims=True)
        rays.append(np.concatenate((np.broadcast_to(np.asarray(pose, float)[:3, 3], d.shape), d), axis=-1))
    hits = scene.cast_rays(o3d.core.Tensor(np.stack(rays).astype(np.float32)))
    t_hit = hits["t_hit"].numpy()
    hit = np.isfinite(t_hit)
    triangles, colours = np.asarray(mesh.triangles), np.asarray(mesh.vertex_colors)
    ids = np.where(hit, hits["primitive_ids"].numpy(), 0).astype(np.int64)
    uv = hits["primitive_uvs"].numpy()
    corner = colours[triangles[ids]]  # (V, H, W, 3 vertices, 3)
    weights = np.stack((1.0 - uv[..., 0] - uv[..., 1], uv[..., 0], uv[..., 1]), axis=-1)
    rgb = np.einsum("...k,...kc->...c", weights, corner) if len(colours) else np.zeros((*t_hit.shape, 3))
    return TSDFRender(np.where(hit, t_hit, 0.0), np.where(hit[..., None], np.clip(rgb, 0.0, 1.0), 0.0))
