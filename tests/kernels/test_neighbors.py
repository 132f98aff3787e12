"""HashGrid neighbour search, normals, outlier removal and Chamfer against SciPy and Open3D."""

from __future__ import annotations

import numpy as np
import open3d as o3d
import pytest
import torch
from scipy.spatial import cKDTree

from kernels import (
    NeighborSearch,
    chamfer_distance,
    estimate_normals,
    knn_search,
    radius_search,
    statistical_outlier_mask,
)
from kernels.neighbors import _CAP_CELLS
from tests.kernels.conftest import surface_cloud


def _clusters(rng: np.random.Generator) -> np.ndarray:
    """Two dense blobs 40 m apart plus sparse outliers: density varies by orders of magnitude."""
    a = rng.normal(scale=0.01, size=(3000, 3)) - 20.0
    b = rng.normal(scale=0.01, size=(3000, 3)) + 20.0
    c = rng.uniform(-30, 30, (50, 3))
    return np.concatenate([a, b, c]).astype(np.float32)


def _assert_knn_exact(points, queries, result, k):
    dist, idx = cKDTree(points.astype(np.float64)).query(queries.astype(np.float64), k)
    dist, idx = dist.reshape(len(queries), k), idx.reshape(len(queries), k)
    np.testing.assert_allclose(np.sqrt(result.sq_distances), dist, rtol=1e-5, atol=1e-6)
    assert np.all(np.diff(result.sq_distances, axis=1) >= 0)
    # Indices agree except where two neighbours are equally far (then either order is right).
    same = result.indices == idx
    tie = np.isclose(np.sqrt(result.sq_distances), dist, rtol=1e-6)
    assert np.all(same | tie)
    assert np.mean(same) > 0.999


@pytest.mark.parametrize("cloud", ["surface", "volume", "clusters"])
def test_knn_is_exact(rng, device, cloud):
    if cloud == "surface":
        p = surface_cloud(rng, 20000)
    elif cloud == "volume":
        p = rng.uniform(-2, -1, (20000, 3)).astype(np.float32)
    else:
        p = _clusters(rng)
    res = knn_search(p, p, 8, device=device)
    assert res.indices.dtype == np.int32 and res.indices.shape == (len(p), 8)
    assert np.all(res.indices[:, 0] == np.arange(len(p))) or np.all(res.sq_distances[:, 0] == 0)
    _assert_knn_exact(p, p, res, 8)


def test_knn_between_distant_clouds(rng):
    p = surface_cloud(rng, 5000)
    q = surface_cloud(rng, 300) + np.float32(7.0)  # every neighbour is metres away
    _assert_knn_exact(p, q, NeighborSearch(p).knn(q, 3), 3)


def test_knn_mixed_on_and_off_surface_queries(rng, device):
    # Two thirds of the queries on the surface (k-th distance ~1 cm), a third scattered through the
    # volume (~10 cm and up): exact, and answered in passes whose cells suit each query's scale. With
    # one cell size from the majority, a scattered query visited ~10^4-10^6 mostly empty cells (the
    # old ~7x cost); now no query is answered on cells under 1/_CAP_CELLS of its k-th distance.
    p = surface_cloud(rng, 20000)
    on, off = surface_cloud(rng, 3000), rng.uniform(-1.0, 1.0, (1500, 3)).astype(np.float32)
    queries = np.concatenate([on, off])[rng.permutation(4500)]
    search = NeighborSearch(p, device=device)
    res = search.knn(queries, 8)
    _assert_knn_exact(p, queries, res, 8)
    kth = cKDTree(p).query(queries, 8)[0][:, -1]
    passes = search.last_passes
    assert sum(q.answered for q in passes) == len(queries) and len(passes) >= 2
    assert passes[0].cell < passes[-1].cell  # finest first, the scattered tail on coarser cells
    assert (kth > _CAP_CELLS * passes[0].cell).sum() <= sum(q.answered for q in passes[1:])
    assert kth.max() <= _CAP_CELLS * passes[-1].cell


def test_knn_torch_in_torch_out(rng, device):
    p = torch.from_numpy(surface_cloud(rng, 3000))
    res = NeighborSearch(p, device=device).knn(p, 4)
    assert isinstance(res.indices, torch.Tensor) and res.indices.shape == (3000, 4)
    _assert_knn_exact(p.numpy(), p.numpy(), type(res)(res.indices.cpu().numpy(), res.sq_distances.cpu().numpy()), 4)


def test_radius_search_matches_scipy(rng, device):
    p = surface_cloud(rng, 20000)
    q = p[:500]
    res = radius_search(p, q, 0.03, device=device)
    ref = cKDTree(p).query_ball_point(q, 0.03)
    assert res.offsets.shape == (501,) and res.offsets[0] == 0
    for i in range(len(q)):
        got = res.indices[res.offsets[i] : res.offsets[i + 1]]
        assert sorted(got.tolist()) == sorted(ref[i])
        d = np.linalg.norm(p[got] - q[i], axis=1) ** 2
        np.testing.assert_allclose(res.sq_distances[res.offsets[i] : res.offsets[i + 1]], d, rtol=1e-4, atol=1e-9)


