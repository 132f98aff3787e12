"""The block's pose from RGB through a reconstruction (issue 18): an oracle reconstruction (points back-projected from
the true rendered depth) recovers the true pose within 3 mm / 2 deg; a tiny untrained model runs without crashing;
bad inputs raise errors that name the problem."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from perception.frames import ColorFrame
from perception.object_points import Segmentation
from perception.protocol import Estimator, Prior
from perception.recon import ReconConfig, ReconModel
from perception.recon_estimator import ReconEstimator, ReconEstimatorConfig, downsampled, scaled_intrinsics
from sim.block_perception import SURFACE_SPACING, block_surface
from sim.pusht_geometry import wrap_angle
from sim.recon_scenes import SceneConfig, SceneRenderer
from tests.perception.recon_oracle import DepthOracle


@pytest.fixture(scope="module")
def scene():
    renderer = SceneRenderer(SceneConfig(image_size=64, n_views=4, shape_scale=[1.0, 1.0]))
    try:
        yield renderer.scene(3), block_surface(renderer.env.model, SURFACE_SPACING)
    finally:
        renderer.close()


def _frames(scene: dict) -> list[ColorFrame]:
    return [ColorFrame(f"cam{i}", scene["images"][i], scene["intrinsics"][i].astype(float),
                       scene["world_from_camera"][i].astype(float), timestamp=1.0) for i in range(len(scene["images"]))]


def _true_pose(scene: dict) -> np.ndarray:
    w, x, y, z = scene["block_pose"][3:]
    return np.array([*scene["block_pose"][:2], np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))])


def test_oracle_reconstruction_recovers_the_true_block_pose(scene):
    rows, (points, normals) = scene
    oracle = DepthOracle(rows["depth"])
    estimator = ReconEstimator(oracle, points, normals, segmentation=Segmentation((0.004, 0.045)))
    assert isinstance(estimator, Estimator)
    truth = _true_pose(rows)
    prior = Prior(time=1.0, pose=truth + np.array([0.01, -0.008, np.radians(6)]), height=rows["block_pose"][2])
    estimate = estimator.update(_frames(rows), prior)
    assert estimate is not None
    error_mm = 1e3 * np.linalg.norm(estimate.pose[:2] - truth[:2])
    error_deg = np.degrees(abs(wrap_angle(estimate.pose[2] - truth[2])))
    assert error_mm < 3.0 and error_deg < 2.0, (error_mm, error_deg)
    assert estimate.time == 1.0 and estimate.fitness >= 0.3 and len(estimator.last_points) >= 10
    assert estimator.update(_frames(rows), prior) is None  # the same frames again: already fitted
    assert oracle.calls == 1


def test_oracle_relocalises_without_a_prior_pose(scene):
    rows, (points, normals) = scene
    estimator = ReconEstimator(DepthOracle(rows["depth"]), points, normals)
    estimate = estimator.update(_frames(rows), Prior(time=1.0, height=rows["block_pose"][2]))
    truth = _true_pose(rows)
    assert estimate is not None
    assert 1e3 * np.linalg.norm(estimate.pose[:2] - truth[:2]) < 3.0
    assert np.degrees(abs(wrap_angle(estimate.pose[2] - truth[2]))) < 2.0


def test_tiny_untrained_model_returns_none_or_a_finite_pose(scene):
    rows, (points, normals) = scene
    torch.manual_seed(0)
    model = ReconModel(ReconConfig()).eval()  # recon_tiny, 32x32 views; the 64x64 frames are halved
    estimator = ReconEstimator(model, points, normals, ReconEstimatorConfig(input_size=32, query_scale=2))
    estimate = estimator.update(_frames(rows), Prior(time=1.0, pose=_true_pose(rows)))
    assert estimate is None or np.all(np.isfinite(estimate.pose))
    assert estimator.last_cloud.shape[1] == 3 and len(estimator.last_cloud) <= 4 * 64 * 64


def test_bad_inputs_raise_named_errors(scene):
    rows, (points, normals) = scene
    estimator = ReconEstimator(DepthOracle(rows["depth"]), points, normals)
    prior = Prior(time=1.0)
    with pytest.raises(ValueError, match="zero views"):
        estimator.update([], prior)
    frames = _frames(rows)
    frames[1].intrinsics = None
    with pytest.raises(ValueError, match="'cam1' has no 3x3 intrinsics"):
        estimator.update(frames, prior)
    frames = _frames(rows)
    frames[2] = dataclasses.replace(frames[2], image=frames[2].image[:32])
    with pytest.raises(ValueError, match="mixed image sizes"):
        estimator.update(frames, prior)
    small = ReconEstimator(DepthOracle(rows["depth"]), points, normals, ReconEstimatorConfig(input_size=48))
    with pytest.raises(ValueError, match="input_size"):
        small.update(_frames(rows), prior)
    with pytest.raises(ValueError, match="crop_radius"):
        ReconEstimatorConfig(crop_radius=0.0)


def test_downsampling_keeps_the_pixel_rays():
    k = np.array([[50.0, 0.0, 31.5], [0.0, 50.0, 31.5], [0.0, 0.0, 1.0]])
    frame = ColorFrame("c", np.full((64, 64, 3), 200, np.uint8), k, np.eye(4))
    half = downsampled(frame, 32)
    assert half.image.shape == (32, 32, 3) and np.all(half.image == 200)
    # the centre of big pixels (0..1) is at 0.5 -> small pixel 0: the same ray
    ray_big = np.linalg.inv(k) @ np.array([0.5, 0.5, 1.0])
    ray_small = np.linalg.inv(half.intrinsics) @ np.array([0.0, 0.0, 1.0])
    np.testing.assert_allclose(ray_big, ray_small, atol=1e-12)
    np.testing.assert_allclose(scaled_intrinsics(half.intrinsics, 2.0), k)
