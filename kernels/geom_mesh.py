"""Triangle meshes of MuJoCo geoms, in the geom's own frame (NumPy; no Warp kernels).

Primitives are tessellated with the model's render quality (``model.vis.quality.numslices`` and
``numstacks``), as MuJoCo's own renderer draws them; mesh geoms use the compiled mesh as is;
height fields become their top surface; planes become a quad of their size (an infinite plane, size
0, reaches MuJoCo's far clipping distance). Triangles wind counter-clockwise seen from outside.
"""

from __future__ import annotations

from typing import NamedTuple

import mujoco
import numpy as np

G = mujoco.mjtGeom


class TriMesh(NamedTuple):
    """Vertices ``(V, 3)`` float64 (m) and triangles ``(F, 3)`` int32."""

    vertices: np.ndarray
    faces: np.ndarray


def _revolve(profile: list[tuple[float, float]], slices: int) -> TriMesh:
    """Surface of revolution about z: ``profile`` lists (z, radius) rings, top to bottom."""
    angles = 2.0 * np.pi * np.arange(slices) / slices
    ring_xy = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    verts = np.concatenate([np.column_stack([r * ring_xy, np.full(slices, z)]) for z, r in profile])
    faces = []
    for k in range(len(profile) - 1):
        a = k * slices + np.arange(slices)
        b = k * slices + (np.arange(slices) + 1) % slices
        c, d = b + slices, a + slices
        faces.append(np.stack([a, d, c], axis=1))
        faces.append(np.stack([a, c, b], axis=1))
    return _clean(TriMesh(verts, np.concatenate(faces).astype(np.int32)))


def _clean(mesh: TriMesh) -> TriMesh:
    """Drop zero-area triangles (poles of revolved shapes) and orient the rest outward (convex, centred)."""
    v, f = mesh.vertices, mesh.faces
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    n = np.cross(b - a, c - a)
    area2 = np.linalg.norm(n, axis=1)
    keep = area2 > 1e-12 * max(1.0, float(np.abs(v).max()) ** 2)
    f, n = f[keep], n[keep]
    centroid = (v[f[:, 0]] + v[f[:, 1]] + v[f[:, 2]]) / 3.0
    inward = (n * centroid).sum(axis=1) < 0
    f[inward] = f[inward][:, [0, 2, 1]]
    return TriMesh(v, f.astype(np.int32))


def _sphere_profile(radius: float, stacks: int, z0: float = 0.0, start: float = 0.0, stop: float = np.pi):
    theta = np.linspace(start, stop, stacks + 1)
    return [(z0 + radius * np.cos(t), radius * np.sin(t)) for t in theta]


def box_mesh(half: np.ndarray) -> TriMesh:
    """Box with half-sizes ``half`` (m), 12 triangles."""
    corners = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], dtype=np.float64)
    v = corners * np.asarray(half, dtype=np.float64)
    quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    faces = np.array([t for q in quads for t in ((q[0], q[1], q[2]), (q[0], q[2], q[3]))], dtype=np.int32)
    return _clean(TriMesh(v, faces))


