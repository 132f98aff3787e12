"""Depth back-projection, transforms, voxel down-sampling and FPS against Open3D and NumPy."""

from __future__ import annotations

import numpy as np
import open3d as o3d
import pytest
import torch
from scipy.spatial import cKDTree

from kernels import (
    depth_to_points,
    farthest_point_sample,
    transform_points,
    voxel_downsample,
)
from kernels.icp import _twist_to_matrix
from tests.kernels.conftest import surface_cloud

H, W = 48, 64
K = np.array([[60.0, 0.0, 31.5], [0.0, 58.0, 23.5], [0.0, 0.0, 1.0]])
POSE = _twist_to_matrix(np.array([0.3, -0.2, 0.5, 0.1, -0.4, 1.2]))  # world_from_camera


def _depth(rng: np.random.Generator) -> np.ndarray:
    d = rng.uniform(0.3, 2.5, (H, W)).astype(np.float32)
    d[rng.random((H, W)) < 0.2] = 0.0  # missing pixels
    return d


def _o3d_points(depth: np.ndarray, scale: float, trunc: float, stride: int) -> np.ndarray:
    intr = o3d.camera.PinholeCameraIntrinsic(W, H, K[0, 0], K[1, 1], K[0, 2], K[1, 2])
    pcd = o3d.geometry.PointCloud.create_from_depth_image(
        o3d.geometry.Image(depth), intr, np.linalg.inv(POSE), depth_scale=scale, depth_trunc=trunc, stride=stride
    )
    return np.asarray(pcd.points)


@pytest.mark.parametrize("stride", [1, 3])
def test_depth_to_points_matches_open3d(rng, device, stride):
    depth = _depth(rng)
    ours = depth_to_points(depth, K, world_from_camera=POSE, depth_trunc=2.0, stride=stride, device=device).points
    ref = _o3d_points(depth, 1.0, 2.0, stride)
    assert ours.shape == ref.shape  # same pixels kept, same row-major order
    np.testing.assert_allclose(ours, ref, atol=2e-5)


def test_depth_to_points_uint16_millimetres_matches_open3d(rng):
    depth_mm = (_depth(rng) * 1000).astype(np.uint16)
    ours = depth_to_points(depth_mm, K, world_from_camera=POSE, depth_scale=1000.0).points
    ref = _o3d_points(depth_mm, 1000.0, 1000.0, 1)
    np.testing.assert_allclose(ours, ref, atol=2e-5)


