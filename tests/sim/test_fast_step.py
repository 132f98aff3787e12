"""The cheaper env step (allocation-free IK, goal-frame coverage) gives what the original code path gave."""

from __future__ import annotations

import math

import mujoco
import numpy as np
import pytest
from shapely.geometry import Polygon
from shapely.ops import unary_union

from sim.bench import mj_step_floor_steps_per_s
from sim.factory import EnvConfig
from sim.ik import DifferentialIK
from sim.pusht_env import PushTEnv
from sim.pusht_geometry import TShape, clip_convex, polygon_area


def _reference_solve(ik: DifferentialIK, q_init, target_pos, target_rot, iterations=10, tolerance=5e-5):
    """``DifferentialIK.solve`` as it was before it was made allocation-free (kept here as the reference)."""
    q = np.clip(np.asarray(q_init, dtype=float).copy(), ik.lower, ik.upper)
    eye = np.eye(len(q))
    jacp, jacr = np.zeros((3, ik.model.nv)), np.zeros((3, ik.model.nv))
    for _ in range(iterations):
        pos, rot = ik.site_pose(q)
        err_pos = target_pos - pos
        err_rot = 0.5 * (rot[[1, 2, 0]] * target_rot[[2, 0, 1]] - rot[[2, 0, 1]] * target_rot[[1, 2, 0]]).sum(1)
        if np.linalg.norm(err_pos) < tolerance and np.linalg.norm(err_rot) < 10 * tolerance:
            break
        mujoco.mj_comPos(ik.model, ik.data)
        mujoco.mj_jacSite(ik.model, ik.data, jacp, jacr, ik.site_id)
        jac = np.vstack([jacp[:, ik.dof_adr], jacr[:, ik.dof_adr]])
        err = np.concatenate([err_pos, err_rot])
        pinv = jac.T @ np.linalg.inv(jac @ jac.T + ik.damping * np.eye(6))
        dq = pinv @ err + (eye - pinv @ jac) @ (ik.posture_gain * (ik.posture - q))
        q = np.clip(q + dq, ik.lower, ik.upper)
    return q


def _reference_coverage(shape: TShape, pose, goal) -> float:
    """Coverage as it was: world-frame polygons of both T's clipped pairwise (``clip_convex``)."""
    overlap = sum(polygon_area(clip_convex(a, b)) for a in shape.polygons(pose) for b in shape.polygons(goal))
    return float(np.clip(overlap / shape.area, 0.0, 1.0))


class _ReferenceTShape(TShape):
    def coverage(self, pose, goal) -> float:
        return _reference_coverage(self, pose, goal)


def _rollout(env: PushTEnv, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    obs, _ = env.reset(seed=11)
    states, rewards, targets = [], [], []
    for action in actions:
        obs, reward, _, _, info = env.step(action)
        states.append(np.concatenate([obs["observation.state"], obs["observation.environment_state"],
                                      obs["observation.joint_position"], obs["observation.joint_velocity"]]))
        rewards.append(reward)
        targets.append(info["joint_targets"])
    return np.array(states), np.array(rewards), np.array(targets)


def test_ik_solve_is_bit_identical_to_the_reference_solver():
    env = PushTEnv(render_mode=None)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    rot = np.array([[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, -1.0]])
    q = env._joint_targets.copy()
    for _ in range(30):
        target = np.array([*rng.uniform((0.3, -0.25), (0.75, 0.35)), env.config.pusher_height])
        ours = env.ik.solve(q, target, rot)
        np.testing.assert_array_equal(ours, _reference_solve(env.ik, q, target, rot))
        q = ours


def test_200_step_rollout_matches_the_reference_code_path():
    # Fixed actions sweeping the pusher through the block's neighbourhood (contacts happen), 200 steps.
    rng = np.random.default_rng(3)
    actions = rng.uniform((0.3, -0.25), (0.75, 0.35), size=(200, 2))
    fast = PushTEnv(joints=True, render_mode=None)
    reference = PushTEnv(joints=True, render_mode=None)
    reference.ik.solve = lambda *args, **kw: _reference_solve(reference.ik, *args, **kw)
    reference.shape = _ReferenceTShape(reference.shape.centers, reference.shape.half_sizes)
    states, rewards, targets = _rollout(fast, actions)
    ref_states, ref_rewards, ref_targets = _rollout(reference, actions)
    assert np.ptp(ref_rewards) > 0.01  # the block moved: the rollout exercises contact and reward
    # The IK does the same float operations in the same order, so joint targets and hence the physics are
    # bit-identical; coverage only reorders a few float sums (it never feeds back into the physics), hence 1e-12.
    np.testing.assert_array_equal(targets, ref_targets)
    np.testing.assert_array_equal(states, ref_states)
    np.testing.assert_allclose(rewards, ref_rewards, rtol=0, atol=1e-12)


def _shapely_t(shape: TShape, pose) -> Polygon:
    return unary_union([Polygon(p) for p in shape.polygons(np.asarray(pose))])


def test_goal_frame_coverage_matches_shapely_and_the_world_frame_clip():
    shape = PushTEnv(render_mode=None).shape
    rng = np.random.default_rng(1)
    for goal in ([0.55, 0.05, math.pi / 4], [0.4, -0.1, -2.5], [0.0, 0.0, 0.0]):
        goal = np.array(goal)
        goal_poly = _shapely_t(shape, goal)
        for i in range(150):
            scale = (0.005, 0.05, 0.2)[i % 3]  # almost on the goal, overlapping, mostly apart
            pose = goal + rng.normal(0, [scale, scale, 10 * scale])
            expected = _shapely_t(shape, pose).intersection(goal_poly).area / goal_poly.area
            ours = shape.coverage(pose, goal)
            assert ours == pytest.approx(expected, abs=1e-9)
            assert ours == pytest.approx(_reference_coverage(shape, pose, goal), abs=1e-12)
        assert shape.coverage(goal, goal) == pytest.approx(1.0, abs=1e-12)
        # Flipped by pi about the goal's centroid-free origin: only partly covered, as shapely says.
        flipped = goal + [0.0, 0.0, math.pi]
        assert shape.coverage(flipped, goal) == pytest.approx(
            _shapely_t(shape, flipped).intersection(goal_poly).area / goal_poly.area, abs=1e-9)


def test_mj_step_floor_measures_the_envs_own_physics():
    rate = mj_step_floor_steps_per_s(EnvConfig(), n_steps=5)
    assert math.isfinite(rate) and rate > 0
