"""Differential IK for N worlds at once: the damped-least-squares solve of ``sim.ik.DifferentialIK``, vectorised.

The arm's forward kinematics and site Jacobian are computed in numpy for all worlds together from the model's
body offsets and hinge axes (what ``mj_kinematics`` / ``mj_jacSite`` compute for a serial chain of hinges), so N
solves cost about as many numpy calls as one. Each world stops iterating once its own error is below the tolerance,
as the single solver does; results agree with ``DifferentialIK.solve`` to float rounding.
"""

from __future__ import annotations

from collections.abc import Sequence

import mujoco
import numpy as np


def _quat_to_mat(q: np.ndarray) -> np.ndarray:
    mat = np.zeros(9)
    mujoco.mju_quat2Mat(mat, np.asarray(q, dtype=float))
    return mat.reshape(3, 3)


def _skew(v: np.ndarray) -> np.ndarray:
    return np.array([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]])


class BatchedIK:
    """Solves joint positions placing a site at targets, for N worlds in one call (see module doc).

    Args:
        model: the MuJoCo model; the site's body must hang from the world through a chain whose only joints are the
            named hinges.
        site: name of the site (the pusher tip).
        joints: the hinge joints, in actuator order.
        damping, posture, posture_gain: as :class:`sim.ik.DifferentialIK`.

    Raises:
        KeyError: a missing site or joint; ValueError: a chain with other joints, or a non-hinge joint.
    """

    def __init__(self, model: mujoco.MjModel, site: str, joints: Sequence[str], damping: float = 1e-4,
                 posture: np.ndarray | None = None, posture_gain: float = 0.05) -> None:
        site_id = model.site(site).id
        joint_ids = [model.joint(name).id for name in joints]
        chain, body = [], int(model.site_bodyid[site_id])
        while body:
            chain.append(body)
            body = int(model.body_parentid[body])
        chain.reverse()
        # Per link: body offset, and for a hinge its slot, the axis and anchor in the parent-after-offset frame and
        # the rotation body_rot @ R(axis, angle) = A + sin(angle) B + (1 - cos(angle)) C (Rodrigues, premultiplied).
        self._links: list[tuple] = []
        for b in chain:
            adr, num = int(model.body_jntadr[b]), int(model.body_jntnum[b])
            if num > 1 or (num == 1 and adr not in joint_ids):
                raise ValueError(f"body {model.body(b).name!r} of the IK chain has joints the solver does not move")
            body_rot = _quat_to_mat(model.body_quat[b])
            if not num:
                self._links.append((model.body_pos[b].copy(), body_rot, -1, None, None, 0.0, None))
                continue
            if model.jnt_type[adr] != mujoco.mjtJoint.mjJNT_HINGE:
                raise ValueError(f"joint {model.joint(adr).name!r} is not a hinge")
            k = _skew(model.jnt_axis[adr])
            anchor = model.jnt_pos[adr].copy()
            self._links.append((model.body_pos[b].copy(), np.stack([body_rot, body_rot @ k, body_rot @ k @ k]),
                                joint_ids.index(adr), body_rot @ model.jnt_axis[adr], anchor,
                                float(model.qpos0[model.jnt_qposadr[adr]]), body_rot @ anchor))
        self._site_pos = model.site_pos[site_id].copy()
        self._site_rot = _quat_to_mat(model.site_quat[site_id])
        self.lower = model.jnt_range[joint_ids, 0].copy()
        self.upper = model.jnt_range[joint_ids, 1].copy()
        self.posture = (self.lower + self.upper) / 2 if posture is None else np.asarray(posture, dtype=float)
        self.damping = damping
        self.posture_gain = posture_gain

    def site_pose_and_jacobian(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For joint positions ``q`` (N, 7) rad: site positions (N, 3) m, rotations (N, 3, 3), Jacobians (N, 6, 7)
        (rows: linear m/rad, then angular rad/rad)."""
        n = len(q)
        pos, rot = np.zeros((n, 3)), np.broadcast_to(np.eye(3), (n, 3, 3))
        axes, anchors = np.zeros((n, q.shape[1], 3)), np.zeros((n, q.shape[1], 3))
        for body_pos, rots, slot, axis, anchor, offset, parent_anchor in self._links:
            pos = pos + rot @ body_pos
            if slot < 0:
                rot = rot @ rots
                continue
            axes[:, slot] = rot @ axis
            anchors[:, slot] = pos + rot @ parent_anchor
            angle = q[:, slot] - offset
            local = rots[0] + np.sin(angle)[:, None, None] * rots[1] + (1.0 - np.cos(angle))[:, None, None] * rots[2]
            rot = rot @ local
            if anchor.any():
                pos = anchors[:, slot] - rot @ anchor
        site = pos + rot @ self._site_pos
        site_rot = rot @ self._site_rot
        jac = np.concatenate([np.cross(axes, site[:, None] - anchors), axes], axis=2).transpose(0, 2, 1)
        return site, site_rot, jac

    def solve(self, q_init: np.ndarray, target_pos: np.ndarray, target_rot: np.ndarray, iterations: int = 10,
              tolerance: float = 5e-5) -> np.ndarray:
        """Joint positions (N, 7) rad placing the site at ``target_pos`` (N, 3) m with rotation ``target_rot`` (3, 3)
        or (N, 3, 3); stops per world as ``DifferentialIK.solve`` (position error < ``tolerance`` m, orientation
        error < ``10 * tolerance`` rad)."""
        q = np.clip(np.array(q_init, dtype=float), self.lower, self.upper)
        target_pos = np.asarray(target_pos, dtype=float)
        target_rot = np.broadcast_to(np.asarray(target_rot, dtype=float), (len(q), 3, 3))
        active = np.ones(len(q), bool)
        eye, damp = np.eye(q.shape[1]), self.damping * np.eye(6)
        for _ in range(iterations):
            idx = np.flatnonzero(active)
            pos, rot, jac = self.site_pose_and_jacobian(q[idx])
            tr = target_rot[idx]
            err_pos = target_pos[idx] - pos
            err_rot = 0.5 * (rot[:, [1, 2, 0]] * tr[:, [2, 0, 1]] - rot[:, [2, 0, 1]] * tr[:, [1, 2, 0]]).sum(2)
            done = (np.linalg.norm(err_pos, axis=1) < tolerance) & (np.linalg.norm(err_rot, axis=1) < 10 * tolerance)
            active[idx[done]] = False
            keep = ~done
            if not keep.any():
                break
            idx, jac = idx[keep], jac[keep]
            err = np.concatenate([err_pos[keep], err_rot[keep]], axis=1)
            jt = jac.transpose(0, 2, 1)
            pinv = jt @ np.linalg.inv(jac @ jt + damp)
            null = (eye - pinv @ jac) @ (self.posture_gain * (self.posture - q[idx]))[..., None]
            dq = (pinv @ err[..., None] + null)[..., 0]
            q[idx] = np.clip(q[idx] + dq, self.lower, self.upper)
        return q