def test_radius_search_max_neighbors_keeps_nearest_sorted(rng):
    p = surface_cloud(rng, 20000)
    q = p[:300]
    res = NeighborSearch(p).radius(q, 0.05, max_neighbors=5)
    dist, _ = cKDTree(p).query(q, 5, distance_upper_bound=0.05)
    for i in range(len(q)):
        n = int(np.isfinite(dist[i]).sum())
        got = res.indices[res.offsets[i] : res.offsets[i + 1]]
        assert len(got) == n
        np.testing.assert_allclose(np.sqrt(res.sq_distances[res.offsets[i] : res.offsets[i + 1]]), dist[i, :n], atol=1e-6)


def test_normals_match_open3d(rng, device):
    p = surface_cloud(rng, 20000, noise=0.001)
    viewpoint = np.array([2.0, 1.5, 3.0])
    ours = estimate_normals(p, 30, viewpoint=viewpoint, device=device)
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(p.astype(np.float64)))
    pcd.estimate_normals(o3d.geometry.KDTreeSearchParamKNN(30))
    pcd.orient_normals_towards_camera_location(viewpoint)
    ref = np.asarray(pcd.normals)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    dots = (ours * ref).sum(1)
    assert np.mean(np.abs(dots) > 0.999) > 0.99  # same axis (up to sign) ...
    assert np.mean(dots > 0.999) > 0.99  # ... and the same side towards the viewpoint


def test_statistical_outliers_match_open3d(rng, device):
    p = np.concatenate([surface_cloud(rng, 20000), rng.uniform(-3, 3, (200, 3)).astype(np.float32)])
    ours = statistical_outlier_mask(p, 16, 1.5, device=device)
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(p.astype(np.float64)))
    _, kept = pcd.remove_statistical_outlier(16, 1.5)
    ref = np.zeros(len(p), dtype=bool)
    ref[kept] = True
    assert ours.dtype == np.bool_
    np.testing.assert_array_equal(ours, ref)
    assert ours[-200:].mean() < 0.2  # the scattered points are the outliers


def test_chamfer_matches_scipy(rng, device):
    a = surface_cloud(rng, 8000)
    b = surface_cloud(rng, 5000) + np.float32(0.05)
    res = chamfer_distance(a, b, device=device)
    d_ab, i_ab = cKDTree(b.astype(np.float64)).query(a.astype(np.float64))
    d_ba, _ = cKDTree(a.astype(np.float64)).query(b.astype(np.float64))
    np.testing.assert_allclose(res.distance, (d_ab**2).mean() + (d_ba**2).mean(), rtol=1e-5)
    np.testing.assert_allclose(res.sq_a_to_b, d_ab**2, rtol=1e-4, atol=1e-10)
    np.testing.assert_allclose(res.sq_b_to_a, d_ba**2, rtol=1e-4, atol=1e-10)
    assert np.mean(res.index_a_to_b == i_ab) > 0.999


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda p: knn_search(p, p, 0), "k must be > 0"),
        (lambda p: knn_search(p, p, 21), r"k must be <= the number of points \(20\)"),
        (lambda p: knn_search(p, p[:, :2], 2), r"queries must have shape \(N, 3\)"),
        (lambda p: knn_search(p, p * np.nan, 2), "queries contains NaN"),
        (lambda p: knn_search(p[:0], p, 2), "points is empty"),
        (lambda p: knn_search(p.astype(np.int64), p, 2), "points must have a floating-point dtype"),
        (lambda p: radius_search(p, p, -0.1), "radius must be > 0"),
        (lambda p: radius_search(p, p, 0.1, max_neighbors=0), "max_neighbors must be > 0"),
        (lambda p: estimate_normals(p, 2), r"k must be in \[3"),
        (lambda p: estimate_normals(p, 5, viewpoint=(0, 0)), "viewpoint must be 3 finite numbers"),
        (lambda p: statistical_outlier_mask(p, 5, -1.0), "std_ratio must be >= 0"),
        (lambda p: chamfer_distance(p, p[:0]), "points is empty"),
    ],
)
def test_neighbour_ops_reject_bad_input(rng, call, message):
    p = rng.uniform(-1, 1, (20, 3)).astype(np.float32)
    with pytest.raises(ValueError, match=message):
        call(p)


@pytest.mark.parametrize("n", [1, 2, 3])
def test_tiny_and_degenerate_clouds(n):
    p = np.array([[0.5, -2.0, 3.0], [0.6, -2.0, 3.0], [0.5, -1.9, 3.1]], dtype=np.float32)[:n]
    res = knn_search(p, p, n)
    _assert_knn_exact(p, p, res, n)
    far = np.array([[40.0, 40.0, 40.0]], dtype=np.float32)
    _assert_knn_exact(p, far, knn_search(p, far, 1), 1)
    assert radius_search(p, p, 0.2).offsets[-1] == n * n
    assert chamfer_distance(p, p).distance == 0.0
    assert statistical_outlier_mask(p, 1).all()
    same = np.repeat(p[:1], 50, axis=0)  # all points identical: zero extent, zero spacing
    res = knn_search(same, same[:3], 4)
    assert np.all(res.sq_distances == 0)
    if n == 3:
        normal = estimate_normals(p, 3, viewpoint=(0.0, 0.0, 10.0))
        np.testing.assert_allclose(np.abs(normal @ np.array([0.0, -1.0, 1.0]) / np.sqrt(2)), 1.0, atol=1e-5)