def test_depth_to_points_mask_and_colours_follow_the_pixels(rng):
    depth = _depth(rng)
    mask = rng.random((H, W)) < 0.5
    rgb = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    out = depth_to_points(depth, K, mask=mask, rgb=rgb)
    keep = mask & (depth > 0)
    rows, cols = np.nonzero(keep)
    z = depth[rows, cols]
    expected = np.stack([(cols - K[0, 2]) * z / K[0, 0], (rows - K[1, 2]) * z / K[1, 1], z], axis=1)
    np.testing.assert_allclose(out.points, expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(out.colors, rgb[rows, cols])


def test_transform_points_numpy_and_torch(rng, device):
    p = surface_cloud(rng, 5000)
    expected = p.astype(np.float64) @ POSE[:3, :3].T + POSE[:3, 3]
    np.testing.assert_allclose(transform_points(p, POSE, device=device), expected, atol=1e-5)
    out = transform_points(torch.from_numpy(p), torch.from_numpy(POSE), device=device)
    assert isinstance(out, torch.Tensor)
    np.testing.assert_allclose(out.cpu().numpy(), expected, atol=1e-5)


def test_transform_points_into_out_buffers(rng, device):
    # out= writes into the caller's buffer (also in place) and returns it; no new array.
    p = surface_cloud(rng, 5000)
    expected = p.astype(np.float64) @ POSE[:3, :3].T + POSE[:3, 3]
    t = torch.from_numpy(p.copy()).to(device)  # a copy: the in-place call below must not move p
    buf = torch.empty_like(t)
    assert transform_points(t, POSE, out=buf, device=device) is buf
    np.testing.assert_allclose(buf.cpu().numpy(), expected, atol=1e-5)
    assert transform_points(t, POSE, out=t, device=device) is t
    np.testing.assert_allclose(t.cpu().numpy(), expected, atol=1e-5)
    if device == "cpu":
        out = np.empty_like(p)
        assert transform_points(p, POSE, out=out) is out
        np.testing.assert_allclose(out, expected, atol=1e-5)
    with pytest.raises(ValueError, match=r"out must be a contiguous float32 \(5000, 3\) array"):
        transform_points(t, POSE, out=buf[:10], device=device)
    with pytest.raises(ValueError, match="out must be a contiguous float32"):
        transform_points(p, POSE, out=np.empty((5000, 3)), device="cpu")


@pytest.mark.parametrize("voxel", [0.05, 0.013])
def test_voxel_downsample_matches_open3d(rng, device, voxel):
    p = surface_cloud(rng, 30000)
    colors = rng.random((len(p), 3)).astype(np.float32)
    normals = rng.normal(size=(len(p), 3)).astype(np.float32)
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    ours = voxel_downsample(p, voxel, colors=colors, normals=normals, device=device)
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(p.astype(np.float64)))
    pcd.colors = o3d.utility.Vector3dVector(colors.astype(np.float64))
    pcd.normals = o3d.utility.Vector3dVector(normals.astype(np.float64))
    ref = pcd.voxel_down_sample(voxel)
    ref_p = np.asarray(ref.points)
    assert len(ours.points) == len(ref_p)
    # Pair each of our centroids with the nearest Open3D centroid: the pairing must be one-to-one and exact.
    dist, match = cKDTree(ref_p).query(ours.points.astype(np.float64))
    assert dist.max() < 1e-6 and len(np.unique(match)) == len(match)
    np.testing.assert_allclose(ours.colors, np.asarray(ref.colors)[match], atol=1e-5)
    ref_n = np.asarray(ref.normals)[match]
    ref_n /= np.maximum(np.linalg.norm(ref_n, axis=1, keepdims=True), 1e-12)
    np.testing.assert_allclose(ours.normals, ref_n, atol=1e-4)


def test_voxel_downsample_uint8_colours_stay_uint8(rng):
    p = rng.uniform(0, 1, (100, 3)).astype(np.float32)
    c = np.full((100, 3), 200, dtype=np.uint8)
    out = voxel_downsample(p, 10.0, colors=c)
    assert out.colors.dtype == np.uint8 and out.colors.shape == (1, 3) and (out.colors == 200).all()
    np.testing.assert_allclose(out.points[0], p.mean(0), atol=1e-6)


def _fps_reference(p: np.ndarray, m: int, start: int = 0) -> np.ndarray:
    dist = np.full(len(p), np.inf)
    picked = [start]
    for _ in range(m - 1):
        dist = np.minimum(dist, ((p - p[picked[-1]]) ** 2).sum(1))
        picked.append(int(np.argmax(dist)))
    return np.array(picked)


def test_farthest_point_sampling_matches_numpy_and_open3d(rng, device):
    p = surface_cloud(rng, 4000)
    ours = farthest_point_sample(p, 100, start_index=7, device=device)
    np.testing.assert_array_equal(ours, _fps_reference(p.astype(np.float64), 100, 7))
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(p.astype(np.float64)))
    ref = np.asarray(pcd.farthest_point_down_sample(100).points)
    ours0 = farthest_point_sample(p, 100, device=device)
    assert {tuple(r) for r in p[ours0].astype(np.float64)} == {tuple(r) for r in ref}


