"""Point-to-plane ICP against Open3D's registration_icp on the same clouds and normals."""

from __future__ import annotations

import numpy as np
import open3d as o3d
import pytest

from kernels import estimate_normals, icp_point_to_plane
from kernels.icp import _twist_to_matrix
from tests.kernels.conftest import surface_cloud

REG = o3d.pipelines.registration
TRUE = _twist_to_matrix(np.array([0.05, -0.04, 0.08, 0.04, -0.03, 0.02]))  # source_from_target


@pytest.fixture
def clouds(rng):
    target = surface_cloud(rng, 30000, noise=0.0)
    source = surface_cloud(rng, 20000, noise=0.0).astype(np.float64)
    source = source[source[:, 0] > -0.6]  # partial overlap: part of the target has no source points
    source = source @ TRUE[:3, :3].T + TRUE[:3, 3] + rng.normal(scale=0.002, size=source.shape)
    normals = estimate_normals(target, 30)
    return source.astype(np.float32), target, normals


def _open3d(source, target, normals, dist, kernel):
    s = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(source.astype(np.float64)))
    t = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(target.astype(np.float64)))
    t.normals = o3d.utility.Vector3dVector(normals.astype(np.float64))
    return REG.registration_icp(s, t, dist, np.eye(4), REG.TransformationEstimationPointToPlane(kernel),
                                REG.ICPConvergenceCriteria(1e-6, 1e-6, 30))


@pytest.mark.parametrize(("loss", "scale", "kernel"), [("l2", 1.0, REG.L2Loss()), ("tukey", 0.02, REG.TukeyLoss(0.02)),
                                                      ("huber", 0.01, REG.HuberLoss(0.01))])
def test_icp_matches_open3d(clouds, device, loss, scale, kernel):
    source, target, normals = clouds
    ours = icp_point_to_plane(source, target, 0.1, target_normals=normals, loss=loss, loss_scale=scale, device=device)
    ref = _open3d(source, target, normals, 0.1, kernel)
    np.testing.assert_allclose(ours.transformation, ref.transformation, atol=1e-5)
    assert ours.fitness == pytest.approx(ref.fitness, abs=2e-4)
    assert ours.inlier_rmse == pytest.approx(ref.inlier_rmse, rel=1e-3)
    assert ours.converged
    # and it found the true motion (target_from_source = inverse of TRUE)
    np.testing.assert_allclose(ours.transformation @ TRUE, np.eye(4), atol=2e-3)


def _open3d_from(source, target, normals, dist, init, iterations):
    s = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(source.astype(np.float64)))
    t = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(target.astype(np.float64)))
    t.normals = o3d.utility.Vector3dVector(normals.astype(np.float64))
    return REG.registration_icp(s, t, dist, init, REG.TransformationEstimationPointToPlane(),
                                REG.ICPConvergenceCriteria(1e-6, 1e-6, iterations))


def test_icp_tight_correspondence_distance_gives_partial_fitness(clouds):
    source, target, normals = clouds
    init = np.linalg.inv(TRUE)  # start aligned; 1 cm keeps only part of the pairs (target spacing ~2 cm)
    ours = icp_point_to_plane(source, target, 0.01, init=init, target_normals=normals)
    ref = _open3d_from(source, target, normals, 0.01, init, 30)
    assert 0.3 < ours.fitness < 0.95
    assert ours.fitness == pytest.approx(ref.fitness, abs=1e-3)
    assert ours.inlier_rmse == pytest.approx(ref.inlier_rmse, rel=1e-3)
    np.testing.assert_allclose(ours.transformation, ref.transformation, atol=1e-4)


def test_icp_zero_iterations_scores_the_initial_guess(clouds):
    source, target, normals = clouds
    far = source + np.float32(0.5)
    ours = icp_point_to_plane(far, target, 0.05, target_normals=normals, max_iterations=0)
    ref = _open3d_from(far, target, normals, 0.05, np.eye(4), 0)
    assert ours.iterations == 0 and not ours.converged
    np.testing.assert_array_equal(ours.transformation, np.eye(4))
    assert ours.fitness == pytest.approx(ref.fitness, abs=1e-6)
    assert ours.inlier_rmse == pytest.approx(ref.inlier_rmse, rel=1e-5)


