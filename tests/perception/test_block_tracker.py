"""The ICP block tracker finds the T-block in rendered depth, relocalises it after a jump and refuses wrong fits."""

from __future__ import annotations

import dataclasses

import mujoco
import numpy as np
import pytest

import sim  # noqa: F401  (head-less rendering default)
from perception.block_tracker import BlockTracker, BlockTrackerConfig
from perception.frames import DepthFrame
from perception.object_points import Segmentation, object_points
from perception.protocol import Estimator, Prior
from sim.block_perception import block_surface, depth_block_tracker
from sim.pusht_env import PushTEnv
from sim.pusht_geometry import wrap_angle
from sim.twin import TwinConfig

CAMERAS = ("side", "overhead")
SIZE = (96, 96)
POSE = np.array([0.553, 0.048, 0.32])


@pytest.fixture(scope="module")
def scene():
    env = PushTEnv()
    env.reset(seed=0, options={"pusher_xy": (0.3, -0.25), "block_pose": tuple(POSE)})
    yield env
    env.close()


def _place(env: PushTEnv, pose: np.ndarray) -> None:
    env.set_block_pose(np.asarray(pose, dtype=float))
    mujoco.mj_forward(env.model, env.data)


def _frames(env: PushTEnv, stamp: float) -> list[DepthFrame]:
    from kernels.cameras import camera_intrinsics, world_from_camera_cv

    frames = []
    for camera in CAMERAS:
        depth = env.render_camera(camera, SIZE, depth=True)
        depth[depth > 2.0] = 0.0
        frames.append(DepthFrame(camera, depth, camera_intrinsics(env.model, camera, *SIZE),
                                 world_from_camera_cv(env.model, env.data, camera), stamp))
    return frames


def _prior(env: PushTEnv, time: float, pose: np.ndarray | None) -> Prior:
    return Prior(time=time, pose=None if pose is None else np.asarray(pose, dtype=float),
                 height=float(env.model.geom("block_bar").size[2]), robot_xy=env.pusher_xy)


