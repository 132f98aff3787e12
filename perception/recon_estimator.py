"""The block's pose from RGB cameras alone: a reconstruction model's points registered to the block's surface model.

Each :meth:`ReconEstimator.update` takes the latest :class:`perception.frames.ColorFrame` s of one instant (depth
frames are ignored), writes them into a reconstruction model (:class:`perception.recon.ReconModel`, all views at
once) and reads it back at query cameras (the input cameras, at ``query_scale`` times their resolution): one world
point per query pixel with an opacity. The block's points are those with opacity >= ``min_opacity``, inside the
segmentation's height band, off the robot, and within ``crop_radius`` of the prior's block position (else the last
accepted one). They are registered to the block's surface model by the depth tracker's own ICP step and track
(:meth:`perception.block_tracker.BlockTracker.track`: acceptance thresholds, relocalisation once lost, velocity), so
RGB and depth estimates are judged alike.

The model is anything called as ``model(views, queries) -> ReconOutput`` (a trained ``ReconModel``; an oracle in
tests). Frames are box-filtered down to ``input_size`` px (the size the model was trained at) with their intrinsics
scaled to match.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np
import torch

from perception.block_tracker import BlockTracker, BlockTrackerConfig
from perception.frames import ColorFrame, Frame, newest_stamp
from perception.object_points import Segmentation, segmented
from perception.protocol import Estimate, Prior
from perception.recon.cameras import Cameras, Views, views_from_frames
from perception.recon.model import ReconOutput

ReconFn = Callable[[Views, Cameras], ReconOutput]  # what a reconstruction model is to this estimator


@dataclasses.dataclass(frozen=True)
class ReconEstimatorConfig:
    """Which reconstructed points are the block's, and at what resolution the model sees and is read (m, px).

    Raises:
        ValueError: a field out of range (the message names it).
    """

    min_opacity: float = 0.5  # query pixels below this opacity place no point
    crop_radius: float = 0.15  # m, planar distance from the prior's block position beyond which points are dropped
    input_size: int = 0  # px, frames are box-filtered down to this height (an integer factor); 0: as they come
    query_scale: int = 1  # query cameras: the input cameras at this many times the input resolution

    def __post_init__(self) -> None:
        if not 0 <= self.min_opacity <= 1:
            raise ValueError(f"ReconEstimatorConfig.min_opacity must be in [0, 1], got {self.min_opacity}")
        if self.crop_radius <= 0:
            raise ValueError(f"ReconEstimatorConfig.crop_radius must be > 0, got {self.crop_radius}")
        if self.input_size < 0 or self.query_scale < 1:
            raise ValueError(f"ReconEstimatorConfig.input_size must be >= 0 and query_scale >= 1, got "
                             f"{self.input_size} and {self.query_scale}")


def check_color_frames(frames: Sequence[ColorFrame]) -> None:
    """Refuses frames the model cannot take together.

    Raises:
        ValueError: zero frames; a camera without 3x3 intrinsics or 4x4 extrinsics (naming it); mixed image sizes
            (naming each camera's).
    """
    if not frames:
        raise ValueError("ReconEstimator: zero views; at least one ColorFrame (an RGB camera) is needed per update")
    for frame in frames:
        if frame.intrinsics is None or np.shape(frame.intrinsics) != (3, 3):
            raise ValueError(f"ReconEstimator: camera {frame.camera!r} has no 3x3 intrinsics")
        if frame.world_from_camera is None or np.shape(frame.world_from_camera) != (4, 4):
            raise ValueError(f"ReconEstimator: camera {frame.camera!r} has no 4x4 world_from_camera")
    sizes = {frame.camera: tuple(np.shape(frame.image)[:2]) for frame in frames}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"ReconEstimator: mixed image sizes {sizes}; every camera must have the same H x W")


def scaled_intrinsics(intrinsics: np.ndarray, scale: float) -> np.ndarray:
    """Pinhole ``intrinsics`` (pixel centres at integer coordinates) of the same camera at ``scale`` times the
    resolution: ``f * scale``, ``c' = (c + 0.5) * scale - 0.5``."""
    k = np.array(intrinsics, dtype=float)
    k[0, 0], k[1, 1], k[0, 1] = k[0, 0] * scale, k[1, 1] * scale, k[0, 1] * scale
    k[:2, 2] = (k[:2, 2] + 0.5) * scale - 0.5
    return k


def downsampled(frame: ColorFrame, size: int) -> ColorFrame:
    """``frame`` box-filtered to ``size`` px high (and the width by the same factor), intrinsics scaled to match.

    Raises:
        ValueError: a frame whose height and width are not both multiples of the factor (naming the camera).
    """
    height, width = frame.image.shape[:2]
    factor = height // size if size else 1
    if factor < 1 or height % size or width % factor:
        raise ValueError(f"ReconEstimatorConfig.input_size ({size}): camera {frame.camera!r} images of {height}x"
                         f"{width} do not shrink to it by an integer factor")
    if factor == 1:
        return frame
    image = frame.image.astype(np.float32).reshape(height // factor, factor, width // factor, factor, 3)
    image = image.mean(axis=(1, 3)).round().astype(np.uint8)
    return dataclasses.replace(frame, image=image, intrinsics=scaled_intrinsics(frame.intrinsics, 1.0 / factor))


class ReconEstimator:
    """The block's planar pose from RGB frames through a reconstruction model (module docstring); an
    :class:`perception.protocol.Estimator`.

    Args:
        model: the reconstruction model, ``model(views, queries) -> ReconOutput`` (a ``ReconModel``).
        surface_points: (M, 3) points on the block's surface, block frame (m).
        surface_normals: (M, 3) their outward unit normals.
        config: which points are the block's and the model's resolution.
        tracker_config: fit acceptance and relocalisation (as the depth tracker's).
        segmentation: the height band of block points and the robot's radius.

    Raises:
        ValueError: surface points and normals of different or wrong shapes.
    """

    def __init__(self, model: ReconFn, surface_points: np.ndarray, surface_normals: np.ndarray,
                 config: ReconEstimatorConfig | None = None, tracker_config: BlockTrackerConfig | None = None,
                 segmentation: Segmentation | None = None) -> None:
        self.model = model
        self.config = config or ReconEstimatorConfig()
        self.tracker = BlockTracker(surface_points, surface_normals, tracker_config, segmentation)
        self.last_cloud = np.zeros((0, 3), np.float32)  # every opaque reconstructed point of the last update (m)
        self.last_colors = np.zeros((0, 3), np.uint8)  # their colours
        self.last_points = np.zeros((0, 3), np.float32)  # the block's points among them (what was registered)

    def reset(self) -> None:
        """Forgets the track (the reconstruction holds nothing between updates)."""
        self.tracker.reset()

    def update(self, frames: Sequence[Frame], prior: Prior) -> Estimate | None:
        """The block's pose in the colour frames among ``frames``, or None when no fit is accepted, too few block
        points were reconstructed, or the frames are no newer than the last accepted fit.

        Raises:
            ValueError: no colour frame, a camera without intrinsics, mixed image sizes (:func:`check_color_frames`).
        """
        color = [frame for frame in frames if isinstance(frame, ColorFrame)]
        check_color_frames(color)
        captured = newest_stamp(color)
        if self.tracker.seen(captured):
            return None
        self.last_points = self.block_points(self.reconstruct(color), prior)
        return self.tracker.track(self.last_points, captured, prior)

    def reconstruct(self, frames: Sequence[ColorFrame]) -> ReconOutput:
        """The model's output at the query cameras for ``frames`` (checked, downsampled to ``input_size``)."""
        cfg = self.config
        frames = [downsampled(frame, cfg.input_size) for frame in frames] if cfg.input_size else list(frames)
        views = views_from_frames(frames)
        cams, scale = views.cameras, cfg.query_scale
        intrinsics = torch.as_tensor(np.stack([scaled_intrinsics(f.intrinsics, scale) for f in frames]),
                                     dtype=cams.intrinsics.dtype)[None]
        queries = Cameras(intrinsics, cams.world_from_camera, cams.height * scale, cams.width * scale)
        with torch.no_grad():
            return self.model(views, queries)

    def block_points(self, output: ReconOutput, prior: Prior) -> np.ndarray:
        """The block's points (N, 3) world m among ``output``'s: opaque, in the height band, off the robot, and within
        ``crop_radius`` of the prior's block position (else the last accepted one; no crop without either). Keeps
        the opaque points and their colours in ``last_cloud`` / ``last_colors`` (for viewers)."""
        points = output.points.detach().reshape(-1, 3).cpu().numpy().astype(np.float32)
        opaque = output.opacity.detach().reshape(-1).cpu().numpy() >= self.config.min_opacity
        colors = output.rgb.detach().movedim(2, -1).reshape(-1, 3).cpu().numpy()
        self.last_cloud, points = points[opaque], points[opaque]
        self.last_colors = (np.clip(colors[opaque], 0, 1) * 255).round().astype(np.uint8)
        points = segmented(points, self.tracker.segmentation, prior.robot_xy)
        center = prior.pose if prior.pose is not None else self.tracker.pose
        if center is not None:
            points = points[np.linalg.norm(points[:, :2] - np.asarray(center)[:2], axis=1) <= self.config.crop_radius]
        return points
