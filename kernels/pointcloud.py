"""Point clouds from depth, rigid transforms, voxel down-sampling and farthest point sampling.

One Warp module. Points are ``(N, 3)`` in metres. The camera frame of a depth image is OpenCV's
(x right, y down, z forward); ``world_from_camera`` maps it to the world. Every function accepts
NumPy arrays, torch tensors or ``wp.array`` and returns the same kind; ``device`` picks where the
kernels run (``None``: follow the input, ``"auto"``: a GPU when there is one).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import warp as wp

from kernels._arrays import as_matrix, as_rigid, as_warp, is_torch, kind_of, positive, to_kind
from kernels._runtime import launch_chunks, launch_rows, reduction_slots, resolve_device

_BIG = wp.constant(1.0e30)
# Element-wise kernels give each CPU thread a block of this many points (a Warp CPU thread costs a
# few ns); a GPU runs one point per thread.
_CPU_BLOCK = 256
# Points per bucket of the CPU farthest point sampler.
_FPS_BUCKET = 32


# ----------------------------------------------------------------------------------------------
# Warp functions and kernels


@wp.func
def _pixel_valid(depth: wp.array2d(dtype=float), mask: wp.array2d(dtype=wp.bool), use_mask: int,
                 row: int, col: int, inv_scale: float, trunc: float) -> float:
    """Depth in metres at a pixel, or 0 when the pixel is masked out, missing or beyond ``trunc``."""
    z = depth[row, col] * inv_scale
    if z <= 0.0 or z > trunc:
        return 0.0
    if use_mask == 0:
        return z
    if mask[row, col]:
        return z
    return 0.0


@wp.kernel
def _depth_row_counts(depth: wp.array2d(dtype=float), mask: wp.array2d(dtype=wp.bool), use_mask: int,
                      inv_scale: float, trunc: float, stride: int, counts: wp.array(dtype=wp.int32), offset: int):
    # One thread per kept image row: a loop over the row costs far less than a thread per pixel.
    row = (wp.tid() + offset) * stride
    c = wp.int32(0)
    for col in range(0, depth.shape[1], stride):
        if _pixel_valid(depth, mask, use_mask, row, col, inv_scale, trunc) > 0.0:
            c += 1
    counts[wp.tid() + offset] = c


@wp.kernel
def _depth_points(depth: wp.array2d(dtype=float), mask: wp.array2d(dtype=wp.bool), use_mask: int,
                  inv_scale: float, trunc: float, stride: int, starts: wp.array(dtype=wp.int32),
                  fx: float, fy: float, cx: float, cy: float, world_from_camera: wp.mat44,
                  rgb: wp.array3d(dtype=wp.uint8), use_rgb: int,
                  points: wp.array(dtype=wp.vec3), colors: wp.array2d(dtype=wp.uint8), offset: int):
    r = wp.tid() + offset
    row = r * stride
    k = starts[r]
    y = (float(row) - cy) / fy
    for col in range(0, depth.shape[1], stride):
        z = _pixel_valid(depth, mask, use_mask, row, col, inv_scale, trunc)
        if z > 0.0:
            p = wp.vec3((float(col) - cx) * z / fx, y * z, z)
            points[k] = wp.transform_point(world_from_camera, p)
            if use_rgb != 0:
                for c in range(3):
                    colors[k, c] = rgb[row, col, c]
            k += 1


@wp.kernel
def _transform(points: wp.array(dtype=wp.vec3), m: wp.mat44, block: int, out: wp.array(dtype=wp.vec3), offset: int):
    b = wp.tid() + offset
    for i in range(b * block, wp.min((b + 1) * block, points.shape[0])):
        out[i] = wp.transform_point(m, points[i])


@wp.kernel
def _bounds(points: wp.array(dtype=wp.vec3), lo: wp.array(dtype=wp.vec3), hi: wp.array(dtype=wp.vec3),
            offset: int, chunk: int, spread: int):
    t = wp.tid()
    p = points[t + offset]
    s = chunk + t % spread
    wp.atomic_min(lo, s, p)
    wp.atomic_max(hi, s, p)


@wp.kernel
def _voxel_keys(points: wp.array(dtype=wp.vec3), origin: wp.vec3d, voxel: wp.float64, bits: int,
                keys: wp.array(dtype=wp.int64), order: wp.array(dtype=wp.int32), offset: int):
    i = wp.tid() + offset
    p = points[i]
    # Same double-precision arithmetic as Open3D: floor((p - min_bound + voxel / 2) / voxel).
    ix = wp.int64(wp.floor((wp.float64(p[0]) - origin[0]) / voxel))
    iy = wp.int64(wp.floor((wp.float64(p[1]) - origin[1]) / voxel))
    iz = wp.int64(wp.floor((wp.float64(p[2]) - origin[2]) / voxel))
    keys[i] = ix | (iy << wp.int64(bits)) | (iz << wp.int64(2 * bits))
    order[i] = i


@wp.kernel
def _segment_flags(keys: wp.array(dtype=wp.int64), flags: wp.array(dtype=wp.int32), offset: int):
    i = wp.tid() + offset
    flags[i] = wp.where(i == 0, 1, wp.where(keys[i] != keys[i - 1], 1, 0))


@wp.kernel
def _segment_starts(flags: wp.array(dtype=wp.int32), seg_end: wp.array(dtype=wp.int32),
                    starts: wp.array(dtype=wp.int32), offset: int):
    i = wp.tid() + offset
    if flags[i] != 0:
        starts[seg_end[i] - 1] = i


@wp.kernel
def _segment_mean(values: wp.array(dtype=wp.vec3), order: wp.array(dtype=wp.int32),
                  starts: wp.array(dtype=wp.int32), normalize: int,
                  out: wp.array(dtype=wp.vec3), offset: int):
    s = wp.tid() + offset
    acc = wp.vec3d(0.0, 0.0, 0.0)
    for j in range(starts[s], starts[s + 1]):
        v = values[order[j]]
        acc += wp.vec3d(wp.float64(v[0]), wp.float64(v[1]), wp.float64(v[2]))
    mean = acc / wp.float64(starts[s + 1] - starts[s])
    r = wp.vec3(float(mean[0]), float(mean[1]), float(mean[2]))
    if normalize != 0:
        length = wp.length(r)
        if length > 0.0:
            r = r / length
    out[s] = r


@wp.kernel
def _bucket_bounds(points: wp.array(dtype=wp.vec3), size: int, lo: wp.array(dtype=wp.vec3), hi: wp.array(dtype=wp.vec3),
                   offset: int):
    b = wp.tid() + offset
    n = points.shape[0]
    a = points[b * size]
    mn = a
    mx = a
    for j in range(b * size + 1, wp.min((b + 1) * size, n)):
        mn = wp.min(mn, points[j])
        mx = wp.max(mx, points[j])
    lo[b] = mn
    hi[b] = mx


@wp.kernel
def _fps_buckets(points: wp.array(dtype=wp.vec3), ids: wp.array(dtype=wp.int32), size: int,
                 lo: wp.array(dtype=wp.vec3), hi: wp.array(dtype=wp.vec3), start: int, count: int,
                 dist: wp.array(dtype=float), bucket_max: wp.array(dtype=float), bucket_arg: wp.array(dtype=wp.int32),
                 selected: wp.array(dtype=wp.int32)):
    # One thread, exact FPS over Morton-ordered points grouped in buckets with bounding boxes: a new
    # sample can only lower the distances of a bucket whose box is nearer than the bucket's largest
    # distance, so the other buckets are skipped. Ties go to the lowest original index, as in Open3D.
    n = points.shape[0]
    nb = lo.shape[0]
    for j in range(n):
        dist[j] = _BIG
    for b in range(nb):
        bucket_max[b] = _BIG
        bucket_arg[b] = b * size
    far = start  # a sorted position
    for k in range(count):
        selected[k] = ids[far]
        s = points[far]
        best = wp.float32(-1.0)
        best_pos = wp.int32(0)
        for b in range(nb):
            gap = wp.max(wp.max(lo[b] - s, s - hi[b]), wp.vec3(0.0))
            if wp.length_sq(gap) < bucket_max[b]:
                m = wp.float32(-1.0)
                arg = wp.int32(0)
                for j in range(b * size, wp.min((b + 1) * size, n)):
                    d = wp.min(dist[j], wp.length_sq(points[j] - s))
                    dist[j] = d
                    if d > m or (d == m and ids[j] < ids[arg]):
                        m = d
                        arg = j
                bucket_max[b] = m
                bucket_arg[b] = arg
            bm = bucket_max[b]
            if bm > best or (bm == best and ids[bucket_arg[b]] < ids[best_pos]):
                best = bm
                best_pos = bucket_arg[b]
        far = best_pos


@wp.kernel
def _fps_update(points: wp.array(dtype=wp.vec3), k: int, selected: wp.array(dtype=wp.int32),
                dist: wp.array(dtype=float), best: wp.array(dtype=float)):
    j = wp.tid()
    d = wp.min(dist[j], wp.length_sq(points[j] - points[selected[k - 1]]))
    dist[j] = d
    wp.atomic_max(best, k, d)


@wp.kernel
def _fps_pick(dist: wp.array(dtype=float), k: int, best: wp.array(dtype=float), selected: wp.array(dtype=wp.int32)):
    j = wp.tid()
    if dist[j] == best[k]:
        wp.atomic_min(selected, k, j)


# ----------------------------------------------------------------------------------------------
# Python wrappers


class DepthPoints(NamedTuple):
    """Result of ``depth_to_points``: points ``(M, 3)`` and, when RGB was given, colours ``(M, 3)`` uint8."""

    points: Any
    colors: Any | None


def _mat44(m: np.ndarray) -> wp.mat44:
    return wp.mat44(*np.asarray(m, dtype=np.float32).reshape(-1).tolist())


def depth_to_points(
    depth: Any,
    intrinsics: Any,
    *,
    world_from_camera: Any | None = None,
    mask: Any | None = None,
    rgb: Any | None = None,
    depth_scale: float = 1.0,
    depth_trunc: float = float("inf"),
    stride: int = 1,
    device: str | None = None,
) -> DepthPoints:
    """Back-project a depth image to 3D points with a pinhole camera.

    Args:
        depth: ``(H, W)`` depth along the optical axis; float in metres, or integer (e.g. uint16)
            divided by ``depth_scale``. Pixels with depth <= 0 are missing and skipped.
        intrinsics: 3x3 pinhole matrix ``[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]`` in pixels
            (pixel centres at integer coordinates, as OpenCV and Open3D).
        world_from_camera: optional 4x4 rigid pose of the OpenCV camera frame; default identity.
        mask: optional ``(H, W)`` bool; only True pixels are used.
        rgb: optional ``(H, W, 3)`` uint8 colours returned for the kept pixels.
        depth_scale: raw depth units per metre (1 for metres, 1000 for millimetres).
        depth_trunc: pixels farther than this (m) are skipped.
        stride: use every ``stride``-th row and column.

    Returns:
        ``DepthPoints(points (M, 3) float32, colors (M, 3) uint8 or None)``, in row-major pixel order.

    Raises:
        ValueError: on wrong shapes or dtypes, NaN/inf, an empty image, a non-rigid pose or bad scalars.
    """
    dev = resolve_device(device, depth)
    out_kind = kind_of(depth)
    d = as_warp(depth, "depth", dev, shape=(None, None), dtype=wp.float32, element="depth")
    h, w = d.shape
    k = as_matrix(intrinsics, "intrinsics", 3, 3)
    fx, fy, cx, cy = k[0, 0], k[1, 1], k[0, 2], k[1, 2]
    if fx <= 0 or fy <= 0 or not np.allclose(k[2], [0, 0, 1]):
        raise ValueError(f"intrinsics must be [[fx, 0, cx], [0, fy, cy], [0, 0, 1]] with fx, fy > 0, got {k.tolist()}")
    pose = np.eye(4) if world_from_camera is None else as_rigid(world_from_camera, "world_from_camera")
    scale = positive(depth_scale, "depth_scale")
    trunc = float(depth_trunc)
    if not trunc > 0:
        raise ValueError(f"depth_trunc must be > 0, got {depth_trunc!r}")
    stride = positive(stride, "stride", integer=True)
    m = wp.empty((1, 1), dtype=wp.bool, device=dev)
    if mask is not None:
        m = as_warp(mask, "mask", dev, shape=(h, w), dtype=wp.bool, element="bool")
    c = wp.empty((1, 1, 3), dtype=wp.uint8, device=dev)
    if rgb is not None:
        c = as_warp(rgb, "rgb", dev, shape=(h, w, 3), dtype=wp.uint8, element="uint8")

    rows_out = (h + stride - 1) // stride
    common = [d, m, int(mask is not None), 1.0 / scale, min(trunc, _BIG), stride]
    counts = wp.empty(rows_out, dtype=wp.int32, device=dev)
    launch_rows(_depth_row_counts, rows_out, [*common, counts], dev, min_split=512)
    starts = wp.empty(rows_out, dtype=wp.int32, device=dev)
    wp.utils.array_scan(counts, starts, inclusive=False)
    total = _last_sum(starts, counts)
    points = wp.empty(total, dtype=wp.vec3, device=dev)
    colors = wp.empty((total if rgb is not None else 1, 3), dtype=wp.uint8, device=dev)
    launch_rows(_depth_points, rows_out, [*common, starts, float(fx), float(fy), float(cx), float(cy), _mat44(pose),
                                          c, int(rgb is not None), points, colors], dev, min_split=512)
    return DepthPoints(to_kind(points, out_kind), to_kind(colors, out_kind) if rgb is not None else None)


def _last_sum(starts: wp.array, counts: wp.array) -> int:
    """``starts[-1] + counts[-1]`` (an exclusive scan's total); a zero-copy read on the CPU."""
    if starts.device.is_cpu:
        return int(starts.numpy()[-1]) + int(counts.numpy()[-1])
    n = starts.shape[0]
    return int(starts[n - 1 : n].numpy()[0] + counts[n - 1 : n].numpy()[0])


def transform_points(points: Any, transform: Any, *, out: Any | None = None, device: str | None = None) -> Any:
    """Apply a 4x4 transform (rotation/translation, or any affine map) to ``(N, 3)`` points.

    ``out``: an ``(N, 3)`` float32 array of the same kind and device as ``points`` to write into
    (no allocation; returned); it may be ``points`` itself (in place). Default: a new array.

    Raises:
        ValueError: on wrong shapes or dtypes, NaN/inf, an empty cloud, or an ``out`` of another
            shape, dtype or device.
    """
    dev = resolve_device(device, points)
    p = as_warp(points, "points", dev, shape=(None, 3), dtype=wp.vec3)
    m = as_matrix(transform, "transform", 4, 4)
    dst = wp.empty_like(p) if out is None else _out_buffer(out, p)
    block = _CPU_BLOCK if dev.is_cpu else 1
    launch_rows(_transform, (p.shape[0] + block - 1) // block, [p, _mat44(m), block, dst], dev, min_split=512)
    return out if out is not None else to_kind(dst, kind_of(points))


def _out_buffer(out: Any, like: wp.array) -> wp.array:
    """``out`` as a writable ``wp.array`` view of ``like``'s shape on its device (never a copy).

    Raises:
        ValueError: if ``out`` is not a contiguous float32 ``(N, 3)`` array on ``like``'s device.
    """
    n = like.shape[0]
    if isinstance(out, wp.array):
        ok = out.dtype in (wp.vec3, wp.float32) and out.device == like.device and out.is_contiguous
        view = out if out.dtype == wp.vec3 else None
        if ok and view is None and out.shape == (n, 3):
            view = wp.array(ptr=out.ptr, shape=n, dtype=wp.vec3, device=out.device, copy=False)
    elif is_torch(out):
        ok = str(out.dtype) == "torch.float32" and out.is_contiguous() and tuple(out.shape) == (n, 3)
        ok = ok and (out.device.type == "cpu") == like.device.is_cpu
        view = wp.from_torch(out, dtype=wp.vec3) if ok else None
    else:
        ok = isinstance(out, np.ndarray) and out.dtype == np.float32 and out.flags.c_contiguous and like.device.is_cpu
        view = wp.array(out, dtype=wp.vec3, device=like.device, copy=False) if ok and out.shape == (n, 3) else None
    if not ok or view is None or view.shape != (n,):
        raise ValueError(f"out must be a contiguous float32 ({n}, 3) array on {like.device}, got "
                         f"{type(out).__name__} {getattr(out, 'shape', None)} {getattr(out, 'dtype', None)}")
    return view


def _bounds_of(p: wp.array, dev: wp.context.Device) -> tuple[np.ndarray, np.ndarray]:
    n = p.shape[0]
    slots = reduction_slots(n, dev)
    lo = wp.full(slots, wp.vec3(_BIG, _BIG, _BIG), dtype=wp.vec3, device=dev)
    hi = wp.full(slots, wp.vec3(-_BIG, -_BIG, -_BIG), dtype=wp.vec3, device=dev)
    launch_chunks(_bounds, n, [p, lo, hi], dev, slots)
    return lo.numpy().min(axis=0).astype(np.float64), hi.numpy().max(axis=0).astype(np.float64)


class VoxelResult(NamedTuple):
    """Result of ``voxel_downsample``: one mean point per occupied voxel, plus averaged attributes."""

    points: Any
    colors: Any | None
    normals: Any | None


def voxel_downsample(
    points: Any,
    voxel_size: float,
    *,
    colors: Any | None = None,
    normals: Any | None = None,
    device: str | None = None,
) -> VoxelResult:
    """Replace the points in each occupied voxel by their mean, as Open3D's ``voxel_down_sample``.

    Voxels are cubes of edge ``voxel_size`` (m) anchored at ``min(points) - voxel_size / 2``, as in
    Open3D, so both put the same points together. Colours (float or uint8) and normals are averaged
    too; averaged normals are re-normalised. Output voxels are ordered by (z, y, x) voxel index.

    Raises:
        ValueError: on wrong shapes or dtypes, NaN/inf, an empty cloud, ``voxel_size <= 0``, or a
            voxel size so small that the cloud spans more than 2**21 voxels along an axis.
    """
    dev = resolve_device(device, points)
    out_kind = kind_of(points)
    p = as_warp(points, "points", dev, shape=(None, 3), dtype=wp.vec3)
    n = p.shape[0]
    size = positive(voxel_size, "voxel_size")
    cols = nrm = None
    color_uint8 = False
    if colors is not None:
        color_uint8 = str(getattr(colors, "dtype", "")).endswith("uint8")
        cols = as_warp(colors, "colors", dev, shape=(n, 3), dtype=wp.vec3, element="color")
    if normals is not None:
        nrm = as_warp(normals, "normals", dev, shape=(n, 3), dtype=wp.vec3)

    lo, hi = _bounds_of(p, dev)
    origin = lo - 0.5 * size
    span = int(np.floor(np.max((hi - origin) / size))) + 1
    if span >= 2**21:
        raise ValueError(f"voxel_size {size} is too small: the cloud spans {span} voxels along an axis (max 2**21)")
    bits = max(1, int(span).bit_length())
    keys = wp.empty(2 * n, dtype=wp.int64, device=dev)
    order = wp.empty(2 * n, dtype=wp.int32, device=dev)
    launch_rows(_voxel_keys, n, [p, wp.vec3d(*origin), wp.float64(size), bits, keys, order], dev)
    wp.utils.radix_sort_pairs(keys, order, n, end_bit=3 * bits)
    flags = wp.empty(n, dtype=wp.int32, device=dev)
    launch_rows(_segment_flags, n, [keys, flags], dev)
    seg_end = wp.empty(n, dtype=wp.int32, device=dev)
    wp.utils.array_scan(flags, seg_end, inclusive=True)
    m = int(seg_end[n - 1 : n].numpy()[0])
    starts = wp.full(m + 1, n, dtype=wp.int32, device=dev)
    launch_rows(_segment_starts, n, [flags, seg_end, starts], dev)

    def mean_of(values: wp.array, normalize: bool) -> wp.array:
        out = wp.empty(m, dtype=wp.vec3, device=dev)
        launch_rows(_segment_mean, m, [values, order, starts, int(normalize), out], dev)
        return out

    out_points = to_kind(mean_of(p, False), out_kind)
    out_colors = out_normals = None
    if cols is not None:
        mean_colors = mean_of(cols, False)
        if color_uint8:
            host = np.clip(np.rint(mean_colors.numpy()), 0, 255).astype(np.uint8)
            mean_colors = wp.array(host, dtype=wp.uint8, device=dev)
        out_colors = to_kind(mean_colors, out_kind)
    if nrm is not None:
        out_normals = to_kind(mean_of(nrm, True), out_kind)
    return VoxelResult(out_points, out_colors, out_normals)


def farthest_point_sample(points: Any, num_samples: int, *, start_index: int = 0, device: str | None = None) -> Any:
    """Pick ``num_samples`` indices by farthest point sampling, as Open3D's ``farthest_point_down_sample``.

    The first index is ``start_index``; each next one is the point farthest (Euclidean) from those
    already picked, ties going to the lowest index. Returns int32 indices ``(num_samples,)``.

    Raises:
        ValueError: on wrong shapes or dtypes, NaN/inf, an empty cloud, or ``num_samples`` outside
            ``[1, N]`` / ``start_index`` outside ``[0, N)``.
    """
    dev = resolve_device(device, points)
    p = as_warp(points, "points", dev, shape=(None, 3), dtype=wp.vec3)
    n = p.shape[0]
    count = positive(num_samples, "num_samples", integer=True)
    if count > n:
        raise ValueError(f"num_samples must be <= the number of points ({n}), got {count}")
    start = positive(start_index, "start_index", integer=True, allow_zero=True)
    if start >= n:
        raise ValueError(f"start_index must be < the number of points ({n}), got {start}")
    selected = wp.empty(count, dtype=wp.int32, device=dev)
    dist = wp.empty(n, dtype=float, device=dev)
    if dev.is_cpu:
        _fps_bucketed(p, start, count, dist, selected, dev)
    else:
        _fps_parallel(p, start, count, dist, selected, dev)
    return to_kind(selected, kind_of(points))


def _fps_bucketed(p: wp.array, start: int, count: int, dist: wp.array, selected: wp.array, dev: wp.context.Device) -> None:
    """CPU form of FPS: one thread over Morton-ordered buckets of points, skipping buckets a sample cannot change."""
    from kernels.neighbors import gather, spatial_order

    n = p.shape[0]
    order = spatial_order(p)
    sorted_points = gather(p, order)
    size = _FPS_BUCKET
    buckets = (n + size - 1) // size
    lo = wp.empty(buckets, dtype=wp.vec3, device=dev)
    hi = wp.empty(buckets, dtype=wp.vec3, device=dev)
    launch_rows(_bucket_bounds, buckets, [sorted_points, size, lo, hi], dev)
    position = np.empty(n, dtype=np.int32)
    position[order.numpy()] = np.arange(n, dtype=np.int32)
    bucket_max = wp.empty(buckets, dtype=float, device=dev)
    bucket_arg = wp.empty(buckets, dtype=wp.int32, device=dev)
    wp.launch(_fps_buckets, dim=1, inputs=[sorted_points, order, size, lo, hi, int(position[start]), count, dist,
                                           bucket_max, bucket_arg, selected], device=dev)


def _fps_parallel(p: wp.array, start: int, count: int, dist: wp.array, selected: wp.array, dev: wp.context.Device) -> None:
    """GPU form of FPS: two launches per sample (update + atomic max, then lowest index of the max)."""
    n = p.shape[0]
    dist.fill_(_BIG)
    selected.fill_(n)
    wp.copy(selected, wp.array([start], dtype=wp.int32, device=dev), count=1)
    best = wp.full(count, -1.0, dtype=float, device=dev)
    for k in range(1, count):
        wp.launch(_fps_update, dim=n, inputs=[p, k, selected, dist, best], device=dev)
        wp.launch(_fps_pick, dim=n, inputs=[dist, k, best, selected], device=dev)