def _errors(estimate_pose: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    return (float(np.linalg.norm(estimate_pose[:2] - truth[:2])),
            float(np.degrees(abs(wrap_angle(estimate_pose[2] - truth[2])))))


def test_tracker_is_an_estimator_and_recovers_a_known_pose_from_rendered_depth(scene):
    _place(scene, POSE)
    tracker = depth_block_tracker(scene, TwinConfig())
    assert isinstance(tracker, Estimator)
    start = POSE + np.array([0.006, -0.004, 0.08])  # a prediction 7 mm and 4.6 deg off
    estimate = tracker.update(_frames(scene, 0.0), _prior(scene, 0.0, start))
    assert estimate is not None and estimate.time == 0.0
    position, angle = _errors(estimate.pose, POSE)
    assert position < 0.003 and angle < 1.5, (position, angle)
    assert estimate.fitness >= 0.3 and estimate.rmse <= 0.006
    # frames no newer than the last accepted fit are not fitted again
    assert tracker.update(_frames(scene, 0.0), _prior(scene, 0.05, POSE)) is None
    # the block moved 1 cm in 0.1 s: the next estimate carries that velocity
    moved = POSE + np.array([0.01, 0.0, 0.0])
    _place(scene, moved)
    estimate = tracker.update(_frames(scene, 0.1), _prior(scene, 0.1, POSE))
    assert estimate is not None
    np.testing.assert_allclose(estimate.velocity[0], 0.1, atol=0.03)


def test_tracker_relocalises_after_a_jump_once_the_block_is_lost(scene):
    _place(scene, POSE)
    tracker = depth_block_tracker(scene, TwinConfig())
    assert tracker.update(_frames(scene, 0.0), _prior(scene, 0.0, POSE)) is not None
    jumped = np.array([0.60, 0.14, 1.3])  # 10 cm and 1 rad: out of ICP's reach from the last pose
    _place(scene, jumped)
    relocalize_after = tracker.config.relocalize_after
    assert tracker.update(_frames(scene, 0.05), _prior(scene, 0.05, POSE)) is None  # not lost yet: refused
    later = relocalize_after + 0.05
    estimate = tracker.update(_frames(scene, later), _prior(scene, later, POSE))
    assert estimate is not None
    position, angle = _errors(estimate.pose, jumped)
    assert position < 0.003 and angle < 2.0, (position, angle)


def test_without_any_pose_to_start_from_the_tracker_searches(scene):
    _place(scene, POSE)
    tracker = depth_block_tracker(scene, TwinConfig())
    estimate = tracker.update(_frames(scene, 0.0), _prior(scene, 0.0, None))
    assert estimate is not None
    position, angle = _errors(estimate.pose, POSE)
    assert position < 0.003 and angle < 2.0, (position, angle)


def test_tracker_rejects_a_wrong_fit(scene):
    _place(scene, POSE)
    tracker = depth_block_tracker(scene, TwinConfig())
    # the T upside down (pi off): ICP settles on a misaligned T whose loose match is refused
    flipped = POSE + np.array([0.0, 0.0, np.pi])
    assert tracker.update(_frames(scene, 0.0), _prior(scene, 0.0, flipped)) is None
    fit = tracker.fit(object_points(_frames(scene, 0.0), tracker.segmentation, scene.pusher_xy), flipped,
                      _prior(scene, 0.0, None).height)
    assert fit.rmse > tracker.config.max_rmse or fit.fitness < tracker.config.min_fitness, fit
    # a square box is not the T: no fit is accepted, even searching from every yaw
    points, normals = block_surface(scene.model, spacing=0.004)
    box = np.array([[x, y, 0.0] for x in np.linspace(-0.04, 0.04, 21) for y in np.linspace(-0.04, 0.04, 21)])
    box = box + np.array([POSE[0], POSE[1], 0.03])
    searcher = BlockTracker(points, normals, BlockTrackerConfig(max_rmse=0.003))
    assert searcher.locate(box, _prior(scene, 0.0, None)) is None


def test_object_points_drop_table_robot_and_out_of_band_points():
    band = Segmentation(height_band=(0.004, 0.045), robot_radius=0.02)
    intrinsics = np.array([[50.0, 0.0, 2.0], [0.0, 50.0, 2.0], [0.0, 0.0, 1.0]])
    down = np.diag([1.0, -1.0, -1.0])  # camera z = world -z, 1 m above the table
    world_from_camera = np.eye(4)
    world_from_camera[:3, :3], world_from_camera[:3, 3] = down, (0.0, 0.0, 1.0)
    depth = np.full((5, 5), 1.0, np.float32)  # the table (height 0)
    depth[1, 1] = 0.98  # an object point 2 cm high
    depth[3, 3] = 0.98  # another one, under the robot
    depth[2, 2] = 0.5  # 50 cm up: out of band
    frame = DepthFrame("top", depth, intrinsics, world_from_camera)
    points = object_points([frame], band, robot_xy=np.array([0.02, -0.02]))
    assert points.shape == (1, 3)
    np.testing.assert_allclose(points[0], [-0.0196, 0.0196, 0.02], atol=1e-4)
    with pytest.raises(ValueError, match="height_band"):
        Segmentation(height_band=(0.05, 0.01))
    with pytest.raises(ValueError, match="camera 'top'"):
        DepthFrame("top", depth, np.eye(4), world_from_camera)
    with pytest.raises(ValueError, match="min_fitness"):
        BlockTrackerConfig(min_fitness=1.5)


def test_velocity_is_the_slope_over_the_window_across_the_angle_wrap_and_smooths_fit_noise(scene):
    rng = np.random.default_rng(0)
    rate, velocity = 45.0, np.array([0.1, -0.05, 0.8])  # m/s, m/s, rad/s; the yaw crosses pi at the 2nd frame
    start = np.array([0.553, 0.048, np.pi - 0.02])
    windowed, last_two = depth_block_tracker(scene, TwinConfig()), depth_block_tracker(scene, TwinConfig())
    windowed.config = dataclasses.replace(windowed.config, velocity_window=0.1)
    last_two.config = dataclasses.replace(last_two.config, velocity_window=0.0)
    errors: dict[str, list[np.ndarray]] = {"windowed": [], "last_two": []}
    for i in range(14):
        t = i / rate
        pose = start + velocity * t
        _place(scene, pose)
        frames = _frames(scene, t)
        for frame in frames:  # 2 mm depth noise: each fit is off by a fraction of a mm
            frame.depth[frame.depth > 0] += rng.normal(0.0, 0.002, int(np.count_nonzero(frame.depth > 0)))
        for name, tracker in (("windowed", windowed), ("last_two", last_two)):
            estimate = tracker.update(frames, _prior(scene, t, pose))
            assert estimate is not None
            if i >= 5:  # the window is full
                errors[name].append(estimate.velocity - velocity)
    rms = {name: np.sqrt(np.mean(np.square(e), axis=0)) for name, e in errors.items()}
    assert np.all(rms["windowed"] < [0.04, 0.04, 0.25]), rms  # and no 2 pi / dt spike at the wrap
    assert np.all(rms["windowed"] < 0.6 * rms["last_two"]), rms
    with pytest.raises(ValueError, match="velocity_window"):
        BlockTrackerConfig(velocity_window=-0.1)