def test_icp_estimates_target_normals_when_missing(clouds):
    source, target, _ = clouds
    res = icp_point_to_plane(source, target, 0.1)
    np.testing.assert_allclose(res.transformation @ TRUE, np.eye(4), atol=3e-3)
    assert res.fitness > 0.95


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"loss": "cauchyish"}, "loss must be one of"),
        ({"init": np.eye(3)}, r"init must have shape \(4, 4\)"),
        ({"init": np.diag([1.0, 1.0, -1.0, 1.0])}, "init must hold a rotation"),
        ({"target_normals": np.ones((5, 3), np.float32)}, r"target_normals must have shape \(40, 3\)"),
        ({"max_correspondence_distance": 0.0}, "max_correspondence_distance must be > 0"),
        ({"loss_scale": -1.0}, "loss_scale must be > 0"),
    ],
)
def test_icp_rejects_bad_input(rng, kwargs, message):
    p = rng.uniform(-1, 1, (40, 3)).astype(np.float32)
    args = {"max_correspondence_distance": 0.1} | kwargs
    with pytest.raises(ValueError, match=message):
        icp_point_to_plane(p, p, **args)


def _plane(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` points on the plane z = 0 (a table seen from above: every z exactly 0), float32."""
    p = np.zeros((n, 3), np.float32)
    p[:, :2] = rng.uniform(-0.4, 0.4, (n, 2))
    return p


def test_icp_on_an_exact_plane_solves_the_observable_directions(rng, device):
    # A tilted, lifted, spun copy of a table top: the plane fixes the height and the two tilts; the
    # in-plane slide and the spin about the normal are unobservable and stay at the initial guess.
    target = _plane(rng, 20000)
    motion = _twist_to_matrix(np.array([0.03, -0.02, 0.1, 0.01, -0.01, 0.03]))  # source_from_target
    source = (_plane(rng, 15000) @ motion[:3, :3].T + motion[:3, 3]).astype(np.float32)
    normals = np.tile(np.float32([0.0, 0.0, 1.0]), (len(target), 1))
    ours = icp_point_to_plane(source, target, 0.1, target_normals=normals, device=device)
    ref = _open3d(source, target, normals, 0.1, REG.L2Loss())
    assert ours.iterations > 0 and ours.converged and ours.degenerate_directions == 3
    # The source, moved by the result, lies on the plane z = 0: row z of (target_from_source @ motion),
    # as it does with Open3D's result (whose LDLT leaves the same three directions at zero).
    np.testing.assert_allclose((ours.transformation @ motion)[2], [0.0, 0.0, 1.0, 0.0], atol=1e-5)
    np.testing.assert_allclose((ours.transformation @ motion)[2], (ref.transformation @ motion)[2], atol=1e-5)
    # The spin about the normal (0.1 rad in the motion) is not observable and is left as it was.
    assert abs(ours.transformation[1, 0] - ours.transformation[0, 1]) / 2 < 1e-3
    assert ours.fitness == ref.fitness == 1.0
    # Point-to-point RMSE: the target's spacing, up to the (unobservable, unmoved) in-plane slide.
    assert ours.inlier_rmse == pytest.approx(ref.inlier_rmse, rel=0.02)


def test_icp_on_a_well_posed_scene_reports_no_degeneracy(clouds):
    source, target, normals = clouds
    assert icp_point_to_plane(source, target, 0.1, target_normals=normals).degenerate_directions == 0


def _shift(offset: np.ndarray) -> np.ndarray:
    m = np.eye(4)
    m[:3, 3] = offset
    return m


def test_icp_far_from_the_origin_matches_the_same_motion_near_it(clouds, device):
    # The same clouds and motion, once around the origin and once around (100, -50, 20) m.
    source, target, normals = clouds
    far = np.array([100.0, -50.0, 20.0])
    near = icp_point_to_plane(source, target, 0.1, target_normals=normals, device=device)
    moved = icp_point_to_plane((source + far).astype(np.float32), (target + far).astype(np.float32), 0.1,
                               target_normals=normals, device=device)
    local = _shift(-far) @ moved.transformation @ _shift(far)  # back to the frame of the near problem
    np.testing.assert_allclose(local, near.transformation, atol=5e-4)
    np.testing.assert_allclose(local @ TRUE, np.eye(4), atol=3e-3)
    assert moved.fitness == pytest.approx(near.fitness, abs=5e-3)
