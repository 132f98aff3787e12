"""TSDF fusion of depth frames rendered by MuJoCo, checked against the scene's known geometry."""

from __future__ import annotations

import mujoco
import numpy as np
import pytest
from scipy.spatial import cKDTree

from kernels import TSDFVolume, camera_intrinsics, world_from_camera_cv

VOXEL = 0.005
H, W = 240, 320
CAMERAS = "".join(
    f'<camera name="c{i}" pos="{0.6 * np.cos(a):.4f} {0.6 * np.sin(a):.4f} 0.5" mode="targetbody" target="anchor" fovy="50"/>'
    for i, a in enumerate(np.linspace(0, 2 * np.pi, 6, endpoint=False))
)
SCENE = f"""<mujoco><worldbody>
  <geom name="floor" type="box" size="0.5 0.5 0.01" pos="0 0 -0.01"/>
  <body name="anchor" pos="0 0 0.05"><geom name="ball" type="sphere" size="0.08" pos="0.05 0.02 0.03"/></body>
  <geom name="cube" type="box" size="0.04 0.05 0.06" pos="-0.1 -0.08 0.06" euler="0 0 0.4"/>
  {CAMERAS}
</worldbody></mujoco>"""


class Scene:
    """The rendered scene and its exact signed distance (sphere, rotated box, floor plane z = 0)."""

    def __init__(self):
        self.model = mujoco.MjModel.from_xml_string(SCENE)
        self.data = mujoco.MjData(self.model)
        mujoco.mj_forward(self.model, self.data)
        self.ball = self.data.geom("ball").xpos.copy()
        self.cube = self.data.geom("cube").xpos.copy()
        self.cube_rot = self.data.geom("cube").xmat.reshape(3, 3).copy()

    def sdf(self, p: np.ndarray) -> np.ndarray:
        ball = np.linalg.norm(p - self.ball, axis=1) - 0.08
        e = np.abs((p - self.cube) @ self.cube_rot) - [0.04, 0.05, 0.06]
        cube = np.linalg.norm(np.maximum(e, 0), axis=1) + np.minimum(e.max(1), 0)
        return np.minimum(np.minimum(ball, cube), p[:, 2])

    def frames(self):
        renderer = mujoco.Renderer(self.model, H, W)
        renderer.enable_depth_rendering()
        try:
            for i in range(6):
                renderer.update_scene(self.data, camera=f"c{i}")
                depth = renderer.render().copy()
                depth[depth > 5.0] = 0.0  # background (far plane) = no measurement
                yield depth, camera_intrinsics(self.model, f"c{i}", H, W), world_from_camera_cv(self.model, self.data, f"c{i}")
        finally:
            renderer.close()


@pytest.fixture(scope="module")
def scene():
    return Scene()


@pytest.fixture(scope="module")
def frames(scene):
    return list(scene.frames())


def test_tsdf_surface_lies_on_the_rendered_geometry(scene, frames, device):
    vol = TSDFVolume((-0.25, -0.25, -0.05), (100, 100, 60), VOXEL, 4 * VOXEL, device=device)
    for depth, k, pose in frames:
        vol.integrate(depth, k, pose)
    pts, normals = vol.extract_points()
    assert len(pts) > 5000
    err = np.abs(scene.sdf(pts.astype(np.float64)))
    assert np.median(err) < 0.25 * VOXEL
    assert np.percentile(err, 95) < 0.6 * VOXEL
    # Normals point out of the surface: compare with the SDF gradient (finite differences).
    eps = 1e-4
    grad = np.stack([(scene.sdf(pts + eps * e) - scene.sdf(pts - eps * e)) / (2 * eps) for e in np.eye(3)], axis=1)
    grad /= np.maximum(np.linalg.norm(grad, axis=1, keepdims=True), 1e-9)
    assert np.mean((normals * grad).sum(1) > 0.9) > 0.9
    # Coverage: the ball's upper half, seen by every camera, is reconstructed everywhere.
    rng = np.random.default_rng(0)
    d = rng.normal(size=(2000, 3))
    d[:, 2] = np.abs(d[:, 2]) + 0.3
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    top = scene.ball + 0.08 * d
    gap, _ = cKDTree(pts).query(top)
    assert np.percentile(gap, 99) < 1.5 * VOXEL


def test_tsdf_reset_forgets_frames(frames):
    vol = TSDFVolume((-0.25, -0.25, -0.05), (50, 50, 30), 2 * VOXEL, 8 * VOXEL)
    depth, k, pose = frames[0]
    vol.integrate(depth, k, pose)
    assert len(vol.extract_points().points) > 0
    vol.reset()
    assert len(vol.extract_points().points) == 0


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: TSDFVolume((0, 0), (4, 4, 4), 0.01, 0.04), "origin must be 3 finite numbers"),
        (lambda: TSDFVolume((0, 0, 0), (4, 0, 4), 0.01, 0.04), r"dims\[1\] must be > 0"),
        (lambda: TSDFVolume((0, 0, 0), (4, 4, 4), -0.01, 0.04), "voxel_size must be > 0"),
        (lambda: TSDFVolume((0, 0, 0), (4, 4, 4), 0.01, 0.04).integrate(np.ones((4, 4)), np.eye(3), np.eye(3)),
         r"world_from_camera must have shape \(4, 4\)"),
        (lambda: TSDFVolume((0, 0, 0), (4, 4, 4), 0.01, 0.04).integrate(np.full((4, 4), np.nan), np.eye(3), np.eye(4)),
         "depth contains NaN"),
        (lambda: TSDFVolume((0, 0, 0), (4, 4, 4), 0.01, 0.04).extract_points(like="pandas"), "like must be"),
    ],
)
def test_tsdf_rejects_bad_input(make, message):
    with pytest.raises(ValueError, match=message):
        make()
