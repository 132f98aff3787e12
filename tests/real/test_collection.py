"""Collect mode across processes: the emulated reality runs in its own server process (no shared memory), the expert
teleoperator drives it through the bridge, the twin here follows the robot's measured joints and is corrected from
depth frames while reality's block gets pushes the twin never sees; episodes are recorded from the twin's state."""

from __future__ import annotations

import functools
import os
import subprocess
import sys

import numpy as np
import pytest

import sim  # noqa: F401  (head-less rendering default)
from policies.datasets import LeRobotDatasetReader, LeRobotDatasetWriter, features_from_spaces
from real.bridge.client import RemoteRobot, RemoteRobotConfig
from real.bridge.server import ServerProcess
from real.emulated.reality import EmulatedRealityConfig, EmulatedRealityRobot
from real.modes.collect import CollectConfig, Collector, ExpertTeleoperator
from sim.pusht_env import TASK, PushTEnv
from sim.twin import DigitalTwin, TwinConfig
from tests.conftest import REPO_ROOT

SEED = 100002
STEPS = 50


@pytest.fixture
def reality():
    config = EmulatedRealityConfig(seed=SEED, camera_hz=45)  # 1.5 N pushes every 2-4 s: 1-2 in the 5 s episode
    with ServerProcess(functools.partial(EmulatedRealityRobot, config)) as process:
        yield process


def _twin(mode: str = "collect") -> DigitalTwin:
    return DigitalTwin(PushTEnv(), TwinConfig(mode=mode, rate_hz=45, depth_size=(96, 96)))


@pytest.mark.slow
def test_collected_episode_is_recorded_from_a_twin_that_follows_reality(reality, tmp_path):
    twin = _twin()
    robot = RemoteRobot(RemoteRobotConfig(port=reality.address[1]))
    collector = Collector(twin, robot, ExpertTeleoperator(twin.env), CollectConfig(seed=SEED, max_steps=STEPS))
    episode = collector.run()
    metrics = episode.metrics
    assert not robot.is_connected  # left holding and disconnected

    features = features_from_spaces(twin.env.observation_space, twin.env.action_space)
    with LeRobotDatasetWriter(tmp_path / "demos", fps=10, features=features) as writer:
        assert episode.write(writer, task=TASK) == 0
    dataset = LeRobotDatasetReader(tmp_path / "demos")
    assert dataset.num_episodes == 1 and dataset.num_frames == len(episode.frames) == metrics["steps"]
    assert metrics["steps"] == STEPS or metrics["success_twin"] == 1.0
    for key in ("observation.state", "observation.environment_state", "action"):
        assert dataset.features[key] == features[key]
    state, action = dataset.array("observation.state"), dataset.array("action")
    assert state.dtype == np.float32 and state.shape == (len(episode.frames), 2) and action.shape == state.shape
    np.testing.assert_array_equal(action, np.array([frame["action"] for frame in episode.frames]))
    space = twin.env.action_space
    assert np.all((action >= space.low) & (action <= space.high))  # the env's pusher_xy actions
    env_state = dataset.array("observation.environment_state")
    np.testing.assert_allclose(np.hypot(env_state[:, 2], env_state[:, 3]), 1.0, atol=1e-5)  # (x, y, cos, sin)

    # The twin's arm followed the robot's measured joints: the recorded pusher is where the measured joints put it
    # (up to the velocity extrapolation between measurement and frame, at most twin.MAX_FOLLOW_LEAD = 50 ms), and
    # the pusher really travelled. Measured here (8 runs): median 0.0-2.4 mm (the joint state is up to one 10 ms
    # physics batch of the reality old), max 2-7 mm.
    fk = np.array([twin.env.ik.site_pose(q)[0][:2] for q in episode.measured_joints])
    gap = np.linalg.norm(fk - state, axis=1)
    assert np.median(gap) < 0.005 and gap.max() < 0.025, gap
    assert np.linalg.norm(np.diff(state, axis=0), axis=1).sum() > 0.1

    # The twin's block stayed with reality's (truth at its capture time) despite pushes the twin never saw. Judged
    # by the share of truth readings the twin's block was within 5 mm / 3 deg of, which a push's transient (up to
    # ~30 mm for a few readings) barely moves. Measured (2026-12-07, seeds 100002-17): 0.86-0.96 with correction over
    # 44 runs (idle, a busy core, a 0.3 s stall of the twin, pushes twice as hard), 0.75 once with two runaway
    # processes on the 2 cores; 0.17-0.56 open loop (twin.correction=none, 4 runs; RMS 10-34 mm against 1.4-4.3).
    # The RMS bound only catches gross loss (one CI run reached 8.1 mm; bench.py sync measures the distribution).
    errors = episode.sync_errors
    assert len(errors) >= 100, metrics
    near = (float(np.mean(errors[:, 0] < 0.005)), float(np.mean(np.degrees(errors[:, 1]) < 3.0)))
    figures = {key: metrics[key] for key in ("sync_rms_mm", "sync_rms_deg", "correction_hz", "stream_hz")}
    assert min(near) > 0.65, (near, figures)
    assert metrics["sync_rms_mm"] < 15.0 and metrics["sync_rms_deg"] < 8.0, figures
    assert metrics["correction_hz"] > 30 and metrics["stream_hz"] > 80, metrics
    # Real coverage is judged from the last truth reading (not compared with the twin's: near the goal 1 mm of pose
    # error is 0.02 of coverage, and an episode ending on twin success measured 0.96 in the twin, 0.72 in truth).
    assert 0.0 <= metrics["coverage_real"] <= 1.0 and metrics["success_real"] in (0.0, 1.0), metrics
    assert metrics["tracking_rms_rad"] < 0.2, metrics