def test_fps_parallel_form_agrees_with_serial(rng):
    # The GPU algorithm (update + atomic max + lowest index) also runs on the CPU; it must pick the same points.
    import warp as wp

    from kernels.pointcloud import _fps_parallel

    p = surface_cloud(rng, 3000)
    arr = wp.array(p, dtype=wp.vec3, device="cpu")
    sel = wp.empty(50, dtype=wp.int32, device="cpu")
    _fps_parallel(arr, 0, 50, wp.empty(len(p), dtype=float, device="cpu"), sel, wp.get_device("cpu"))
    np.testing.assert_array_equal(sel.numpy(), farthest_point_sample(p, 50))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda p: voxel_downsample(p[:, :2], 0.1), r"points must have shape \(N, 3\)"),
        (lambda p: voxel_downsample(p.astype(np.int32), 0.1), "points must have a floating-point dtype"),
        (lambda p: voxel_downsample(np.where(np.arange(len(p))[:, None] == 3, np.nan, p), 0.1), "points contains NaN"),
        (lambda p: voxel_downsample(p[:0], 0.1), "points is empty"),
        (lambda p: voxel_downsample(p, 0.0), "voxel_size must be > 0"),
        (lambda p: voxel_downsample(p, 1e-9), "voxel_size .* is too small"),
        (lambda p: voxel_downsample(p, 0.1, colors=p[:5]), r"colors must have shape \(10, 3\)"),
        (lambda p: farthest_point_sample(p, 11), "num_samples must be <= the number of points"),
        (lambda p: farthest_point_sample(p, 2, start_index=10), "start_index must be <"),
        (lambda p: transform_points(p, np.eye(3)), r"transform must have shape \(4, 4\)"),
        (lambda p: transform_points(p, np.eye(4), device="cuda:7"), "device 'cuda:7' requested"),
        (lambda p: transform_points(p, np.eye(4), device="tpu"), "device 'tpu' is not"),
        (lambda p: transform_points("points", np.eye(4)), r"points must have shape \(N, 3\)"),
    ],
)
def test_point_ops_reject_bad_input(rng, call, message):
    p = rng.uniform(-1, 1, (10, 3)).astype(np.float32)
    with pytest.raises(ValueError, match=message):
        call(p)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"depth": np.zeros((4, 4, 1), np.float32)}, r"depth must have shape \(N, M\)"),
        ({"depth": np.full((4, 4), np.nan, np.float32)}, "depth contains NaN"),
        ({"depth": np.zeros((4, 4), bool)}, "depth must have a floating-point dtype"),
        ({"intrinsics": np.eye(4)}, r"intrinsics must have shape \(3, 3\)"),
        ({"intrinsics": np.diag([-1.0, 1.0, 1.0])}, "intrinsics must be"),
        ({"world_from_camera": np.diag([2.0, 1.0, 1.0, 1.0])}, "world_from_camera must hold a rotation"),
        ({"mask": np.ones((3, 4), bool)}, r"mask must have shape \(4, 4\)"),
        ({"mask": np.ones((4, 4), np.float32)}, "mask must have dtype bool"),
        ({"rgb": np.ones((4, 4, 3), np.float32)}, "rgb must have dtype uint8"),
        ({"depth_scale": 0}, "depth_scale must be > 0"),
        ({"stride": 0}, "stride must be > 0"),
    ],
)
def test_depth_to_points_rejects_bad_input(kwargs, message):
    args = {"depth": np.ones((4, 4), np.float32), "intrinsics": np.eye(3)} | kwargs
    depth, intr = args.pop("depth"), args.pop("intrinsics")
    with pytest.raises(ValueError, match=message):
        depth_to_points(depth, intr, **args)


def test_single_point_and_coincident_clouds():
    one = np.array([[1.0, -2.0, 3.0]], dtype=np.float32)
    np.testing.assert_allclose(voxel_downsample(one, 0.1).points, one)
    assert farthest_point_sample(one, 1).tolist() == [0]
    np.testing.assert_allclose(transform_points(one, POSE), one @ POSE[:3, :3].T + POSE[:3, 3], atol=1e-5)
    same = np.repeat(one, 40, axis=0)
    np.testing.assert_allclose(voxel_downsample(same, 0.01).points, one)
    assert farthest_point_sample(same, 3).tolist() == [0, 0, 0]  # every distance is 0: lowest index wins
    empty = depth_to_points(np.zeros((4, 5), np.float32), K)
    assert empty.points.shape == (0, 3)
