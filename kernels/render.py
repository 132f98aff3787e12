"""Batched ray-cast rendering of MuJoCo scenes: depth, geom/body segmentation and Lambert RGB.

One Warp module. ``BatchRenderer`` builds one ``wp.Mesh`` per visible geom of an ``MjModel`` (in the
geom frame: primitives tessellated like MuJoCo's renderer, mesh geoms as they are), shared by every
world. Each step it takes geom and camera poses from one or many ``MjData`` (or from arrays, e.g.
a batched simulator), and one launch casts a ray through every pixel of every camera of every
world. Geoms are first binned to 8x8-pixel tiles by their bounding capsules; each ray is moved into
the frame of each geom of its tile and tested against that geom's BVH (boxes, whose mesh is the box
itself, by an exact slab test; spheres, capsules and cylinders are culled by the true shape, which
contains their tessellation). With 4 or more worlds, cameras fixed in the world reuse one render of
the geoms welded to the world (the "static layer") and each world traces only its moving geoms.
Cameras use MuJoCo's conventions (look along -z, +y up, vertical ``fovy``, square pixels, image row
0 at the top) and clip at MuJoCo's ``znear``/``zfar``.

Outputs per world, camera and pixel: depth along the optical axis (m; 0 where nothing is hit, the
"missing" value of ``depth_to_points``), the geom id and body id hit (-1 for background, like
MuJoCo's segmentation) and an RGB colour ``geom colour * (ambient + (1 - ambient) * max(0, n.l))``
under a headlight (uint8). ``world_from_camera_cv`` gives the pose that back-projects the depth.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import mujoco
import numpy as np
import warp as wp

from kernels._arrays import positive, to_kind
from kernels._runtime import launch_rows, resolve_device
from kernels.cameras import camera_id, mujoco_pose_to_cv
from kernels.geom_mesh import geom_mesh

# How a geom is intersected: its BVH (tessellated primitive or mesh), or an exact slab test for boxes
# (their mesh is the box itself, so the result is the same, about five times cheaper).
_MESH = wp.constant(0)
_BOX = wp.constant(1)
# Spheres, capsules and cylinders: their tessellation lies inside the capsule of radius halves[g][0]
# and half-length halves[g][1] about z, so a ray that misses that capsule misses the mesh (exact cull).
_ROUND = wp.constant(2)
# Pixels are binned in TILE x TILE tiles; a ray only visits the geoms that meet its tile's frustum.
TILE = 8
# With at least this many worlds, world-fixed cameras reuse one render of the world-fixed geoms.
_MIN_WORLDS_FOR_STATIC_LAYER = 4


@wp.func
def _box_hit(o: wp.vec3, d: wp.vec3, half: wp.vec3, max_t: float) -> wp.vec4:
    """Entry of ray o + t d (box frame) into the box |x| <= half: (normal, t); t < 0 when missed or beyond max_t."""
    t0 = wp.float32(-1.0e30)
    t1 = wp.float32(1.0e30)
    axis = wp.int32(-1)
    sign = wp.float32(0.0)
    for k in range(3):
        if wp.abs(d[k]) < 1.0e-12:
            if wp.abs(o[k]) > half[k]:
                return wp.vec4(0.0, 0.0, 0.0, -1.0)
        else:
            a = (-half[k] - o[k]) / d[k]
            b = (half[k] - o[k]) / d[k]
            s = -1.0
            if a > b:
                tmp = a
                a = b
                b = tmp
                s = 1.0
            if a > t0:
                t0 = a
                axis = k
                sign = s
            t1 = wp.min(t1, b)
    if t0 > t1 or t0 < 0.0 or t0 >= max_t or axis < 0:
        return wp.vec4(0.0, 0.0, 0.0, -1.0)
    n = wp.vec3(0.0)
    n[axis] = sign
    return wp.vec4(n[0], n[1], n[2], t0)


@wp.func
def _segments_dist2(p1: wp.vec3, d1: wp.vec3, p2: wp.vec3, d2: wp.vec3) -> float:
    """Squared distance between segments p1 + s d1 and p2 + t d2, s, t in [0, 1] (Ericson 5.1.9)."""
    r = p1 - p2
    a = wp.dot(d1, d1)
    e = wp.dot(d2, d2)
    f = wp.dot(d2, r)
    s = wp.float32(0.0)
    t = wp.float32(0.0)
    if e <= 1.0e-20:
        s = wp.clamp(-wp.dot(d1, r) / a, 0.0, 1.0)
    else:
        c = wp.dot(d1, r)
        b = wp.dot(d1, d2)
        denom = a * e - b * b
        if denom > 1.0e-20:
            s = wp.clamp((b * f - c * e) / denom, 0.0, 1.0)
        t = (b * s + f) / e
        if t < 0.0:
            t = 0.0
            s = wp.clamp(-c / a, 0.0, 1.0)
        elif t > 1.0:
            t = 1.0
            s = wp.clamp((b - c) / a, 0.0, 1.0)
    return wp.length_sq((p1 + s * d1) - (p2 + t * d2))


@wp.func
def _aabb_enters(o: wp.vec3, d: wp.vec3, lo: wp.vec3, hi: wp.vec3, max_t: float) -> bool:
    """Whether ray o + t d meets the box [lo, hi] for some t in [0, max_t)."""
    t0 = wp.float32(0.0)
    t1 = max_t
    for k in range(3):
        inv = 1.0 / d[k]
        a = (lo[k] - o[k]) * inv
        b = (hi[k] - o[k]) * inv
        t0 = wp.max(t0, wp.min(a, b))
        t1 = wp.min(t1, wp.max(a, b))
    return t0 <= t1


@wp.func
def _outside(a: wp.vec3, b: wp.vec3, slope: float, axis: int, r: float, keep_above: float) -> bool:
    """Whether the capsule a-b (camera frame, radius r) lies wholly beyond the plane x_axis = -slope z."""
    norm = wp.sqrt(1.0 + slope * slope)
    sa = keep_above * (a[axis] + slope * a[2]) / norm
    sb = keep_above * (b[axis] + slope * b[2]) / norm
    return wp.max(sa, sb) < -r


@wp.kernel
def _bin_tiles(bound_mid: wp.array(dtype=wp.vec3), bound_axis: wp.array(dtype=wp.vec3), bound_radius: wp.array(dtype=float),
               dynamic: wp.array(dtype=wp.int32), static_on: wp.array2d(dtype=wp.int32),
               static_pass: int, geom_pos: wp.array2d(dtype=wp.vec3), geom_rot: wp.array2d(dtype=wp.mat33),
               cam_pos: wp.array2d(dtype=wp.vec3),
               cam_rot: wp.array2d(dtype=wp.mat33), cam_f: wp.array(dtype=float), height: int, width: int, tile: int,
               znear: float, zfar: float, lists: wp.array3d(dtype=wp.int32), keys: wp.array3d(dtype=float),
               counts: wp.array2d(dtype=wp.int32), offset: int):
    # One row per (world, camera, tile): the geoms whose bounding sphere meets the tile's frustum,
    # sorted nearest first so that near hits cut the ray short for the geoms behind them. The static
    # pass bins only geoms welded to the world; a (world, camera) that reuses the static layer bins
    # only the moving geoms.
    row = wp.tid() + offset
    ncam = cam_pos.shape[1]
    tiles_x = (width + tile - 1) // tile
    tiles = tiles_x * ((height + tile - 1) // tile)
    t = row % tiles
    wc = row // tiles
    c = wc % ncam
    w = wc // ncam
    f = cam_f[c]
    cx = 0.5 * float(width - 1)
    cy = 0.5 * float(height - 1)
    u0 = (t % tiles_x) * tile
    v0 = (t // tiles_x) * tile
    u1 = wp.min(u0 + tile, width)
    v1 = wp.min(v0 + tile, height)
    # Tile edges as slopes x / depth and y / depth (image y points down, camera y up).
    a0 = (float(u0) - 0.5 - cx) / f
    a1 = (float(u1) - 0.5 - cx) / f
    b0 = -(float(v1) - 0.5 - cy) / f
    b1 = -(float(v0) - 0.5 - cy) / f
    rt = wp.transpose(cam_rot[w, c])
    o = cam_pos[w, c]
    n = wp.int32(0)
    skip_static = static_on[w, c] != 0 and static_pass == 0
    for g in range(bound_radius.shape[0]):
        if (static_pass != 0 and dynamic[g] != 0) or (skip_static and dynamic[g] == 0):
            continue
        # The geom's bounding capsule (segment mid +- axis, radius r) in the camera frame.
        rg = geom_rot[w, g]
        p = rt * (geom_pos[w, g] + rg * bound_mid[g] - o)
        half = rt * (rg * bound_axis[g])
        a = p - half
        b = p + half
        r = bound_radius[g]
        # depth = -z; near/far planes, then x >= a0 * depth, x <= a1 * depth, y >= b0 * depth, y <= b1 * depth
        if wp.max(-a[2], -b[2]) + r < znear or wp.min(-a[2], -b[2]) - r > zfar:
            continue
        if _outside(a, b, a0, 0, r, 1.0) or _outside(a, b, a1, 0, r, -1.0):
            continue
        if _outside(a, b, b0, 1, r, 1.0) or _outside(a, b, b1, 1, r, -1.0):
            continue
        r = r + wp.length(half)
        key = wp.length(p) - r
        k = n
        n += 1
        while k > 0:
            if keys[wc, t, k - 1] <= key:
                break
            keys[wc, t, k] = keys[wc, t, k - 1]
            lists[wc, t, k] = lists[wc, t, k - 1]
            k -= 1
        keys[wc, t, k] = key
        lists[wc, t, k] = g
    counts[wc, t] = n


@wp.func
def _trace_pixel(meshes: wp.array(dtype=wp.uint64), kinds: wp.array(dtype=wp.int32), halves: wp.array(dtype=wp.vec3),
                 lows: wp.array(dtype=wp.vec3), highs: wp.array(dtype=wp.vec3),
                 radii: wp.array(dtype=float), colors: wp.array(dtype=wp.vec3),
                 geom_ids: wp.array(dtype=wp.int32), body_ids: wp.array(dtype=wp.int32),
                 geom_pos: wp.array2d(dtype=wp.vec3), geom_rot: wp.array2d(dtype=wp.mat33),
                 lists: wp.array3d(dtype=wp.int32), counts: wp.array2d(dtype=wp.int32), w: int, wc: int, t: int,
                 layered: bool, pix: int, static_depth: wp.array(dtype=float), static_geom: wp.array(dtype=wp.int32),
                 static_body: wp.array(dtype=wp.int32), static_rgb: wp.array2d(dtype=wp.uint8),
                 start: wp.vec3, d: wp.vec3, znear: float, zfar: float, ambient: float, out: int,
                 depth: wp.array(dtype=float), seg_geom: wp.array(dtype=wp.int32), seg_body: wp.array(dtype=wp.int32),
                 rgb: wp.array2d(dtype=wp.uint8)):
    """Cast the ray start + t d (t = depth - znear) and write pixel `out` of the outputs."""
    dd = wp.dot(d, d)
    best = zfar - znear
    hit = wp.int32(-1)
    normal = wp.vec3(0.0)
    # A camera fixed in the world sees the same static geoms in every world: start from that layer.
    if layered and static_geom[pix] >= 0:
        best = static_depth[pix] - znear
    # Only the geoms binned to this pixel's tile (see _bin_tiles), nearest first.
    for k in range(counts[wc, t]):
        g = lists[wc, t, k]
        oc = start - geom_pos[w, g]
        b = wp.dot(oc, d)
        cc = wp.dot(oc, oc) - radii[g] * radii[g]
        disc = b * b - dd * cc
        if disc >= 0.0:
            root = wp.sqrt(disc)
            if (-b + root) / dd >= 0.0 and (-b - root) / dd < best:
                rg = geom_rot[w, g]
                rt = wp.transpose(rg)
                if kinds[g] == _BOX:
                    r = _box_hit(rt * oc, rt * d, halves[g], best)
                    if r[3] >= 0.0:
                        best = r[3]
                        hit = g
                        normal = rg * wp.vec3(r[0], r[1], r[2])
                elif _aabb_enters(rt * oc, rt * d, lows[g], highs[g], best):
                    ol = rt * oc
                    dl = rt * d
                    miss = False
                    if kinds[g] == _ROUND:
                        rh = halves[g]
                        axis = wp.vec3(0.0, 0.0, rh[1])
                        reach = rh[0] * 1.0001 + 1.0e-6
                        miss = _segments_dist2(ol, best * dl, -axis, 2.0 * axis) > reach * reach
                    if not miss:
                        q = wp.mesh_query_ray(meshes[g], ol, dl, best)
                        if q.result and q.t < best:
                            best = q.t
                            hit = g
                            normal = rg * q.normal
    if hit < 0:
        if layered:
            depth[out] = static_depth[pix]
            seg_geom[out] = static_geom[pix]
            seg_body[out] = static_body[pix]
            for k in range(3):
                rgb[out, k] = static_rgb[pix, k]
            return
        depth[out] = 0.0
        seg_geom[out] = -1
        seg_body[out] = -1
        for k in range(3):
            rgb[out, k] = wp.uint8(0)
        return
    depth[out] = znear + best
    seg_geom[out] = geom_ids[hit]
    seg_body[out] = body_ids[hit]
    n = wp.normalize(normal)
    if wp.dot(n, d) > 0.0:
        n = -n
    lambert = wp.max(0.0, -wp.dot(n, d) / wp.sqrt(dd))
    shade = ambient + (1.0 - ambient) * lambert
    col3 = colors[hit] * shade
    for k in range(3):
        rgb[out, k] = wp.uint8(wp.clamp(col3[k] * 255.0 + 0.5, 0.0, 255.0))


@wp.kernel
def _raycast(meshes: wp.array(dtype=wp.uint64), kinds: wp.array(dtype=wp.int32), halves: wp.array(dtype=wp.vec3),
             lows: wp.array(dtype=wp.vec3), highs: wp.array(dtype=wp.vec3),
             radii: wp.array(dtype=float), colors: wp.array(dtype=wp.vec3),
             geom_ids: wp.array(dtype=wp.int32), body_ids: wp.array(dtype=wp.int32),
             geom_pos: wp.array2d(dtype=wp.vec3), geom_rot: wp.array2d(dtype=wp.mat33),
             cam_pos: wp.array2d(dtype=wp.vec3), cam_rot: wp.array2d(dtype=wp.mat33), cam_f: wp.array(dtype=float),
             lists: wp.array3d(dtype=wp.int32), counts: wp.array2d(dtype=wp.int32),
             static_on: wp.array2d(dtype=wp.int32), static_pass: int, static_depth: wp.array(dtype=float),
             static_geom: wp.array(dtype=wp.int32), static_body: wp.array(dtype=wp.int32),
             static_rgb: wp.array2d(dtype=wp.uint8),
             height: int, width: int, tile: int, znear: float, zfar: float, ambient: float,
             depth: wp.array(dtype=float), seg_geom: wp.array(dtype=wp.int32), seg_body: wp.array(dtype=wp.int32),
             rgb: wp.array2d(dtype=wp.uint8), offset: int):
    # One thread per image row of one (world, camera): rays of a row differ by a constant step.
    row = wp.tid() + offset
    ncam = cam_pos.shape[1]
    line = row % height
    wc = row // height
    c = wc % ncam
    w = wc // ncam
    f = cam_f[c]
    rot = cam_rot[w, c]
    # Ray through pixel (line, col) centre: camera-frame z is -1, so the hit parameter t is the depth.
    d0 = rot * wp.vec3(-0.5 * float(width - 1) / f, -(float(line) - 0.5 * float(height - 1)) / f, -1.0)
    dx = rot * wp.vec3(1.0 / f, 0.0, 0.0)
    o = cam_pos[w, c]
    layered = static_on[w, c] != 0 and static_pass == 0
    t_row = (line // tile) * ((width + tile - 1) // tile)
    for col in range(width):
        d = d0 + float(col) * dx
        _trace_pixel(meshes, kinds, halves, lows, highs, radii, colors, geom_ids, body_ids, geom_pos, geom_rot,
                     lists, counts, w, wc, t_row + col // tile, layered, (c * height + line) * width + col,
                     static_depth, static_geom, static_body, static_rgb, o + znear * d, d, znear, zfar, ambient,
                     row * width + col, depth, seg_geom, seg_body, rgb)


def _bounding_capsule(vertices: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """A capsule holding every vertex: (segment midpoint, half segment along the box's longest axis, radius).

    Taken about the vertices' bounding box: for long thin geoms (arm links) it is much tighter than
    a sphere, so fewer image tiles list them.
    """
    lo, hi = vertices.min(axis=0), vertices.max(axis=0)
    mid = 0.5 * (lo + hi)
    axis = np.zeros(3)
    k = int(np.argmax(hi - lo))
    rest = np.delete(hi - lo, k)
    radius = 0.5 * float(np.linalg.norm(rest))
    axis[k] = max(0.0, 0.5 * float(hi[k] - lo[k]) - radius)
    rel = vertices - mid
    t = np.clip(rel[:, k], -axis[k], axis[k])
    closest = np.zeros_like(rel)
    closest[:, k] = t
    radius = float(np.linalg.norm(rel - closest, axis=1).max()) * 1.0001 + 1e-6
    return mid, axis, radius


def _intersector(model: mujoco.MjModel, geom: int) -> tuple[int, np.ndarray]:
    """How the ray kernel treats a geom: (kind, parameters) for _BOX (half sizes) or _ROUND (radius, half-length)."""
    kind, size = int(model.geom_type[geom]), np.asarray(model.geom_size[geom], dtype=np.float64)
    if kind == mujoco.mjtGeom.mjGEOM_BOX:
        return 1, size
    if kind == mujoco.mjtGeom.mjGEOM_SPHERE:
        return 2, np.array([size[0], 0.0, 0.0])
    if kind in (mujoco.mjtGeom.mjGEOM_CAPSULE, mujoco.mjtGeom.mjGEOM_CYLINDER):
        return 2, np.array([size[0], size[1], 0.0])  # a cylinder lies inside the capsule of its size
    return 0, np.zeros(3)


class RenderOutput(NamedTuple):
    """Rendered images, indexed ``[world, camera, row, column]``.

    ``depth`` float32 (m, 0 = nothing hit), ``geom`` and ``body`` int32 ids (-1 = background),
    ``rgb`` uint8 with a trailing channel axis.
    """

    depth: Any
    geom: Any
    body: Any
    rgb: Any


def default_geom_groups() -> tuple[int, ...]:
    """Geom groups MuJoCo renders by default (``mjvOption.geomgroup``: groups 0, 1 and 2)."""
    opt = mujoco.MjvOption()
    return tuple(int(g) for g in np.nonzero(np.asarray(opt.geomgroup))[0])


def geom_color(model: mujoco.MjModel, geom: int) -> np.ndarray:
    """RGBA MuJoCo draws a geom with: its material's colour when it has one and its own rgba is the default."""
    rgba = np.asarray(model.geom_rgba[geom], dtype=np.float64)
    mat = int(model.geom_matid[geom])
    if mat >= 0 and np.allclose(rgba, [0.5, 0.5, 0.5, 1.0]):
        rgba = np.asarray(model.mat_rgba[mat], dtype=np.float64)
    return rgba


class BatchRenderer:
    """Renders ``num_worlds`` copies of a MuJoCo model through several cameras in one Warp launch.

    Args:
        model: the ``MjModel``; its geoms (selected by ``geom_groups``, alpha > 0) become meshes.
        cameras: model camera names or ids, rendered in this order.
        height, width: image size in pixels.
        num_worlds: how many worlds (``MjData``) each ``update`` supplies.
        geom_groups: geom groups to draw; default MuJoCo's default visible groups (0, 1, 2).
        ambient: ambient share of the shading in [0, 1].
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``auto``.

    Raises:
        ValueError: for a camera that does not exist, an orthographic camera, a bad size or count,
            or a model with no visible geom.
    """

    def __init__(self, model: mujoco.MjModel, cameras: Sequence[str | int], height: int, width: int, *,
                 num_worlds: int = 1, geom_groups: Sequence[int] | None = None, ambient: float = 0.3,
                 device: str | None = None):
        self.device = resolve_device(device)
        self.model = model
        if isinstance(cameras, (str, int)):
            cameras = [cameras]
        if len(cameras) == 0:
            raise ValueError("cameras must list at least one camera")
        self.camera_ids = np.array([camera_id(model, c) for c in cameras], dtype=np.int32)
        for c, cid in zip(cameras, self.camera_ids):
            if int(model.cam_projection[cid]) != 0:
                raise ValueError(f"camera {c!r} is orthographic; only perspective cameras are supported")
        self.height = positive(height, "height", integer=True)
        self.width = positive(width, "width", integer=True)
        self.num_worlds = positive(num_worlds, "num_worlds", integer=True)
        self.ambient = float(ambient)
        if not 0.0 <= self.ambient <= 1.0:
            raise ValueError(f"ambient must be in [0, 1], got {ambient!r}")
        groups = set(default_geom_groups() if geom_groups is None else geom_groups)
        self.geom_ids = np.array([g for g in range(model.ngeom)
                                  if int(model.geom_group[g]) in groups and geom_color(model, g)[3] > 0.0], dtype=np.int32)
        if len(self.geom_ids) == 0:
            raise ValueError(f"the model has no geom with alpha > 0 in groups {sorted(groups)}")
        self._build_meshes()
        self.znear = float(model.vis.map.znear * model.stat.extent)
        self.zfar = float(model.vis.map.zfar * model.stat.extent)
        fovy = np.deg2rad(np.asarray(model.cam_fovy[self.camera_ids], dtype=np.float64))
        self._cam_f = wp.array((0.5 * self.height / np.tan(fovy / 2)).astype(np.float32), dtype=float, device=self.device)
        w, g, c = self.num_worlds, len(self.geom_ids), len(self.camera_ids)
        self._host_geom_pos = np.zeros((w, g, 3), np.float32)
        self._host_geom_rot = np.zeros((w, g, 3, 3), np.float32)
        self._host_cam_pos = np.zeros((w, c, 3), np.float32)
        self._host_cam_rot = np.zeros((w, c, 3, 3), np.float32)
        self.geom_pos = wp.zeros((w, g), dtype=wp.vec3, device=self.device)
        self.geom_rot = wp.zeros((w, g), dtype=wp.mat33, device=self.device)
        self.cam_pos = wp.zeros((w, c), dtype=wp.vec3, device=self.device)
        self.cam_rot = wp.zeros((w, c), dtype=wp.mat33, device=self.device)
        self.tile = TILE
        tiles = ((self.width + TILE - 1) // TILE) * ((self.height + TILE - 1) // TILE)
        self._lists = wp.zeros((w * c, tiles, g), dtype=wp.int32, device=self.device)
        self._keys = wp.zeros((w * c, tiles, g), dtype=float, device=self.device)
        self._counts = wp.zeros((w * c, tiles), dtype=wp.int32, device=self.device)
        n = w * c * self.height * self.width
        self._depth = wp.zeros(n, dtype=float, device=self.device)
        self._geom = wp.zeros(n, dtype=wp.int32, device=self.device)
        self._body = wp.zeros(n, dtype=wp.int32, device=self.device)
        self._rgb = wp.zeros((n, 3), dtype=wp.uint8, device=self.device)
        self._updated = False
        self._init_static_layer()

    def _init_static_layer(self) -> None:
        """Buffers of the static layer: what each world-fixed camera sees of the world-fixed geoms.

        Geoms welded to the world body and cameras fixed to it look the same in every world, so with
        several worlds one pass renders them once per camera and the per-world pass only traces the
        moving geoms against that layer.
        """
        m, w, c, g = self.model, self.num_worlds, len(self.camera_ids), len(self.geom_ids)
        dynamic = np.array([int(m.body_weldid[m.geom_bodyid[i]]) != 0 for i in self.geom_ids], dtype=np.int32)
        fixed = np.array([int(m.cam_mode[i]) == int(mujoco.mjtCamLight.mjCAMLIGHT_FIXED)
                          and int(m.body_weldid[m.cam_bodyid[i]]) == 0 for i in self.camera_ids], dtype=bool)
        self._static_cameras = fixed if (w >= _MIN_WORLDS_FOR_STATIC_LAYER and not dynamic.all()) else np.zeros(c, bool)
        self._dynamic = wp.array(dynamic, dtype=wp.int32, device=self.device)
        self._host_static_on = np.zeros((w, c), np.int32)
        self._static_on = wp.zeros((w, c), dtype=wp.int32, device=self.device)
        self._static_off = wp.zeros((1, c), dtype=wp.int32, device=self.device)
        tiles = self._counts.shape[1]
        self._s_lists = wp.zeros((c, tiles, g), dtype=wp.int32, device=self.device)
        self._s_keys = wp.zeros((c, tiles, g), dtype=float, device=self.device)
        self._s_counts = wp.zeros((c, tiles), dtype=wp.int32, device=self.device)
        n = c * self.height * self.width
        self._s_depth = wp.zeros(n, dtype=float, device=self.device)
        self._s_geom = wp.full(n, -1, dtype=wp.int32, device=self.device)
        self._s_body = wp.full(n, -1, dtype=wp.int32, device=self.device)
        self._s_rgb = wp.zeros((n, 3), dtype=wp.uint8, device=self.device)
        self._s_geom_pos = wp.zeros((1, g), dtype=wp.vec3, device=self.device)
        self._s_geom_rot = wp.zeros((1, g), dtype=wp.mat33, device=self.device)
        self._s_cam_pos = wp.zeros((1, c), dtype=wp.vec3, device=self.device)
        self._s_cam_rot = wp.zeros((1, c), dtype=wp.mat33, device=self.device)

    def _build_meshes(self) -> None:
        self._meshes, radii, colors, kinds, halves, lows, highs = [], [], [], [], [], [], []
        mids, axes, bound_radii = [], [], []
        for g in self.geom_ids:
            m = geom_mesh(self.model, int(g))
            kind, half = _intersector(self.model, int(g))
            kinds.append(kind)
            halves.append(half)
            lows.append(m.vertices.min(axis=0) - 1e-6)
            highs.append(m.vertices.max(axis=0) + 1e-6)
            mid, axis, radius = _bounding_capsule(m.vertices)
            mids.append(mid)
            axes.append(axis)
            bound_radii.append(radius)
            self._meshes.append(wp.Mesh(wp.array(m.vertices.astype(np.float32), dtype=wp.vec3, device=self.device),
                                        wp.array(m.faces.reshape(-1), dtype=wp.int32, device=self.device)))
            radii.append(float(np.linalg.norm(m.vertices, axis=1).max()) * 1.0001 + 1e-6)
            colors.append(geom_color(self.model, int(g))[:3])
        self._mesh_ids = wp.array([m.id for m in self._meshes], dtype=wp.uint64, device=self.device)
        self._radii = wp.array(np.array(radii, np.float32), dtype=float, device=self.device)
        self._kinds = wp.array(np.array(kinds, np.int32), dtype=wp.int32, device=self.device)
        self._halves = wp.array(np.array(halves, np.float32), dtype=wp.vec3, device=self.device)
        self._lows = wp.array(np.array(lows, np.float32), dtype=wp.vec3, device=self.device)
        self._bound_mid = wp.array(np.array(mids, np.float32), dtype=wp.vec3, device=self.device)
        self._bound_axis = wp.array(np.array(axes, np.float32), dtype=wp.vec3, device=self.device)
        self._bound_radius = wp.array(np.array(bound_radii, np.float32), dtype=float, device=self.device)
        self._highs = wp.array(np.array(highs, np.float32), dtype=wp.vec3, device=self.device)
        self._colors = wp.array(np.array(colors, np.float32), dtype=wp.vec3, device=self.device)
        self._geom_ids_w = wp.array(self.geom_ids, dtype=wp.int32, device=self.device)
        body = self.model.geom_bodyid[self.geom_ids].astype(np.int32)
        self._body_ids_w = wp.array(body, dtype=wp.int32, device=self.device)

    def intrinsics(self, camera: int = 0) -> np.ndarray:
        """3x3 pinhole matrix (OpenCV pixel convention) of camera slot ``camera``."""
        f = float(self._cam_f.numpy()[camera])
        return np.array([[f, 0, (self.width - 1) / 2], [0, f, (self.height - 1) / 2], [0, 0, 1.0]])

    def world_from_camera_cv(self, world: int = 0, camera: int = 0) -> np.ndarray:
        """4x4 pose (OpenCV axes) of camera slot ``camera`` in world ``world`` at the last update."""
        return mujoco_pose_to_cv(self._host_cam_pos[world, camera], self._host_cam_rot[world, camera])

    def update(self, data: mujoco.MjData | Sequence[mujoco.MjData]) -> None:
        """Take geom and camera poses from ``num_worlds`` ``MjData`` (after ``mj_forward``/``mj_step``).

        Raises:
            ValueError: if the number of worlds differs from ``num_worlds``.
        """
        datas = [data] if isinstance(data, mujoco.MjData) else list(data)
        if len(datas) != self.num_worlds:
            raise ValueError(f"update needs {self.num_worlds} MjData (num_worlds), got {len(datas)}")
        for w, d in enumerate(datas):
            self._host_geom_pos[w] = d.geom_xpos[self.geom_ids]
            self._host_geom_rot[w] = d.geom_xmat[self.geom_ids].reshape(-1, 3, 3)
            self._host_cam_pos[w] = d.cam_xpos[self.camera_ids]
            self._host_cam_rot[w] = d.cam_xmat[self.camera_ids].reshape(-1, 3, 3)
        self._upload()

    def update_from_arrays(self, geom_xpos: Any, geom_xmat: Any, cam_xpos: Any, cam_xmat: Any) -> None:
        """Take poses from batched arrays shaped like stacked ``MjData`` fields.

        Args:
            geom_xpos ``(W, ngeom, 3)``, geom_xmat ``(W, ngeom, 9)``, cam_xpos ``(W, ncam, 3)``,
            cam_xmat ``(W, ncam, 9)``: all of the model's geoms and cameras, world frame. Geoms
            welded to the world are drawn where world 0 puts them (they cannot move in MuJoCo).

        Raises:
            ValueError: on wrong shapes or non-finite values.
        """
        w, m = self.num_worlds, self.model
        gp = _host(geom_xpos, "geom_xpos", (w, m.ngeom, 3))
        gr = _host(geom_xmat, "geom_xmat", (w, m.ngeom, 9))
        cp = _host(cam_xpos, "cam_xpos", (w, m.ncam, 3))
        cr = _host(cam_xmat, "cam_xmat", (w, m.ncam, 9))
        self._host_geom_pos[:] = gp[:, self.geom_ids]
        self._host_geom_rot[:] = gr[:, self.geom_ids].reshape(w, -1, 3, 3)
        self._host_cam_pos[:] = cp[:, self.camera_ids]
        self._host_cam_rot[:] = cr[:, self.camera_ids].reshape(w, -1, 3, 3)
        self._upload()

    def update_from_body_poses(self, xpos: Any, xquat: Any) -> None:
        """Take poses from body frames only, e.g. from a batched simulator: ``xpos (W, nbody, 3)``, ``xquat (W, nbody, 4)``.

        Geom and camera poses follow from their fixed offsets in the body frames (``geom_pos``,
        ``geom_quat``, ``cam_pos``, ``cam_quat``), as MuJoCo computes them.

        Raises:
            ValueError: on wrong shapes, non-finite values or non-unit quaternions, or when a
                rendered camera is not fixed to its body (tracking cameras need ``update``).
        """
        w, m = self.num_worlds, self.model
        pos = _host(xpos, "xpos", (w, m.nbody, 3))
        quat = _host(xquat, "xquat", (w, m.nbody, 4))
        norms = np.linalg.norm(quat, axis=-1)
        if np.any(np.abs(norms - 1.0) > 1e-3):
            raise ValueError("xquat must hold unit quaternions (w, x, y, z)")
        moving = [int(c) for c in self.camera_ids if int(m.cam_mode[c]) != int(mujoco.mjtCamLight.mjCAMLIGHT_FIXED)]
        if moving:
            names = [mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_CAMERA, c) or str(c) for c in moving]
            raise ValueError(f"cameras {names} track other bodies; their poses need update(data)")
        body_rot = _quats_to_mats(quat / norms[..., None])
        for ids, dst_pos, dst_rot, off_pos, off_quat, owner in (
            (self.geom_ids, self._host_geom_pos, self._host_geom_rot, m.geom_pos, m.geom_quat, m.geom_bodyid),
            (self.camera_ids, self._host_cam_pos, self._host_cam_rot, m.cam_pos, m.cam_quat, m.cam_bodyid),
        ):
            b = owner[ids]
            rot = body_rot[:, b]
            dst_pos[:] = pos[:, b] + np.einsum("wgij,gj->wgi", rot, off_pos[ids])
            dst_rot[:] = rot @ _quats_to_mats(np.asarray(off_quat[ids], dtype=np.float64))
        self._upload()

    def set_camera_pose(self, world: int, camera: int, pos: Any, xmat: Any) -> None:
        """Move camera slot ``camera`` of world ``world`` to any viewpoint (MuJoCo axes: looks along -z).

        Raises:
            ValueError: on an index out of range, wrong shapes or a non-rotation matrix.
        """
        if not (0 <= world < self.num_worlds and 0 <= camera < len(self.camera_ids)):
            raise ValueError(f"world {world} / camera {camera} out of range ({self.num_worlds} worlds, "
                             f"{len(self.camera_ids)} cameras)")
        p = _host(pos, "pos", (3,))
        r = _host(xmat, "xmat", (3, 3)) if np.shape(xmat) == (3, 3) else _host(xmat, "xmat", (9,)).reshape(3, 3)
        if not np.allclose(r @ r.T, np.eye(3), atol=1e-4) or np.linalg.det(r) < 0:
            raise ValueError("xmat must be a rotation matrix")
        self._host_cam_pos[world, camera] = p
        self._host_cam_rot[world, camera] = r
        self._upload(moved=(world, camera))

    def _upload(self, moved: tuple[int, int] | None = None) -> None:
        """Send the host poses to the device; ``moved`` marks a camera taken off its model pose."""
        if moved is None:
            self._host_static_on[:] = self._static_cameras[None, :]
        else:
            self._host_static_on[moved] = 0
        for host, dev in ((self._host_geom_pos, self.geom_pos), (self._host_geom_rot, self.geom_rot),
                          (self._host_cam_pos, self.cam_pos), (self._host_cam_rot, self.cam_rot),
                          (self._host_static_on, self._static_on)):
            dev.assign(host)
        if self._host_static_on.any():
            # The static pass uses, per camera, a world where it is still at its model pose.
            ref = np.argmax(self._host_static_on, axis=0)
            cams = np.arange(len(self.camera_ids))
            self._s_cam_pos.assign(self._host_cam_pos[ref, cams][None])
            self._s_cam_rot.assign(self._host_cam_rot[ref, cams][None])
            self._s_geom_pos.assign(self._host_geom_pos[:1])
            self._s_geom_rot.assign(self._host_geom_rot[:1])
        self._updated = True

    def _trace(self, geom_pos: wp.array, geom_rot: wp.array, cam_pos: wp.array, cam_rot: wp.array,
               static_on: wp.array, static_pass: int, lists: wp.array, keys: wp.array, counts: wp.array,
               depth: wp.array, geom: wp.array, body: wp.array, rgb: wp.array) -> None:
        """Bin the geoms to tiles, then cast one ray per pixel of every (world, camera) in the pose arrays."""
        launch_rows(_bin_tiles, counts.shape[0] * counts.shape[1], [
            self._bound_mid, self._bound_axis, self._bound_radius, self._dynamic, static_on, static_pass, geom_pos,
            geom_rot, cam_pos, cam_rot, self._cam_f, self.height,
            self.width, self.tile, self.znear, self.zfar, lists, keys, counts], self.device)
        launch_rows(_raycast, depth.shape[0] // self.width, [
            self._mesh_ids, self._kinds, self._halves, self._lows, self._highs, self._radii, self._colors,
            self._geom_ids_w, self._body_ids_w, geom_pos, geom_rot, cam_pos, cam_rot, self._cam_f, lists, counts,
            static_on, static_pass, self._s_depth, self._s_geom, self._s_body, self._s_rgb,
            self.height, self.width, self.tile, self.znear, self.zfar, self.ambient, depth, geom, body, rgb], self.device,
            min_split=64)

    def render(self, *, like: str = "numpy", copy: bool = True) -> RenderOutput:
        """Cast every ray and return depth, segmentation and RGB for all worlds and cameras.

        ``like`` picks the output kind (``numpy`` or ``torch``); with ``copy=False`` the outputs are
        views of buffers the next ``render`` overwrites.

        Raises:
            RuntimeError: if no ``update`` gave poses yet.
            ValueError: on an unknown ``like``.
        """
        if not self._updated:
            raise RuntimeError("call update(data) before render()")
        if like not in ("numpy", "torch"):
            raise ValueError(f"like must be 'numpy' or 'torch', got {like!r}")
        if self._host_static_on.any():
            self._trace(self._s_geom_pos, self._s_geom_rot, self._s_cam_pos, self._s_cam_rot, self._static_off, 1,
                        self._s_lists, self._s_keys, self._s_counts, self._s_depth, self._s_geom, self._s_body, self._s_rgb)
        self._trace(self.geom_pos, self.geom_rot, self.cam_pos, self.cam_rot, self._static_on, 0,
                    self._lists, self._keys, self._counts, self._depth, self._geom, self._body, self._rgb)
        shape = (self.num_worlds, len(self.camera_ids), self.height, self.width)
        outs = []
        for arr, shp in ((self._depth, shape), (self._geom, shape), (self._body, shape), (self._rgb, (*shape, 3))):
            out = to_kind(arr, like).reshape(shp)
            if copy:
                out = out.copy() if like == "numpy" else out.clone()
            outs.append(out)
        return RenderOutput(*outs)


def _quats_to_mats(q: np.ndarray) -> np.ndarray:
    """Rotation matrices (..., 3, 3) of unit quaternions (..., 4) in (w, x, y, z) order."""
    w, x, y, z = np.moveaxis(q, -1, 0)
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
        np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
        np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
    ], -2)


def _host(x: Any, name: str, shape: tuple[int, ...]) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    elif isinstance(x, wp.array):
        x = x.numpy()
    a = np.asarray(x)
    if a.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {a.shape}")
    if a.dtype == np.bool_ or not np.issubdtype(a.dtype, np.number) or not np.isfinite(a).all():
        raise ValueError(f"{name} must hold finite numbers, got dtype {a.dtype}")
    return a.astype(np.float64)
