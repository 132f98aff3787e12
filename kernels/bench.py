"""Benchmarks of the kernels against Open3D and MuJoCo's renderer, on the same data in the same process.

``run_kernel_benchmarks(device, sizes)`` times every point-cloud op with our kernels and with Open3D
for each cloud size, and the batched renderer against MuJoCo's per-world renderer, prints one table
line per measurement and returns the figures as ``{name: value}`` (``scripts/bench.py kernels``
prints them as ``name: value`` lines and writes them to JSON). Ratios are oriented so that
> 1 means ours is faster (Open3D time / our time, our frames/s / MuJoCo frames/s). Times are the best
of up to five runs after a warm-up (which also compiles Warp modules). On a CUDA device our inputs are
handed over as CUDA tensors, so copies to and from the host are not timed; Open3D runs on the CPU.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mujoco
import numpy as np
import open3d as o3d
import warp as wp

from kernels import (
    BatchRenderer,
    TSDFVolume,
    chamfer_distance,
    depth_to_points,
    estimate_normals,
    farthest_point_sample,
    icp_point_to_plane,
    knn_search,
    radius_search,
    statistical_outlier_mask,
    transform_points,
    voxel_downsample,
)
from kernels._runtime import cpu_threads, resolve_device
from kernels.cameras import fovy_intrinsics

PUSHT_XML = Path(__file__).resolve().parent.parent / "sim" / "assets" / "pusht.xml"
_MOTION = np.array([[0.9980, -0.0523, 0.0349, 0.02], [0.0535, 0.9981, -0.0317, -0.01],
                    [-0.0332, 0.0335, 0.9989, 0.015], [0.0, 0.0, 0.0, 1.0]])


def _best_time(fn: Callable[[], Any], sync: Callable[[], None], budget: float = 1.5) -> float:
    """Seconds of the fastest call among up to five, after a warm-up call (which also compiles).

    Cheap calls are repeated (about ``budget`` seconds in all) so that a busy machine's hiccups do
    not decide the figure; calls slower than the budget run once more.
    """
    start = time.perf_counter()
    fn()
    sync()
    warm = time.perf_counter() - start
    repeats = max(1, min(5, int(budget / max(warm, 1e-6))))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - start)
    return best


def scene_cloud(n: int, seed: int = 0) -> np.ndarray:
    """``n`` points (float32, m) on a tabletop scene: a floor, two walls and three spheres, 1 mm noise."""
    rng = np.random.default_rng(seed)
    p = rng.uniform(-1.0, 1.0, (n, 3))
    kind = rng.integers(0, 6, n)
    p[kind == 0, 2] = -1.0
    p[kind == 1, 0] = -1.0
    p[kind == 2, 1] = -1.0
    for k, (centre, radius) in zip((3, 4, 5), (((0.3, 0.2, -0.6), 0.4), ((-0.4, 0.3, -0.7), 0.3), ((0.2, -0.5, -0.8), 0.2))):
        s = rng.normal(size=(int((kind == k).sum()), 3))
        p[kind == k] = radius * s / np.linalg.norm(s, axis=1, keepdims=True) + centre
    return (p + rng.normal(scale=0.001, size=p.shape)).astype(np.float32)


def _label(n: int) -> str:
    return f"{n // 1_000_000}M" if n % 1_000_000 == 0 else f"{n // 1000}k" if n % 1000 == 0 else str(n)


class _Bench:
    """Runs and records one ours-vs-reference comparison per call."""

    def __init__(self, device: str):
        self.device = resolve_device(device)
        self.figures: dict[str, float] = {}
        self._sync = (lambda: wp.synchronize_device(self.device)) if self.device.is_cuda else (lambda: None)

    def to_device(self, a: np.ndarray) -> Any:
        """Our input: NumPy on the CPU, a CUDA tensor on a GPU (host copies stay out of the timing)."""
        if self.device.is_cpu:
            return a
        import torch

        return torch.from_numpy(np.ascontiguousarray(a)).to(str(self.device))

    def compare(self, name: str, n: int, ours: Callable[[], Any], ref: Callable[[], Any]) -> None:
        t_ours = _best_time(ours, self._sync)
        t_ref = _best_time(ref, lambda: None)
        ratio = t_ref / t_ours
        print(f"{name:<22} {_label(n):>5}  ours {t_ours * 1e3:9.1f} ms   open3d {t_ref * 1e3:9.1f} ms   ratio {ratio:6.2f}")
        self.figures[f"{name}_{_label(n)}_ratio_vs_open3d"] = round(ratio, 3)
        self.figures[f"{name}_{_label(n)}_ms"] = round(t_ours * 1e3, 3)


def _point_cloud_ops(b: _Bench, n: int) -> None:
    pts = scene_cloud(n)
    dev = b.device.alias
    ours_pts = b.to_device(pts)
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pts.astype(np.float64)))
    tensor = o3d.core.Tensor(pts)

    side = int(np.sqrt(n))  # a square depth image of about n pixels (316 x 316 for 100k)
    rng = np.random.default_rng(1)
    depth = rng.uniform(0.5, 3.0, (side, side)).astype(np.float32)
    k = fovy_intrinsics(60.0, side, side)
    intr = o3d.camera.PinholeCameraIntrinsic(side, side, k[0, 0], k[1, 1], k[0, 2], k[1, 2])
    o3d_depth = o3d.geometry.Image(depth)
    ours_depth = b.to_device(depth)
    b.compare("depth_to_points", n, lambda: depth_to_points(ours_depth, k, world_from_camera=_MOTION, device=dev),
              lambda: o3d.geometry.PointCloud.create_from_depth_image(o3d_depth, intr, np.linalg.inv(_MOTION), depth_scale=1.0))

    moved = o3d.geometry.PointCloud(pcd)  # Open3D transforms in place: keep `pcd` as it is for the other ops
    ours_moved = b.to_device(np.empty_like(pts))  # ours writes into a kept buffer (out=), as Open3D into its cloud
    b.compare("transform_points", n, lambda: transform_points(ours_pts, _MOTION, out=ours_moved, device=dev),
              lambda: moved.transform(_MOTION))
    b.compare("voxel_downsample", n, lambda: voxel_downsample(ours_pts, 0.01, device=dev), lambda: pcd.voxel_down_sample(0.01))

    def o3d_knn():
        nns = o3d.core.nns.NearestNeighborSearch(tensor)
        nns.knn_index()
        return nns.knn_search(tensor, 10)

    b.compare("knn_k10", n, lambda: knn_search(ours_pts, ours_pts, 10, device=dev), o3d_knn)
    _mixed_knn(b, n, ours_pts, tensor)
    radius = float(np.sqrt(20.0 * 10.0 / (np.pi * n)))  # ~20 neighbours on the ~10 m^2 of surface

    def o3d_radius():
        nns = o3d.core.nns.NearestNeighborSearch(tensor)
        nns.fixed_radius_index(radius)
        return nns.fixed_radius_search(tensor, radius)

    b.compare("radius_search", n, lambda: radius_search(ours_pts, ours_pts, radius, device=dev), o3d_radius)

    with_normals = o3d.geometry.PointCloud(pcd)

    def o3d_normals():
        with_normals.estimate_normals(o3d.geometry.KDTreeSearchParamKNN(30))
        with_normals.orient_normals_towards_camera_location(np.array([0.0, 0.0, 2.0]))

    b.compare("normals_k30", n, lambda: estimate_normals(ours_pts, 30, viewpoint=(0.0, 0.0, 2.0), device=dev), o3d_normals)
    b.compare("outlier_removal_k20", n, lambda: statistical_outlier_mask(ours_pts, 20, 2.0, device=dev),
              lambda: pcd.remove_statistical_outlier(20, 2.0))
    b.compare("farthest_point_1024", n, lambda: farthest_point_sample(ours_pts, 1024, device=dev),
              lambda: pcd.farthest_point_down_sample(1024))

    other = scene_cloud(n, seed=1) @ _MOTION[:3, :3].T.astype(np.float32) + _MOTION[:3, 3].astype(np.float32)
    other_pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(other.astype(np.float64)))
    ours_other = b.to_device(other.astype(np.float32))
    b.compare("chamfer", n, lambda: chamfer_distance(ours_pts, ours_other, device=dev),
              lambda: (pcd.compute_point_cloud_distance(other_pcd), other_pcd.compute_point_cloud_distance(pcd)))

    normals = estimate_normals(pts, 30)
    target = o3d.geometry.PointCloud(pcd.points)
    target.normals = o3d.utility.Vector3dVector(normals.astype(np.float64))
    reg = o3d.pipelines.registration
    ours_normals = b.to_device(normals)
    b.compare("icp_point_to_plane", n,
              lambda: icp_point_to_plane(ours_other, ours_pts, 0.05, target_normals=ours_normals, device=dev),
              lambda: reg.registration_icp(other_pcd, target, 0.05, np.eye(4), reg.TransformationEstimationPointToPlane(),
                                           reg.ICPConvergenceCriteria(1e-6, 1e-6, 30)))


def _mixed_knn(b: _Bench, n: int, ours_pts: Any, tensor: Any) -> None:
    """kNN (k = 10) of ``n // 10`` queries, half on the scene's surfaces and half scattered through its volume.

    Prints ``knn_mixed_k10_<n>_ratio_vs_halves``: (time of the on-surface half alone + time of the
    off-surface half alone) / time of the mixed batch; 1 means mixing costs nothing, a grid sized
    from the majority gives far less. Also compared with Open3D on the mixed batch.
    """
    m = max(n // 10, 2)
    on = scene_cloud(m // 2, seed=2)
    off = np.random.default_rng(2).uniform(-1.0, 1.0, (m - m // 2, 3)).astype(np.float32)
    mixed = np.random.default_rng(3).permutation(np.concatenate([on, off]))
    dev = b.device.alias
    halves = [b.to_device(q) for q in (on, off)]
    t_half = [_best_time(lambda q=q: knn_search(ours_pts, q, 10, device=dev), b._sync) for q in halves]
    ours_mixed = b.to_device(mixed)

    def o3d_knn():
        nns = o3d.core.nns.NearestNeighborSearch(tensor)
        nns.knn_index()
        return nns.knn_search(o3d.core.Tensor(mixed), 10)

    b.compare("knn_mixed_k10", n, lambda: knn_search(ours_pts, ours_mixed, 10, device=dev), o3d_knn)
    ratio = sum(t_half) / (b.figures[f"knn_mixed_k10_{_label(n)}_ms"] * 1e-3)
    print(f"{'knn_mixed_k10':<22} {_label(n):>5}  on-surface half {t_half[0] * 1e3:.1f} ms + off-surface half "
          f"{t_half[1] * 1e3:.1f} ms   ratio vs halves {ratio:6.2f}")
    b.figures[f"knn_mixed_k10_{_label(n)}_ratio_vs_halves"] = round(ratio, 3)


def _tsdf(b: _Bench, n: int, resolution: int = 128, frames: int = 4) -> None:
    """Integrate ``frames`` depth images of about ``n`` pixels into a resolution^3 volume, then extract points."""
    side = int(np.sqrt(n))
    k = fovy_intrinsics(60.0, side, side)
    ys, xs = np.mgrid[0:side, 0:side]
    depths, poses = [], []
    for i in range(frames):  # a sphere of radius 0.5 at the origin, seen from 2 m at four azimuths
        a = 2 * np.pi * i / frames
        eye = np.array([2.0 * np.cos(a), 2.0 * np.sin(a), 0.3])
        fwd = -eye / np.linalg.norm(eye)
        right = np.cross(fwd, [0, 0, 1.0])
        right /= np.linalg.norm(right)
        pose = np.eye(4)
        pose[:3, :3] = np.stack([right, np.cross(fwd, right), fwd], axis=1)
        pose[:3, 3] = eye
        rays = np.stack([(xs - k[0, 2]) / k[0, 0], (ys - k[1, 2]) / k[1, 1], np.ones_like(xs, dtype=float)], -1)
        rw = rays @ pose[:3, :3].T
        bq = (rw * eye).sum(-1)
        disc = bq**2 - (rw * rw).sum(-1) * ((eye * eye).sum() - 0.25)
        t = (-bq - np.sqrt(np.maximum(disc, 0))) / (rw * rw).sum(-1)
        depths.append(np.where(disc > 0, t, 0.0).astype(np.float32))
        poses.append(pose)
    voxel = 1.2 / resolution
    vol = TSDFVolume((-0.6, -0.6, -0.6), (resolution,) * 3, voxel, 4 * voxel, device=b.device.alias)
    ours_depths = [b.to_device(d) for d in depths]

    def ours():
        vol.reset()
        for d, p in zip(ours_depths, poses):
            vol.integrate(d, k, p)
        return vol.extract_points()

    intr = o3d.camera.PinholeCameraIntrinsic(side, side, k[0, 0], k[1, 1], k[0, 2], k[1, 2])
    color = o3d.geometry.Image(np.zeros((side, side, 3), np.uint8))
    rgbds = [o3d.geometry.RGBDImage.create_from_color_and_depth(color, o3d.geometry.Image(d), depth_scale=1.0,
                                                                depth_trunc=10.0, convert_rgb_to_intensity=False)
             for d in depths]
    shift = np.eye(4)
    shift[:3, 3] = 0.6  # Open3D's uniform volume starts at its origin (0, 0, 0)

    def ref():
        v = o3d.pipelines.integration.UniformTSDFVolume(1.2, resolution, 4 * voxel,
                                                        o3d.pipelines.integration.TSDFVolumeColorType.NoColor)
        for r, p in zip(rgbds, poses):
            v.integrate(r, intr, np.linalg.inv(shift @ p))
        return v.extract_point_cloud()

    b.compare(f"tsdf_{resolution}cube_x{frames}", n, ours, ref)


def _renderer(b: _Bench, xml: Path, worlds: int, size: int, camera: str) -> None:
    model = mujoco.MjModel.from_xml_path(str(xml))
    rng = np.random.default_rng(0)
    datas = []
    for _ in range(worlds):
        d = mujoco.MjData(model)
        if model.nkey:
            mujoco.mj_resetDataKeyframe(model, d, 0)
        d.qpos[:2] += rng.uniform(-0.08, 0.08, 2)
        mujoco.mj_forward(model, d)
        datas.append(d)
    ours = BatchRenderer(model, [camera], size, size, num_worlds=worlds, device=b.device.alias)

    def render_ours():
        ours.update(datas)
        return ours.render(like="numpy" if b.device.is_cpu else "torch", copy=False)

    t_ours = _best_time(render_ours, b._sync)
    reference = mujoco.Renderer(model, size, size)
    timings = {}
    for mode in ("rgb", "depth", "segmentation"):
        reference.disable_depth_rendering()
        reference.disable_segmentation_rendering()
        if mode == "depth":
            reference.enable_depth_rendering()
        elif mode == "segmentation":
            reference.enable_segmentation_rendering()

        def render_mujoco():
            for d in datas:
                reference.update_scene(d, camera=camera)
                reference.render()

        timings[mode] = _best_time(render_mujoco, lambda: None)
    reference.close()
    fps_ours = worlds / t_ours
    fps_rgb = worlds / timings["rgb"]
    fps_all = worlds / sum(timings.values())
    tag = f"render_{worlds}x{size}"
    print(f"{tag:<22}  ours {fps_ours:8.0f} frames/s (depth+seg+rgb)   mujoco {fps_rgb:7.0f} frames/s rgb, "
          f"{fps_all:7.0f} frames/s rgb+depth+seg")
    b.figures[f"{tag}_fps"] = round(fps_ours, 1)
    b.figures[f"{tag}_ratio_vs_mujoco_rgb"] = round(fps_ours / fps_rgb, 3)
    b.figures[f"{tag}_ratio_vs_mujoco_rgb_depth_seg"] = round(fps_ours / fps_all, 3)


def run_kernel_benchmarks(device: str, sizes: list[int], *, render_worlds: int = 64, render_size: int = 96,
                          scene: str | Path | None = None, camera: str = "overhead") -> dict[str, float]:
    """Time our kernels against Open3D (each op, each cloud size) and the renderer against MuJoCo.

    Args:
        device: where our kernels run (``cpu``, ``cuda``, ``cuda:N``, ``auto``); Open3D and MuJoCo
            run as they do by default (Open3D on all CPU cores, MuJoCo through OpenGL).
        sizes: point-cloud sizes, e.g. ``[100_000, 1_000_000]``.
        render_worlds, render_size, camera: renderer benchmark: worlds, square image size, camera.
        scene: MJCF for the renderer benchmark; default ``sim/assets/pusht.xml`` (skipped if absent).

    Returns:
        ``{name: value}``: per op and size ``<op>_<size>_ratio_vs_open3d`` and ``<op>_<size>_ms``;
        ``render_<worlds>x<size>_fps`` and its ratios to MuJoCo (rgb only, and rgb + depth + seg).

    Raises:
        ValueError: for an unknown device or an empty/invalid ``sizes``.
    """
    if not sizes or any(int(s) < 1000 for s in sizes):
        raise ValueError(f"sizes must list cloud sizes >= 1000, got {sizes!r}")
    bench = _Bench(device)
    print(f"kernels benchmark on {bench.device} (warp {wp.__version__}, {cpu_threads()} CPU threads for Warp CPU launches; "
          f"open3d {o3d.__version__}, mujoco {mujoco.__version__})")
    for n in sizes:
        _point_cloud_ops(bench, int(n))
        _tsdf(bench, int(n))
    xml = Path(scene) if scene is not None else PUSHT_XML
    if xml.exists():
        _renderer(bench, xml, render_worlds, render_size, camera)
    else:
        print(f"renderer benchmark skipped: {xml} not found")
    return dict(bench.figures)
