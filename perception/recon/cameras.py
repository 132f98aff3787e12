"""Batched calibrated views as the reconstruction model takes them, and their Plücker rays.

Conventions (perception/frames.py): pinhole intrinsics in pixels with pixel centres at integer coordinates (as
``kernels.cameras.fovy_intrinsics``), ``world_from_camera`` rigid 4x4 with OpenCV axes (x right, y down, z forward),
metres. A ray's Plücker coordinates are ``(d, o x d)``: its unit direction ``d`` in the world and its moment about
the world origin (``o`` the camera centre), 6 channels per pixel.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import torch

from perception.frames import ColorFrame, DepthFrame


@dataclasses.dataclass
class Cameras:
    """``V`` pinhole cameras per scene, batched: ``intrinsics`` (B, V, 3, 3) px, ``world_from_camera`` (B, V, 4, 4),
    and the image size they see (``height`` x ``width`` px).

    Raises:
        ValueError: missing intrinsics or extrinsics, shapes that disagree, zero views, a non-positive size.
    """

    intrinsics: torch.Tensor | None
    world_from_camera: torch.Tensor | None
    height: int
    width: int

    def __post_init__(self) -> None:
        if self.intrinsics is None:
            raise ValueError("Cameras.intrinsics are missing: every camera needs its 3x3 pinhole intrinsics")
        if self.world_from_camera is None:
            raise ValueError("Cameras.world_from_camera is missing: every camera needs its 4x4 pose")
        k, pose = self.intrinsics, self.world_from_camera
        if k.ndim != 4 or k.shape[-2:] != (3, 3) or pose.shape != (*k.shape[:2], 4, 4):
            raise ValueError(f"Cameras: need intrinsics (B, V, 3, 3) and world_from_camera (B, V, 4, 4), got "
                             f"{tuple(k.shape)} and {tuple(pose.shape)}")
        if k.shape[1] == 0:
            raise ValueError("Cameras: zero views; at least one camera is needed")
        if self.height <= 0 or self.width <= 0:
            raise ValueError(f"Cameras: image size must be positive, got {self.height}x{self.width}")

    @property
    def n_views(self) -> int:
        """Cameras per scene (V)."""
        return self.intrinsics.shape[1]

    def select(self, views: slice) -> Cameras:
        """The cameras ``views`` (a slice over V)."""
        return Cameras(self.intrinsics[:, views], self.world_from_camera[:, views], self.height, self.width)


@dataclasses.dataclass
class Views:
    """Input views of ``B`` scenes: ``images`` (B, V, 3, H, W) float RGB in [0, 1], their ``cameras``, and optional
    ``depth`` (B, V, H, W) m along the optical axis (0 = missing).

    Raises:
        ValueError: images, depth and cameras whose batch, view count or size disagree; zero views.
    """

    images: torch.Tensor
    cameras: Cameras
    depth: torch.Tensor | None = None

    def __post_init__(self) -> None:
        cams = self.cameras
        if self.images.ndim != 5 or self.images.shape[1] == 0:
            raise ValueError(f"Views.images must be (B, V >= 1, 3, H, W), got {tuple(self.images.shape)} (zero views?)")
        expected = (*cams.intrinsics.shape[:2], 3, cams.height, cams.width)
        if tuple(self.images.shape) != expected:
            raise ValueError(f"Views.images {tuple(self.images.shape)} disagree with the cameras {expected}")
        if self.depth is not None and tuple(self.depth.shape) != (*expected[:2], *expected[3:]):
            raise ValueError(f"Views.depth {tuple(self.depth.shape)} must be (B, V, H, W) = "
                             f"{(*expected[:2], *expected[3:])}")

    @property
    def n_views(self) -> int:
        """Views per scene (V)."""
        return self.images.shape[1]

    def select(self, views: slice) -> Views:
        """The views ``views`` (a slice over V)."""
        depth = None if self.depth is None else self.depth[:, views]
        return Views(self.images[:, views], self.cameras.select(views), depth)


def pixel_rays(cameras: Cameras) -> tuple[torch.Tensor, torch.Tensor]:
    """``(origins, directions)`` of every pixel's ray in the world, each (B, V, H, W, 3); directions unit length."""
    k, pose = cameras.intrinsics, cameras.world_from_camera
    v, u = torch.meshgrid(torch.arange(cameras.height, dtype=k.dtype, device=k.device),
                          torch.arange(cameras.width, dtype=k.dtype, device=k.device), indexing="ij")
    pixels = torch.stack((u, v, torch.ones_like(u)), dim=-1)  # (H, W, 3) homogeneous pixel centres
    in_camera = torch.einsum("bvij,hwj->bvhwi", torch.linalg.inv(k), pixels)
    directions = torch.einsum("bvij,bvhwj->bvhwi", pose[..., :3, :3], in_camera)
    directions = directions / directions.norm(dim=-1, keepdim=True)
    origins = pose[..., None, None, :3, 3].expand_as(directions)
    return origins, directions


def plucker_rays(cameras: Cameras) -> torch.Tensor:
    """(B, V, 6, H, W): each pixel's ray as Plücker coordinates (unit direction, moment o x d), channels first."""
    origins, directions = pixel_rays(cameras)
    plucker = torch.cat((directions, torch.linalg.cross(origins, directions, dim=-1)), dim=-1)
    return plucker.permute(0, 1, 4, 2, 3)


def views_from_frames(frames: Sequence[ColorFrame], depth: Sequence[DepthFrame] | None = None,
                      device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> Views:
    """One scene (B = 1) of calibrated RGB frames (and, optionally, depth frames of the same cameras, in order).

    Raises:
        ValueError: zero frames; frames of mixed image sizes (naming the cameras); a frame without intrinsics;
            depth frames that do not match the colour frames one to one.
    """
    if len(frames) == 0:
        raise ValueError("views_from_frames: zero views; at least one ColorFrame is needed")
    sizes = {f.camera: tuple(np.shape(f.image)[:2]) for f in frames}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"views_from_frames: mixed image sizes {sizes}; every view must have the same H x W")
    for f in frames:
        if f.intrinsics is None or np.shape(f.intrinsics) != (3, 3):
            raise ValueError(f"views_from_frames: camera {f.camera!r} has no 3x3 intrinsics")
    height, width = next(iter(sizes.values()))
    images = torch.as_tensor(np.stack([f.image for f in frames])).permute(0, 3, 1, 2).to(device, dtype) / 255.0
    cameras = Cameras(torch.as_tensor(np.stack([f.intrinsics for f in frames]), dtype=dtype, device=device)[None],
                      torch.as_tensor(np.stack([f.world_from_camera for f in frames]), dtype=dtype,
                                      device=device)[None], height, width)
    depth_tensor = None
    if depth is not None:
        if len(depth) != len(frames) or any(np.shape(d.depth) != (height, width) for d in depth):
            raise ValueError(f"views_from_frames: need one {height}x{width} depth frame per colour frame, got "
                             f"{[np.shape(d.depth) for d in depth]}")
        depth_tensor = torch.as_tensor(np.stack([d.depth for d in depth]), dtype=dtype, device=device)[None]
    return Views(images[None], cameras, depth_tensor)
