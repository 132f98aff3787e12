"""Differential inverse kinematics for a site of a MuJoCo arm (damped least squares with a posture task)."""

from __future__ import annotations

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
        q = np.clip(np.asarray(q_init, dtype=float).copy(), self.lower, self.upper)
        eye = np.eye(len(q))
        for _ in range(iterations):
            pos, rot = self.site_pose(q)
            err_pos = target_pos - pos
            # Small-angle world-frame rotation error: 0.5 * sum_i r_i x t_i over the frame axes (columns).
            err_rot = 0.5 * (rot[[1, 2, 0]] * target_rot[[2, 0, 1]] - rot[[2, 0, 1]] * target_rot[[1, 2, 0]]).sum(1)
            if np.linalg.norm(err_pos) < tolerance and np.linalg.norm(err_rot) < 10 * tolerance:
                break
            mujoco.mj_comPos(self.model, self.data)
            mujoco.mj_jacSite(self.model, self.data, self._jacp, self._jacr, self.site_id)
            jac = np.vstack([self._jacp[:, self.dof_adr], self._jacr[:, self.dof_adr]])
            err = np.concatenate([err_pos, err_rot])
            pinv = jac.T @ np.linalg.inv(jac @ jac.T + self.damping * np.eye(6))
            dq = pinv @ err + (eye - pinv @ jac) @ (self.posture_gain * (self.posture - q))
            q = np.clip(q + dq, self.lower, self.upper)
        return q
