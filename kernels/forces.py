"""Correction wrenches that pull twin bodies onto observed 3D points (depth analogue of Real-is-Sim).

One Warp module. Each observed point (world frame, m) finds the nearest point on the surface of the
tracked bodies (``wp.mesh_query_point_no_sign`` on one mesh per body, in the body frame). If that
surface point lies within ``cutoff`` it is pulled towards the observation by a spring
``f = gain * (observed - surface)`` (minus ``damping`` times the surface point's velocity, when body
velocities are given); farther points are ignored as belonging to something else. Forces and their
torques about the body's centre of mass are summed per body (or averaged with ``average=True``),
giving the world-frame ``[force, torque]`` rows MuJoCo's ``data.xfrc_applied`` expects.

Feed points segmented to the tracked objects: a table under a block is within the cut-off of the
block's bottom face and would pull it down.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import mujoco
import numpy as np
import warp as wp

from kernels._arrays import as_warp, kind_of, positive, to_kind
from kernels._runtime import launch_chunks, reduction_slots, resolve_device
from kernels.geom_mesh import body_mesh

_TERMS = 7  # force (3), torque (3), point count


@wp.func
def _closest_on_body(mesh: wp.uint64, pos: wp.vec3, rot: wp.mat33, p: wp.vec3, max_dist: float) -> wp.vec4:
    """Nearest surface point of a body mesh to world point p, as (x, y, z, distance); distance < 0 if none."""
    local = wp.transpose(rot) * (p - pos)
    q = wp.mesh_query_point_no_sign(mesh, local, max_dist)
    if not q.result:
        return wp.vec4(0.0, 0.0, 0.0, -1.0)
    c = pos + rot * wp.mesh_eval_position(mesh, q.face, q.u, q.v)
    return wp.vec4(c[0], c[1], c[2], wp.length(c - p))


@wp.kernel
def _wrench_terms(points: wp.array2d(dtype=wp.vec3), valid: wp.array2d(dtype=wp.bool), meshes: wp.array(dtype=wp.uint64),
                  body_pos: wp.array2d(dtype=wp.vec3), body_rot: wp.array2d(dtype=wp.mat33),
                  body_com: wp.array2d(dtype=wp.vec3), body_lin: wp.array2d(dtype=wp.vec3),
                  body_ang: wp.array2d(dtype=wp.vec3), gain: float, damping: float, cutoff: float,
                  acc: wp.array3d(dtype=wp.float64), offset: int, chunk: int, spread: int):
    t = wp.tid()
    row = t + offset
    npts = points.shape[1]
    w = row // npts
    i = row % npts
    if not valid[w, i]:
        return
    p = points[w, i]
    best = cutoff
    hit = wp.int32(-1)
    c = wp.vec3(0.0)
    for b in range(meshes.shape[0]):
        r = _closest_on_body(meshes[b], body_pos[w, b], body_rot[w, b], p, best)
        if r[3] >= 0.0 and r[3] < best:
            best = r[3]
            hit = b
            c = wp.vec3(r[0], r[1], r[2])
    if hit < 0:
        return
    arm = c - body_com[w, hit]
    f = gain * (p - c) - damping * (body_lin[w, hit] + wp.cross(body_ang[w, hit], arm))
    tau = wp.cross(arm, f)
    slot = chunk + t % spread
    for k in range(3):
        wp.atomic_add(acc, slot, w * meshes.shape[0] + hit, k, wp.float64(f[k]))
        wp.atomic_add(acc, slot, w * meshes.shape[0] + hit, 3 + k, wp.float64(tau[k]))
    wp.atomic_add(acc, slot, w * meshes.shape[0] + hit, 6, wp.float64(1.0))


class CorrectionForces:
    """Spring wrenches pulling the listed bodies of a MuJoCo model onto observed points.

    Args:
        model: the twin's ``MjModel``; each listed body's geoms become one mesh in the body frame.
        bodies: body names or ids to correct (e.g. ``["block"]``).
        gain: spring constant per point (N/m).
        cutoff: observed points farther than this (m) from every listed body are ignored.
        damping: dashpot per point (N s/m) on the surface point's velocity; needs body velocities.
        average: divide each body's wrench by its number of attracting points (gain then acts as
            the stiffness of the whole body, independent of how many points the camera gives).
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``auto``.

    Raises:
        ValueError: for an unknown body, a body without geoms, or non-positive gain/cutoff.
    """

    def __init__(self, model: mujoco.MjModel, bodies: Sequence[str | int], *, gain: float, cutoff: float,
                 damping: float = 0.0, average: bool = False, device: str | None = None):
        self.device = resolve_device(device)
        self.model = model
        if isinstance(bodies, (str, int)):
            bodies = [bodies]
        if len(bodies) == 0:
            raise ValueError("bodies must list at least one body")
        self.body_ids = np.array([_body_id(model, b) for b in bodies], dtype=np.int32)
        self.gain = positive(gain, "gain")
        self.cutoff = positive(cutoff, "cutoff")
        self.damping = positive(damping, "damping", allow_zero=True)
        self.average = bool(average)
        self._meshes = []
        for b in self.body_ids:
            m = body_mesh(model, int(b))
            self._meshes.append(wp.Mesh(wp.array(m.vertices.astype(np.float32), dtype=wp.vec3, device=self.device),
                                        wp.array(m.faces.reshape(-1), dtype=wp.int32, device=self.device)))
        self.mesh_ids = wp.array([m.id for m in self._meshes], dtype=wp.uint64, device=self.device)

    @property
    def num_bodies(self) -> int:
        """Number of tracked bodies."""
        return len(self.body_ids)

    def __call__(self, points: Any, body_pos: Any, body_quat: Any, body_com: Any, *, valid: Any | None = None,
                 body_lin_vel: Any | None = None, body_ang_vel: Any | None = None) -> Any:
        """Return the wrenches ``(W, B, 6)`` = [force (N), torque about the COM (N m)] in the world frame.

        Args:
            points: observed points ``(N, 3)`` or ``(W, N, 3)`` for ``W`` worlds (m, world frame).
            body_pos, body_quat, body_com: per tracked body (in ``bodies`` order) the frame origin
                ``(B, 3)``, orientation wxyz ``(B, 4)`` and centre of mass ``(B, 3)``; add a leading
                ``W`` axis for many worlds (MuJoCo's ``xpos``, ``xquat``, ``xipos``).
            valid: optional bool ``(N,)`` / ``(W, N)``: only True points pull.
            body_lin_vel, body_ang_vel: COM linear and angular velocity ``(B, 3)`` / ``(W, B, 3)``
                (world frame), required when ``damping > 0``.

        Returns:
            ``(W, B, 6)`` (``(B, 6)`` for unbatched input), the kind of ``points``.

        Raises:
            ValueError: on wrong shapes or dtypes, NaN/inf, empty clouds, or missing velocities.
        """
        batched = _ndim(points) == 3
        pts_shape = (None, None, 3) if batched else (None, 3)
        pts = as_warp(points, "points", self.device, shape=pts_shape, dtype=wp.vec3)
        if not batched:
            pts = pts.reshape((1, pts.shape[0]))
        w, n = pts.shape
        b = self.num_bodies
        lead = (w,) if batched else ()
        pos = self._per_body(body_pos, "body_pos", lead, 3, wp.vec3, w)
        com = self._per_body(body_com, "body_com", lead, 3, wp.vec3, w)
        quat = _as_host(body_quat, "body_quat", (*lead, b, 4)).reshape(w, b, 4)
        norms = np.linalg.norm(quat, axis=-1)
        if np.any(np.abs(norms - 1.0) > 1e-3):
            raise ValueError(f"body_quat must hold unit quaternions (w, x, y, z); norms are {norms.ravel().tolist()}")
        rot = np.stack([_quat_to_mat(q) for q in quat.reshape(-1, 4)]).reshape(w, b, 3, 3).astype(np.float32)
        rot_w = wp.array(rot, dtype=wp.mat33, device=self.device)
        if self.damping > 0 and (body_lin_vel is None or body_ang_vel is None):
            raise ValueError("body_lin_vel and body_ang_vel are required when damping > 0")
        zeros = wp.zeros((w, b), dtype=wp.vec3, device=self.device)
        lin = self._per_body(body_lin_vel, "body_lin_vel", lead, 3, wp.vec3, w) if body_lin_vel is not None else zeros
        ang = self._per_body(body_ang_vel, "body_ang_vel", lead, 3, wp.vec3, w) if body_ang_vel is not None else zeros
        if valid is None:
            mask = wp.full((w, n), True, dtype=wp.bool, device=self.device)
        else:
            mask = as_warp(valid, "valid", self.device, shape=(w, n) if batched else (n,), dtype=wp.bool, element="bool")
            mask = mask.reshape((w, n))
        rows = w * n
        slots = reduction_slots(rows, self.device)
        if not self.device.is_cpu:  # many worlds already spread the atomics; cap the buffer at ~64k rows
            slots = max(1, min(slots, 65536 // (w * b)))
        acc = wp.zeros((slots, w * b, _TERMS), dtype=wp.float64, device=self.device)
        launch_chunks(_wrench_terms, rows, [pts, mask, self.mesh_ids, pos, rot_w, com, lin, ang, float(self.gain),
                                            float(self.damping), float(self.cutoff), acc], self.device, slots)
        total = acc.numpy().sum(axis=0).reshape(w, b, _TERMS)
        wrench = total[..., :6]
        if self.average:
            wrench = wrench / np.maximum(total[..., 6:7], 1.0)
        wrench = wrench.astype(np.float32)
        if not batched:
            wrench = wrench[0]
        return to_kind(wp.array(wrench, dtype=wp.float32, device=self.device), kind_of(points))

    def _per_body(self, x: Any, name: str, lead: tuple[int, ...], width: int, dtype: Any, w: int) -> wp.array:
        arr = as_warp(x, name, self.device, shape=(*lead, self.num_bodies, width), dtype=dtype)
        return arr.reshape((w, self.num_bodies))

    def wrench_from_data(self, data: mujoco.MjData, points: Any, *, valid: Any | None = None) -> np.ndarray:
        """Return ``(model.nbody, 6)`` float64 wrenches for ``data.xfrc_applied`` from one ``MjData`` state.

        Body poses, centres of mass and (when ``damping > 0``) velocities are read from ``data``;
        rows of bodies that are not tracked are zero. Run ``mj_forward`` (or a step) first.
        """
        ids = self.body_ids
        kwargs = {}
        if self.damping > 0:
            vel = np.zeros((len(ids), 6))
            for k, bid in enumerate(ids):
                mujoco.mj_objectVelocity(self.model, data, mujoco.mjtObj.mjOBJ_BODY, int(bid), vel[k], 0)
            kwargs = {"body_lin_vel": vel[:, 3:], "body_ang_vel": vel[:, :3]}
        w = self(points, data.xpos[ids], data.xquat[ids], data.xipos[ids], valid=valid, **kwargs)
        if hasattr(w, "detach"):
            w = w.detach().cpu().numpy()
        elif isinstance(w, wp.array):
            w = w.numpy()
        out = np.zeros((self.model.nbody, 6))
        out[ids] = w
        return out


def _body_id(model: mujoco.MjModel, body: str | int) -> int:
    if isinstance(body, str):
        bid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, body)
        if bid < 0:
            names = [mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_BODY, i) for i in range(model.nbody)]
            raise ValueError(f"body {body!r} does not exist; the model has bodies {names}")
        return bid
    if isinstance(body, (int, np.integer)) and 0 <= int(body) < model.nbody:
        return int(body)
    raise ValueError(f"body {body!r} is not a body name or an id in [0, {model.nbody})")


def _ndim(x: Any) -> int:
    return len(getattr(x, "shape", np.shape(x)))


def _as_host(x: Any, name: str, shape: tuple[int, ...]) -> np.ndarray:
    if x is None:
        raise ValueError(f"{name} is required, got None")
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    elif isinstance(x, wp.array):
        x = x.numpy()
    a = np.asarray(x)
    if a.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {a.shape}")
    if not np.issubdtype(a.dtype, np.floating) or not np.isfinite(a).all():
        raise ValueError(f"{name} must be finite floats, got dtype {a.dtype}")
    return a.astype(np.float64)


def _quat_to_mat(q: np.ndarray) -> np.ndarray:
    m = np.zeros(9)
    mujoco.mju_quat2Mat(m, q / np.linalg.norm(q))
    return m.reshape(3, 3)