def test_collector_refuses_a_twin_not_in_collect_mode():
    twin = _twin(mode="deploy")
    robot = RemoteRobot(RemoteRobotConfig(port=9))  # never connected: refused before any I/O
    collector = Collector(twin, robot, ExpertTeleoperator(twin.env), CollectConfig(seed=SEED, max_steps=5))
    with pytest.raises(ValueError, match="twin.mode='collect'.*'deploy'"):
        collector.run()
    assert not robot.is_connected


def test_expert_teleoperator_without_truth_says_what_it_needs():
    env = PushTEnv()
    _, info = env.reset(seed=SEED)
    teleop = ExpertTeleoperator(env)
    teleop.reset(SEED)
    with pytest.raises(ValueError, match="truth.block_pose.*leader arm"):
        teleop.command({"joint.pos": info["joint_targets"]}, {})


def _collect(*overrides: str) -> dict[str, str]:
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "GOMP_SPINCOUNT": "2000"}
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "collect.py"), *overrides], cwd=REPO_ROOT,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"collect.py failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return dict(line.split(": ", 1) for line in proc.stdout.splitlines() if ": " in line and not line.startswith(" "))


@pytest.mark.slow
def test_collect_script_records_then_resumes_a_dataset(tmp_path):
    root = tmp_path / "collected"
    common = ("collect.max_steps=8", f"dataset.root={root}", "dataset.keep_failed=true", f"hydra.run.dir={tmp_path}")
    first = _collect("n_episodes=1", *common)
    assert first["episodes_saved"] == "1" and first["frames_saved"] == "8" and first["dataset_episodes"] == "1"
    assert float(first["correction_hz"]) > 30 and np.isfinite(float(first["sync_rms_mm"]))
    second = _collect("n_episodes=2", *common)  # resumes: one more episode, from the next seed
    assert second["episodes_attempted"] == "1" and second["dataset_episodes"] == "2"
    dataset = LeRobotDatasetReader(root)
    assert dataset.num_episodes == 2 and dataset.num_frames == 16
    first_states = [dataset.episode(i, ["observation.environment_state"])["observation.environment_state"][0]
                    for i in range(2)]
    assert not np.allclose(first_states[0], first_states[1])  # the second episode started from another seed