def geom_mesh(model: mujoco.MjModel, geom: int) -> TriMesh:
    """Return the triangle mesh of geom ``geom`` in its own frame.

    Raises:
        ValueError: for a geom id out of range or an SDF geom (no triangle surface to tessellate).
    """
    if not 0 <= geom < model.ngeom:
        raise ValueError(f"geom id {geom} out of range [0, {model.ngeom})")
    kind = int(model.geom_type[geom])
    size = np.asarray(model.geom_size[geom], dtype=np.float64)
    slices = max(8, int(model.vis.quality.numslices))
    stacks = max(4, int(model.vis.quality.numstacks))
    if kind == G.mjGEOM_SPHERE:
        return _revolve(_sphere_profile(size[0], stacks), slices)
    if kind == G.mjGEOM_ELLIPSOID:
        m = _revolve(_sphere_profile(1.0, stacks), slices)
        return _clean(TriMesh(m.vertices * size, m.faces))
    if kind == G.mjGEOM_CAPSULE:
        r, h = size[0], size[1]
        half = max(2, stacks // 2)
        top = _sphere_profile(r, half, z0=h, stop=np.pi / 2)
        bottom = _sphere_profile(r, half, z0=-h, start=np.pi / 2)
        return _revolve(top + bottom, slices)
    if kind == G.mjGEOM_CYLINDER:
        r, h = size[0], size[1]
        return _revolve([(h, 0.0), (h, r), (-h, r), (-h, 0.0)], slices)
    if kind == G.mjGEOM_BOX:
        return box_mesh(size)
    if kind == G.mjGEOM_PLANE:
        far = float(model.vis.map.zfar * model.stat.extent)
        hx = size[0] if size[0] > 0 else far
        hy = size[1] if size[1] > 0 else far
        v = np.array([[-hx, -hy, 0.0], [hx, -hy, 0.0], [hx, hy, 0.0], [-hx, hy, 0.0]])
        return TriMesh(v, np.array([[0, 1, 2], [0, 2, 3]], dtype=np.int32))
    if kind == G.mjGEOM_MESH:
        mid = int(model.geom_dataid[geom])
        va, vn = int(model.mesh_vertadr[mid]), int(model.mesh_vertnum[mid])
        fa, fn = int(model.mesh_faceadr[mid]), int(model.mesh_facenum[mid])
        return TriMesh(np.array(model.mesh_vert[va : va + vn], dtype=np.float64),
                       np.array(model.mesh_face[fa : fa + fn], dtype=np.int32))
    if kind == G.mjGEOM_HFIELD:
        return _hfield_mesh(model, int(model.geom_dataid[geom]))
    name = mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_GEOM, geom) or str(geom)
    raise ValueError(f"geom {name!r} has type {G(kind).name}, which has no triangle surface to build")


def _hfield_mesh(model: mujoco.MjModel, hid: int) -> TriMesh:
    """Top surface of height field ``hid``: a grid of elevations scaled by ``hfield_size``."""
    rows, cols = int(model.hfield_nrow[hid]), int(model.hfield_ncol[hid])
    rx, ry, top, _ = model.hfield_size[hid]
    adr = int(model.hfield_adr[hid])
    z = np.asarray(model.hfield_data[adr : adr + rows * cols], dtype=np.float64).reshape(rows, cols) * top
    xs = np.linspace(-rx, rx, cols)
    ys = np.linspace(-ry, ry, rows)
    gx, gy = np.meshgrid(xs, ys)
    v = np.column_stack([gx.ravel(), gy.ravel(), z.ravel()])
    idx = np.arange(rows * cols).reshape(rows, cols)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, 1:].ravel(), idx[1:, :-1].ravel()
    faces = np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)]).astype(np.int32)
    return TriMesh(v, faces)


def quat_to_matrix(q: np.ndarray) -> np.ndarray:
    """Rotation matrix of a unit quaternion (w, x, y, z)."""
    m = np.zeros(9)
    mujoco.mju_quat2Mat(m, np.asarray(q, dtype=np.float64))
    return m.reshape(3, 3)


def body_mesh(model: mujoco.MjModel, body: int, geoms: list[int] | None = None) -> TriMesh:
    """Union of the triangle meshes of a body's geoms, in the body frame.

    ``geoms`` restricts the union to these geom ids (all of them must belong to ``body``).

    Raises:
        ValueError: if the body id is out of range, has no geoms, or a listed geom is not on it.
    """
    if not 0 <= body < model.nbody:
        raise ValueError(f"body id {body} out of range [0, {model.nbody})")
    own = [g for g in range(model.ngeom) if int(model.geom_bodyid[g]) == body]
    if geoms is not None:
        stray = [g for g in geoms if g not in own]
        if stray:
            raise ValueError(f"geoms {stray} do not belong to body {body}")
        own = list(geoms)
    if not own:
        name = mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_BODY, body) or str(body)
        raise ValueError(f"body {name!r} has no geoms to build a mesh from")
    verts, faces, base = [], [], 0
    for g in own:
        m = geom_mesh(model, g)
        verts.append(m.vertices @ quat_to_matrix(model.geom_quat[g]).T + model.geom_pos[g])
        faces.append(m.faces + base)
        base += len(m.vertices)
    return TriMesh(np.concatenate(verts), np.concatenate(faces).astype(np.int32))
