"""Differential inverse kinematics for a site of a MuJoCo arm (damped least squares with a posture task)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import mujoco
import numpy as np


class DifferentialIK:
    """Solves joint positions that put a site at a target position and orientation.

    Works on its own scratch ``MjData``, so solving never disturbs the simulation state. Each iteration takes a
    damped-least-squares step on the 6-D pose error (position in m, orientation as the world-frame rotation vector
    in rad) and a null-space step pulling the joints towards a nominal posture; joints are clipped to their limits.

    Args:
        model: the MuJoCo model holding the arm.
        site: name of the site to place (the pusher tip).
        joints: names of the hinge joints the solver may move, in actuator order.
        damping: Levenberg-Marquardt damping (m^2); larger is smoother near singularities.
        posture: nominal joint positions (rad) for the null-space task; defaults to the middle of the joint ranges.
        posture_gain: gain of the null-space posture task per iteration.

    Raises:
        KeyError: if the site or a joint does not exist in the model.
    """

    def __init__(
        self,
        model: mujoco.MjModel,
        site: str,
        joints: Sequence[str],
        damping: float = 1e-4,
        posture: np.ndarray | None = None,
        posture_gain: float = 0.05,
    ) -> None:
        self.model = model
        self.data = mujoco.MjData(model)
        self.site_id = model.site(site).id
        joint_ids = [model.joint(name).id for name in joints]
        self.qpos_adr = np.array([model.jnt_qposadr[j] for j in joint_ids])
        self.dof_adr = np.array([model.jnt_dofadr[j] for j in joint_ids])
        self.lower = model.jnt_range[joint_ids, 0].copy()
        self.upper = model.jnt_range[joint_ids, 1].copy()
        self.posture = (self.lower + self.upper) / 2 if posture is None else np.asarray(posture, dtype=float)
        self.damping = damping
        self.posture_gain = posture_gain
        self._jacp = np.zeros((3, model.nv))
        self._jacr = np.zeros((3, model.nv))
        # Solver scratch, allocated once: contiguous joint addresses become slices (views, no fancy-index copies).
        self._qpos_index = _as_slice(self.qpos_adr)
        self._dof_index = _as_slice(self.dof_adr)
        self._site_xpos = self.data.site_xpos[self.site_id]
        self._site_xmat = self.data.site_xmat[self.site_id].reshape(3, 3)
        self._eye_q = np.eye(len(joint_ids))
        self._eye_task = np.eye(6)
        self._err = np.zeros(6)
        self._jac = np.zeros((6, len(joint_ids)))

    def site_pose(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Forward kinematics: the site's world position (m) and 3x3 rotation matrix for joint positions ``q``."""
        self.data.qpos[self.qpos_adr] = q
        mujoco.mj_kinematics(self.model, self.data)
        return self.data.site_xpos[self.site_id].copy(), self.data.site_xmat[self.site_id].reshape(3, 3).copy()

    def solve(
        self,
        q_init: np.ndarray,
        target_pos: np.ndarray,
        target_rot: np.ndarray,
        iterations: int = 10,
        tolerance: float = 5e-5,
    ) -> np.ndarray:
        """Joint positions (rad) that place the site at ``target_pos`` (m) with rotation ``target_rot`` (3x3).

        Starts from ``q_init`` and stops early once the position error is below ``tolerance`` (m) and the
        orientation error below ``10 * tolerance`` (rad).
        """
        q = np.minimum(np.maximum(np.asarray(q_init, dtype=float), self.lower), self.upper)
        target_pos = np.asarray(target_pos, dtype=float)
        target_rot = np.asarray(target_rot, dtype=float)
        # Rows of the target rotation as the rotation error pairs them with the site's (see below), taken once.
        target_a, target_b = target_rot[[2, 0, 1]], target_rot[[1, 2, 0]]
        model, data, qpos, xpos, xmat = self.model, self.data, self.data.qpos, self._site_xpos, self._site_xmat
        err, jac, damp = self._err, self._jac, self.damping * self._eye_task
        for _ in range(iterations):
            qpos[self._qpos_index] = q
            mujoco.mj_kinematics(model, data)
            err[:3] = target_pos - xpos
            # Small-angle world-frame rotation error: 0.5 * sum_i r_i x t_i over the frame axes (columns).
            err[3:] = 0.5 * (xmat[[1, 2, 0]] * target_a - xmat[[2, 0, 1]] * target_b).sum(1)
            if math.sqrt(err[:3] @ err[:3]) < tolerance and math.sqrt(err[3:] @ err[3:]) < 10 * tolerance:
                break
            mujoco.mj_comPos(model, data)
            mujoco.mj_jacSite(model, data, self._jacp, self._jacr, self.site_id)
            jac[:3] = self._jacp[:, self._dof_index]
            jac[3:] = self._jacr[:, self._dof_index]
            pinv = jac.T @ np.linalg.inv(jac @ jac.T + damp)
            dq = pinv @ err + (self._eye_q - pinv @ jac) @ (self.posture_gain * (self.posture - q))
            q = np.minimum(np.maximum(q + dq, self.lower), self.upper)
        return q


def _as_slice(index: np.ndarray) -> slice | np.ndarray:
    """``index`` as a slice when it is a contiguous ascending run (a view then), else unchanged."""
    if len(index) and np.array_equal(index, np.arange(index[0], index[0] + len(index))):
        return slice(int(index[0]), int(index[0]) + len(index))
    return index


def limit_joint_step(desired: np.ndarray, targets: np.ndarray, velocity: np.ndarray, dt: float,
                     velocity_limit: float | None, acceleration_limit: float | None) -> tuple[np.ndarray, np.ndarray]:
    """The next joint targets towards ``desired`` after ``dt`` s, and their velocity (rad, rad/s; any leading batch).

    The targets' velocity changes by at most ``a dt`` and never exceeds ``min(v, sqrt(2 a d))`` at distance ``d``, so
    they can stop at ``desired`` without overshooting. With neither limit set, ``desired`` is returned as it is.
    """
    if not velocity_limit and not acceleration_limit:
        return desired, velocity
    vmax = np.array(velocity_limit or np.inf)
    amax = np.array(acceleration_limit or np.inf)
    gap = desired - targets
    speed = np.minimum(vmax, np.sqrt(2.0 * amax * np.abs(gap)))
    step_velocity = np.clip(gap / dt, -speed, speed)
    step_velocity = np.clip(step_velocity, velocity - amax * dt, velocity + amax * dt)
    return targets + step_velocity * dt, step_velocity
