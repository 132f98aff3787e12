"""Pinhole cameras of MuJoCo models in the OpenCV convention the point-cloud kernels use.

MuJoCo cameras look along their -z axis with +y up; OpenCV cameras look along +z with +y down.
``world_from_camera_cv`` flips the y and z axes so a depth image rendered by MuJoCo (or by
``kernels.render``) back-projects with ``depth_to_points`` into world coordinates. Intrinsics follow
MuJoCo's vertical field of view ``fovy`` with square pixels and the principal point at the image
centre, pixel centres at integer coordinates.
"""

from __future__ import annotations

import mujoco
import numpy as np

# Rotation taking OpenCV camera axes to MuJoCo camera axes (x kept, y and z flipped).
CV_FROM_MUJOCO = np.diag([1.0, -1.0, -1.0])


def fovy_intrinsics(fovy_deg: float, height: int, width: int) -> np.ndarray:
    """Return the 3x3 pinhole matrix of a camera with vertical field of view ``fovy_deg`` (degrees).

    Raises:
        ValueError: if the angle is not in (0, 180) or the image size is not positive.
    """
    if not 0.0 < float(fovy_deg) < 180.0:
        raise ValueError(f"fovy must be in (0, 180) degrees, got {fovy_deg!r}")
    if int(height) <= 0 or int(width) <= 0:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    f = 0.5 * height / np.tan(np.deg2rad(fovy_deg) / 2.0)
    return np.array([[f, 0.0, (width - 1) / 2.0], [0.0, f, (height - 1) / 2.0], [0.0, 0.0, 1.0]])


def camera_id(model: mujoco.MjModel, camera: str | int) -> int:
    """Return the id of a camera given by name or id.

    Raises:
        ValueError: if the model has no such camera (the message lists the cameras it has).
    """
    if isinstance(camera, (int, np.integer)) and not isinstance(camera, bool):
        if 0 <= int(camera) < model.ncam:
            return int(camera)
    elif isinstance(camera, str):
        cid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, camera)
        if cid >= 0:
            return cid
    names = [mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_CAMERA, i) or str(i) for i in range(model.ncam)]
    raise ValueError(f"camera {camera!r} does not exist; the model has cameras {names}")


def camera_intrinsics(model: mujoco.MjModel, camera: str | int, height: int, width: int) -> np.ndarray:
    """Return the 3x3 pinhole matrix of a model camera for a ``height x width`` image.

    Raises:
        ValueError: for an unknown camera, or an orthographic camera (no pinhole model).
    """
    cid = camera_id(model, camera)
    if hasattr(model, "cam_projection") and int(model.cam_projection[cid]) != 0:
        raise ValueError(f"camera {camera!r} is orthographic; only perspective cameras are supported")
    return fovy_intrinsics(float(model.cam_fovy[cid]), height, width)


def mujoco_pose_to_cv(pos: np.ndarray, xmat: np.ndarray) -> np.ndarray:
    """Return the 4x4 world_from_camera (OpenCV axes) of a MuJoCo camera at ``pos`` with rotation ``xmat``."""
    m = np.eye(4)
    m[:3, :3] = np.asarray(xmat, dtype=np.float64).reshape(3, 3) @ CV_FROM_MUJOCO
    m[:3, 3] = pos
    return m


def world_from_camera_cv(model: mujoco.MjModel, data: mujoco.MjData, camera: str | int) -> np.ndarray:
    """Return the 4x4 world_from_camera (OpenCV axes) of a model camera in the current ``data`` state.

    Raises:
        ValueError: for an unknown camera.
    """
    cid = camera_id(model, camera)
    return mujoco_pose_to_cv(data.cam_xpos[cid], data.cam_xmat[cid])
