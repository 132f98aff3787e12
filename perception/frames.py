"""Camera frames as the estimators receive them: the pixels, the camera model that maps them to the world, and
their capture time.

Units: metres, seconds; camera axes are OpenCV's (x right, y down, z forward); ``world_from_camera`` maps them to
the world frame (z up). A timestamp is on whatever clock the caller uses (``time.monotonic()`` over the bridge,
twin time inside the twin); an estimator compares it only with other stamps and with :attr:`Prior.time
<perception.protocol.Prior.time>` on the same clock.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np


class CameraModel(NamedTuple):
    """A calibrated pinhole camera: ``intrinsics`` (3x3, pixels, at the frame size) and ``world_from_camera`` (4x4
    rigid, OpenCV axes). A tuple, so ``DepthFrame(name, depth, *model)`` reads as the calibration it is."""

    intrinsics: np.ndarray
    world_from_camera: np.ndarray


def _check_camera(camera: str, intrinsics: np.ndarray, world_from_camera: np.ndarray) -> None:
    """Raises ValueError naming ``camera`` when its matrices are not 3x3 and 4x4."""
    if np.shape(intrinsics) != (3, 3) or np.shape(world_from_camera) != (4, 4):
        raise ValueError(f"camera {camera!r}: need intrinsics 3x3 and world_from_camera 4x4, got "
                         f"{np.shape(intrinsics)} and {np.shape(world_from_camera)}")


@dataclasses.dataclass
class DepthFrame:
    """One calibrated depth measurement: (H, W) float32 metres along the optical axis (0 = missing).

    Raises:
        ValueError: depth not 2-D, or calibration matrices of the wrong shape (the message names the camera).
    """

    camera: str
    depth: np.ndarray
    intrinsics: np.ndarray  # 3x3 pinhole, pixels
    world_from_camera: np.ndarray  # 4x4, OpenCV axes (x right, y down, z forward)
    timestamp: float = 0.0  # s, capture time

    def __post_init__(self) -> None:
        if np.ndim(self.depth) != 2:
            raise ValueError(f"depth of camera {self.camera!r} must be (H, W), got shape {np.shape(self.depth)}")
        _check_camera(self.camera, self.intrinsics, self.world_from_camera)

    @property
    def model(self) -> CameraModel:
        """The frame's camera model."""
        return CameraModel(self.intrinsics, self.world_from_camera)


@dataclasses.dataclass
class ColorFrame:
    """One calibrated RGB image: (H, W, 3) uint8 (the input of RGB estimators such as a reconstruction model).

    Raises:
        ValueError: an image that is not (H, W, 3) uint8, or calibration matrices of the wrong shape.
    """

    camera: str
    image: np.ndarray
    intrinsics: np.ndarray  # 3x3 pinhole, pixels
    world_from_camera: np.ndarray  # 4x4, OpenCV axes
    timestamp: float = 0.0  # s, capture time

    def __post_init__(self) -> None:
        image = np.asarray(self.image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image of camera {self.camera!r} must be (H, W, 3) uint8, got {image.shape} "
                             f"{image.dtype}")
        _check_camera(self.camera, self.intrinsics, self.world_from_camera)

    @property
    def model(self) -> CameraModel:
        """The frame's camera model."""
        return CameraModel(self.intrinsics, self.world_from_camera)


Frame = DepthFrame | ColorFrame  # what an estimator's update() takes, a list of them per instant


def newest_stamp(frames: Sequence[Frame]) -> float:
    """The capture time of the newest of ``frames`` (s); -inf for none."""
    return max((frame.timestamp for frame in frames), default=-np.inf)


def restamped(frames: Sequence[Frame], clock: Callable[[float], float]) -> list[Frame]:
    """``frames`` with every timestamp mapped through ``clock(stamp) -> stamp`` (e.g. wall clock to twin time)."""
    return [dataclasses.replace(frame, timestamp=float(clock(frame.timestamp))) for frame in frames]
