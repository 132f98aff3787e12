"""sim.batched_ik.BatchedIK against the single-world DifferentialIK it vectorises."""

from __future__ import annotations

import mujoco
import numpy as np
import pytest

from sim.batched_ik import BatchedIK
from sim.ik import DifferentialIK
from sim.pusht_env import ARM_JOINTS, NOMINAL_POSTURE, PUSHER_DOWN, scene_path


@pytest.fixture(scope="module")
def model() -> mujoco.MjModel:
    return mujoco.MjModel.from_xml_path(scene_path())


def test_batched_solves_match_the_single_solver_to_rounding(model):
    single = DifferentialIK(model, "pusher_tip", ARM_JOINTS, posture=NOMINAL_POSTURE)
    batched = BatchedIK(model, "pusher_tip", ARM_JOINTS, posture=NOMINAL_POSTURE)
    rng = np.random.default_rng(0)
    q0 = NOMINAL_POSTURE + rng.normal(0, 0.2, (32, 7))
    targets = np.column_stack([rng.uniform(0.35, 0.75, 32), rng.uniform(-0.2, 0.2, 32), np.full(32, 0.005)])
    want = np.array([single.solve(q, t, PUSHER_DOWN) for q, t in zip(q0, targets)])
    # Same algebra in another summation order: differences are float rounding (~1e-15), far below the 5e-5 m stop.
    np.testing.assert_allclose(batched.solve(q0, targets, PUSHER_DOWN), want, atol=1e-10)
    pos, rot, jac = batched.site_pose_and_jacobian(q0[:1])
    ref_pos, ref_rot = single.site_pose(q0[0])
    np.testing.assert_allclose(pos[0], ref_pos, atol=1e-12)
    np.testing.assert_allclose(rot[0], ref_rot, atol=1e-12)
    mujoco.mj_comPos(model, single.data)
    jacp, jacr = np.zeros((3, model.nv)), np.zeros((3, model.nv))
    mujoco.mj_jacSite(model, single.data, jacp, jacr, single.site_id)
    np.testing.assert_allclose(jac[0], np.vstack([jacp, jacr])[:, single.dof_adr], atol=1e-12)


def test_a_chain_with_unnamed_joints_is_refused(model):
    with pytest.raises(ValueError, match="joints the solver does not move"):
        BatchedIK(model, "pusher_tip", ARM_JOINTS[:6])
