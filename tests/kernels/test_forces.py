"""Correction wrenches against a NumPy reference, and pulling a displaced T-block back in MuJoCo."""

from __future__ import annotations

import mujoco
import numpy as np
import pytest
import torch

from kernels import CorrectionForces
from kernels.geom_mesh import body_mesh, quat_to_matrix

# A PushT-like scene of our own: table, T-block (same sizes, masses and friction as sim/assets/pusht.xml)
# and a second free body with curved geoms, so that points must pick the nearer body.
SCENE = """<mujoco><option timestep="0.002" integrator="implicitfast" cone="elliptic" impratio="10"/>
<worldbody>
  <geom name="table" type="box" pos="0.4 0 -0.02" size="0.6 0.5 0.02" friction="0.4 0.005 0.0001"/>
  <body name="block" pos="0.55 0 0.015"><freejoint/>
    <geom name="bar" type="box" pos="0 0.015 0" size="0.075 0.015 0.015" mass="0.111" condim="4" friction="0.4 0.005 0.0001"/>
    <geom name="stem" type="box" pos="0 -0.06 0" size="0.015 0.06 0.015" mass="0.089" condim="4" friction="0.4 0.005 0.0001"/>
  </body>
  <body name="puck" pos="0.3 0.2 0.03"><freejoint/>
    <geom type="cylinder" size="0.03 0.02"/><geom type="sphere" size="0.02" pos="0 0 0.03"/>
  </body>
  <body name="empty" pos="0 0 1"/>
</worldbody></mujoco>"""


@pytest.fixture(scope="module")
def model():
    return mujoco.MjModel.from_xml_string(SCENE)


