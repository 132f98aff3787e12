"""The online monitor in deploy mode: it reads the emulated reality's colour frames (rendered only when asked), logs
its answers under monitor/ keys, ends an episode on its success call with end_on_success, and its agreement with
reality's success is counted over episodes."""

from __future__ import annotations

import dataclasses
import functools
import json

import numpy as np
import pytest
import torch

import sim  # noqa: F401  (head-less rendering default)
from perception.streaming import EVENTS, StreamingEstimator
from perception.streaming.monitor import MonitorConfig, StreamMonitor
from real.bridge.client import RemoteRobot, RemoteRobotConfig
from real.bridge.server import ServerProcess
from real.emulated.reality import EmulatedRealityConfig, EmulatedRealityRobot
from real.modes.deploy import DeployConfig, Deployer
from real.modes.monitoring import LiveMonitor, monitor_figures, monitor_record_path, with_monitor_camera
from real.robot_choice import EmulatedRobotChoice
from real.sensors import SensorReading
from sim.expert import PushTExpert
from sim.pusht_env import PushTEnv
from sim.twin import DigitalTwin, TwinConfig
from tests.policies.stream_data import tiny_model

SEED = 100002
TIME_SCALE = 0.5


class StubTracker:
    """Keeps every logged row."""

    def __init__(self) -> None:
        self.rows: list[tuple[int, dict]] = []

    def log(self, metrics: dict, step: int) -> None:
        self.rows.append((step, dict(metrics)))


def live_monitor(tracker=None, **fields) -> LiveMonitor:
    config = MonitorConfig(name="streaming", path="unused", **fields)
    return LiveMonitor(StreamMonitor(StreamingEstimator(tiny_model()), config), tracker)


def test_the_emulated_reality_renders_the_monitors_camera_only_when_asked():
    choice = EmulatedRobotChoice()
    assert choice.reality.color_cameras == ()
    monitored = with_monitor_camera(choice, MonitorConfig(name="streaming", path="x", camera="overhead"))
    assert monitored.reality.color_cameras == ("overhead",) and monitored.reality.time_scale == choice.reality.time_scale
    assert with_monitor_camera(choice, MonitorConfig()) is choice
    assert with_monitor_camera(monitored, MonitorConfig(name="streaming", path="x")) is monitored


def test_live_monitor_skips_a_frame_it_has_seen_and_names_a_missing_camera():
    tracker = StubTracker()
    monitor = live_monitor(tracker)
    monitor.reset(seed=0)
    with pytest.raises(KeyError, match="monitor.camera='overhead'"):
        monitor.observe({"observation.depth.overhead": SensorReading(np.zeros((4, 4), np.float32), 0.0)}, 0)
    frame = SensorReading(np.zeros((96, 96, 3), np.uint8), 1.0)
    assert monitor.observe({"observation.images.overhead": frame}, 0) is not None
    assert monitor.observe({"observation.images.overhead": frame}, 1) is None  # no new frame since
    assert [step for step, _ in tracker.rows] == [0]
    assert set(tracker.rows[0][1]) == {"monitor/progress", "monitor/success_prob",
                                       *(f"monitor/event/{e}" for e in EVENTS)}


def test_agreement_counts_episodes_whose_final_call_matches_reality():
    results = [{"monitor_success": 1.0, "success_real": 1.0}, {"monitor_success": 0.0, "success_real": 1.0},
               {"monitor_success": 0.0, "success_real": 0.0}, {"monitor_success": 1.0, "success_real": float("nan")}]
    assert monitor_figures(results) == {"monitor_success_agreement": pytest.approx(2 / 3), "monitor_episodes": 3}


@pytest.fixture
def reality():
    config = EmulatedRealityConfig(seed=SEED, time_scale=TIME_SCALE, color_cameras=("overhead",))
    with ServerProcess(functools.partial(EmulatedRealityRobot, config)) as process:
        yield process


@pytest.mark.slow
def test_end_on_success_ends_the_deployed_episode_at_the_monitors_call(reality, monkeypatch, tmp_path):
    def forced_success(self, image, timestamp):
        assert image.shape == (64, 64, 3) and image.dtype == np.uint8  # reality's frame, resized for the model
        out = original(self, image, timestamp)
        self.last = dataclasses.replace(out, success_logit=torch.tensor(10.0))
        return self.last

    original = StreamingEstimator.step
    monkeypatch.setattr(StreamingEstimator, "step", forced_success)
    tracker = StubTracker()
    twin = DigitalTwin(PushTEnv(), TwinConfig(rate_hz=30, depth_size=(96, 96)))
    robot = RemoteRobot(RemoteRobotConfig(port=reality.address[1]))
    record = monitor_record_path(tmp_path / "episodes", 0)
    deployer = Deployer(twin, robot, act=PushTExpert.for_env(twin.env).act, tracker=tracker,
                        config=DeployConfig(seed=SEED, max_steps=40, time_scale=TIME_SCALE),
                        monitor=live_monitor(tracker, end_on_success=True), monitor_path=record)
    result = deployer.run()
    assert result["steps"] == 1 and result["monitor_ended"] == 1.0 and result["monitor_success"] == 1.0, result
    rows = [json.loads(line) for line in record.read_text().splitlines()]
    assert len(rows) == result["monitor_frames"] >= 1 and rows[-1]["success_prob"] > 0.99
    logged = {key for _, metrics in tracker.rows for key in metrics}
    assert {"monitor/progress", "monitor/success_prob", "monitor/event/camera_frozen_or_replayed"} <= logged
    assert not robot.is_connected  # left holding and disconnected
