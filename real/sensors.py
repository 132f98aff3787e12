"""Sensor readings carried over the bridge: camera frames, their calibration, and ground truth for tests.

A backend's :meth:`Robot.read_sensors` returns ``{key: SensorReading}``; the bridge carries them in a SENSORS
message (:class:`real.bridge.protocol.Sensors`) and :meth:`real.bridge.client.RemoteRobot.read_sensors` returns them with the
timestamps moved to the client's clock. Keys (LeRobot naming, as the env's observations):

=====================================  ========  ========  =============================================
key                                    dtype     shape     meaning
=====================================  ========  ========  =============================================
``observation.depth.<camera>``         float32   [H, W]    depth along the optical axis (m); 0 = no return
``observation.images.<camera>``        uint8     [H, W, 3] RGB
``truth.<name>``                       float64   any       ground truth of an emulator (tests only: the twin
                                                           must never read it)
``calibration.<camera>.intrinsics``    float64   [3, 3]    pinhole intrinsics (pixels) at the frame size
``calibration.<camera>.world_from_camera``  float64  [4, 4]  extrinsics, OpenCV axes (x right, y down, z forward)
=====================================  ========  ========  =============================================

Calibration is static: a backend returns it from :meth:`Robot.sensor_calibration`, the client fetches it once at
``connect()``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

from perception.frames import DepthFrame

DEPTH_PREFIX = "observation.depth."
IMAGE_PREFIX = "observation.images."
TRUTH_PREFIX = "truth."
CALIBRATION_PREFIX = "calibration."
TRUTH_BLOCK_POSE = "truth.block_pose"  # (x, y, theta) of the emulated reality's block, m and rad


@dataclasses.dataclass(frozen=True)
class SensorReading:
    """One sensor array and when it was captured (``time.monotonic()`` seconds of the reader's clock)."""

    data: np.ndarray
    timestamp: float


def depth_key(camera: str) -> str:
    """``observation.depth.<camera>``."""
    return DEPTH_PREFIX + camera


def image_key(camera: str) -> str:
    """``observation.images.<camera>``."""
    return IMAGE_PREFIX + camera


def intrinsics_key(camera: str) -> str:
    """``calibration.<camera>.intrinsics``."""
    return f"{CALIBRATION_PREFIX}{camera}.intrinsics"


def extrinsics_key(camera: str) -> str:
    """``calibration.<camera>.world_from_camera``."""
    return f"{CALIBRATION_PREFIX}{camera}.world_from_camera"


def calibration_arrays(cameras: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, np.ndarray]:
    """``{camera: (intrinsics 3x3, world_from_camera 4x4)}`` as calibration keys (float64).

    Raises:
        ValueError: a matrix has the wrong shape (the message names the camera).
    """
    out = {}
    for camera, (intrinsics, world_from_camera) in cameras.items():
        k, t = np.asarray(intrinsics, np.float64), np.asarray(world_from_camera, np.float64)
        if k.shape != (3, 3) or t.shape != (4, 4):
            raise ValueError(f"calibration of camera {camera!r}: need intrinsics 3x3 and world_from_camera 4x4, got "
                             f"{k.shape} and {t.shape}")
        out[intrinsics_key(camera)], out[extrinsics_key(camera)] = k, t
    return out


def depth_frames(readings: Mapping[str, SensorReading], calibration: Mapping[str, np.ndarray],
                 cameras: tuple[str, ...] | list[str]) -> list[DepthFrame]:
    """The :class:`perception.frames.DepthFrame` list for ``cameras`` from readings and calibration arrays.

    A camera without a reading this time is skipped (a dropped frame is not an error).

    Raises:
        KeyError: a camera has a reading but no calibration (the message names the missing key).
    """
    frames = []
    for camera in cameras:
        reading = readings.get(depth_key(camera))
        if reading is None:
            continue
        for key in (intrinsics_key(camera), extrinsics_key(camera)):
            if key not in calibration:
                raise KeyError(f"depth of camera {camera!r} arrived but its calibration {key!r} did not")
        frames.append(DepthFrame(camera, reading.data, calibration[intrinsics_key(camera)],
                                 calibration[extrinsics_key(camera)], reading.timestamp))
    return frames