def _closest_on_triangles(p: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Closest point to p on each triangle (a, b, c) (Ericson, Real-Time Collision Detection 5.1.5)."""
    ab, ac, ap = b - a, c - a, p - a
    d1, d2 = (ab * ap).sum(1), (ac * ap).sum(1)
    bp = p - b
    d3, d4 = (ab * bp).sum(1), (ac * bp).sum(1)
    cp = p - c
    d5, d6 = (ab * cp).sum(1), (ac * cp).sum(1)
    va, vb, vc = d3 * d6 - d5 * d4, d5 * d2 - d1 * d6, d1 * d4 - d3 * d2
    with np.errstate(divide="ignore", invalid="ignore"):
        denom = 1.0 / (va + vb + vc)
        v, w = vb * denom, vc * denom
        out = a + ab * v[:, None] + ac * w[:, None]
        t_ab = d1 / (d1 - d3)
        t_ac = d2 / (d2 - d6)
        t_bc = (d4 - d3) / ((d4 - d3) + (d5 - d6))
    cases = [
        ((d1 <= 0) & (d2 <= 0), a),
        ((d3 >= 0) & (d4 <= d3), b),
        ((d6 >= 0) & (d5 <= d6), c),
        ((vc <= 0) & (d1 >= 0) & (d3 <= 0), a + ab * t_ab[:, None]),
        ((vb <= 0) & (d2 >= 0) & (d6 <= 0), a + ac * t_ac[:, None]),
        ((va <= 0) & ((d4 - d3) >= 0) & ((d5 - d6) >= 0), b + (c - b) * t_bc[:, None]),
    ]
    done = np.zeros(len(a), dtype=bool)
    for cond, value in cases:
        take = cond & ~done
        out[take] = value[take]
        done |= take
    return out


def _reference(model, bodies, points, pos, quat, com, lin, ang, gain, cutoff, damping):
    meshes = [body_mesh(model, b) for b in bodies]
    wrench = np.zeros((len(bodies), 6))
    for p in points:
        best, hit, closest = cutoff, -1, None
        for k, m in enumerate(meshes):
            rot = quat_to_matrix(quat[k])
            local = rot.T @ (p - pos[k])
            tri = m.vertices[m.faces]
            q = _closest_on_triangles(local, tri[:, 0], tri[:, 1], tri[:, 2])
            d = np.linalg.norm(q - local, axis=1)
            j = int(np.argmin(d))
            if d[j] < best:
                best, hit, closest = d[j], k, pos[k] + rot @ q[j]
        if hit < 0:
            continue
        arm = closest - com[hit]
        f = gain * (p - closest) - damping * (lin[hit] + np.cross(ang[hit], arm))
        wrench[hit] += np.concatenate([f, np.cross(arm, f)])
    return wrench


def _random_state(rng):
    quat = rng.normal(size=(2, 4))
    quat /= np.linalg.norm(quat, axis=1, keepdims=True)
    pos = np.array([[0.55, 0.0, 0.015], [0.62, 0.05, 0.03]]) + rng.normal(scale=0.01, size=(2, 3))
    com = pos + rng.normal(scale=0.01, size=(2, 3))
    return pos, quat, com, rng.normal(size=(2, 3)), rng.normal(size=(2, 3))


def test_wrench_matches_numpy_reference(model, rng, device):
    pos, quat, com, lin, ang = _random_state(rng)
    points = np.array([0.58, 0.02, 0.02]) + rng.normal(scale=0.06, size=(400, 3))
    forces = CorrectionForces(model, ["block", "puck"], gain=3.0, cutoff=0.04, damping=0.5, device=device)
    ours = forces(points.astype(np.float32), pos, quat, com, body_lin_vel=lin, body_ang_vel=ang)
    ref = _reference(model, [1, 2], points.astype(np.float32).astype(np.float64), pos, quat, com, lin, ang, 3.0, 0.04, 0.5)
    assert ours.shape == (2, 6)
    assert np.abs(ref).max() > 0.1  # both bodies attract points: the comparison is not vacuous
    np.testing.assert_allclose(ours, ref, rtol=2e-4, atol=2e-4 * np.abs(ref).max())


def test_average_divides_by_attracting_points(model, rng):
    pos, quat, com, _, _ = _random_state(rng)
    points = (np.array([0.58, 0.02, 0.02]) + rng.normal(scale=0.05, size=(300, 3))).astype(np.float32)
    summed = CorrectionForces(model, ["block", "puck"], gain=2.0, cutoff=0.03)(points, pos, quat, com)
    averaged = CorrectionForces(model, ["block", "puck"], gain=2.0, cutoff=0.03, average=True)(points, pos, quat, com)
    ratio = summed[:, 0] / averaged[:, 0]
    assert np.all(ratio > 1.5) and np.allclose(summed, averaged * ratio[:, None], rtol=1e-4)
    assert np.allclose(ratio, np.round(ratio), atol=1e-3)  # the divisor is a point count


def test_batched_worlds_equal_single_world_calls(model, rng):
    forces = CorrectionForces(model, ["block", "puck"], gain=1.5, cutoff=0.05)
    states = [_random_state(rng) for _ in range(3)]
    points = (np.array([0.58, 0.02, 0.02]) + rng.normal(scale=0.05, size=(3, 200, 3))).astype(np.float32)
    valid = rng.random((3, 200)) < 0.7
    batched = forces(torch.from_numpy(points), np.stack([s[0] for s in states]), np.stack([s[1] for s in states]),
                     np.stack([s[2] for s in states]), valid=torch.from_numpy(valid))
    assert isinstance(batched, torch.Tensor) and batched.shape == (3, 2, 6)
    for w, (pos, quat, com, _, _) in enumerate(states):
        single = forces(points[w][valid[w]], pos, quat, com)
        np.testing.assert_allclose(batched[w].numpy(), single, rtol=1e-5, atol=1e-6)


def _t_block_surface(rng, n: int) -> np.ndarray:
    """Points on the visible surface of the T (top and sides; no bottom, no faces shared by the two boxes)."""
    boxes = [
        (np.array([0, 0.015, 0]), np.array([0.075, 0.015, 0.015])),
        (np.array([0, -0.06, 0]), np.array([0.015, 0.06, 0.015])),
    ]
    pts = []
    for centre, half in boxes:
        u = rng.uniform(-1, 1, (n, 3))
        u[np.arange(n), rng.integers(0, 3, n)] = rng.choice([-1.0, 1.0], n)
        pts.append(centre + u * half)
    p = np.concatenate(pts)
    inside = [np.all(np.abs(p - c) < h - 1e-9, axis=1) for c, h in boxes]
    return p[~inside[0] & ~inside[1] & (p[:, 2] > -0.015 + 1e-9)]


def test_forces_pull_displaced_block_back_to_observed_pose(model, rng):
    data = mujoco.MjData(model)
    goal_pos, goal_yaw = np.array([0.55, 0.0, 0.015]), 0.3
    rot = np.array([[np.cos(goal_yaw), -np.sin(goal_yaw), 0], [np.sin(goal_yaw), np.cos(goal_yaw), 0], [0, 0, 1]])
    observed = _t_block_surface(rng, 400) @ rot.T + goal_pos  # what a segmented depth camera would see
    yaw0 = goal_yaw + np.deg2rad(10.0)
    data.qpos[:7] = [*(goal_pos + [0.02, -0.015, 0.0]), np.cos(yaw0 / 2), 0, 0, np.sin(yaw0 / 2)]
    mujoco.mj_forward(model, data)
    # Averaged: the block feels 2000 N/m and 10 N s/m whatever the number of points; static friction
    # (0.4 * 0.2 kg * g = 0.8 N) then stops it within ~0.5 mm. Corrections at 250 Hz (2 physics steps each), 1 s.
    forces = CorrectionForces(model, ["block"], gain=2000.0, cutoff=0.05, damping=10.0, average=True)
    for _ in range(250):
        data.xfrc_applied[:] = forces.wrench_from_data(data, observed)
        mujoco.mj_step(model, data, nstep=2)
    yaw = 2 * np.arctan2(data.qpos[6], data.qpos[3])
    assert np.linalg.norm(data.qpos[:2] - goal_pos[:2]) < 0.002
    assert abs(np.rad2deg(yaw - goal_yaw)) < 1.0


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m, f, s: CorrectionForces(m, ["nope"], gain=1, cutoff=0.1), "body 'nope' does not exist"),
        (lambda m, f, s: CorrectionForces(m, [], gain=1, cutoff=0.1), "bodies must list at least one body"),
        (lambda m, f, s: CorrectionForces(m, ["block"], gain=0, cutoff=0.1), "gain must be > 0"),
        (lambda m, f, s: CorrectionForces(m, ["empty"], gain=1, cutoff=0.1), "body 'empty' has no geoms"),
        (lambda m, f, s: f(np.ones((5, 2), np.float32), *s[:3]), r"points must have shape \(N, 3\)"),
        (lambda m, f, s: f(np.full((5, 3), np.nan, np.float32), *s[:3]), "points contains NaN"),
        (lambda m, f, s: f(np.ones((0, 3), np.float32), *s[:3]), "points is empty"),
        (lambda m, f, s: f(np.ones((5, 3), np.float32), s[0][:1], *s[1:3]), r"body_pos must have shape \(2, 3\)"),
        (lambda m, f, s: f(np.ones((5, 3), np.float32), s[0], s[1] * 2, s[2]), "body_quat must hold unit quaternions"),
        (lambda m, f, s: CorrectionForces(m, ["block", "puck"], gain=1, cutoff=0.1, damping=1.0)(
            np.ones((5, 3), np.float32), *s[:3]), "body_lin_vel and body_ang_vel are required"),
    ],
)
def test_forces_reject_bad_input(model, rng, call, message):
    forces = CorrectionForces(model, ["block", "puck"], gain=1.0, cutoff=0.1)
    with pytest.raises(ValueError, match=message):
        call(model, forces, _random_state(rng))
