"""The streaming monitor's core: frames of any size are resized for the model, live frames get the training noise
(seeded), its answers are recorded and logged under monitor/ keys, and its config errors name the key."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from perception.streaming import EVENTS, StreamingConfig, StreamingEstimator, StreamingModel
from perception.streaming.monitor import MonitorConfig, StreamMonitor


def tiny_monitor(**fields) -> StreamMonitor:
    torch.manual_seed(0)
    model = StreamingModel(StreamingConfig(encoder_channels=[8, 8, 8, 8], d_model=32, n_layers=1, n_heads=2, window=8))
    return StreamMonitor(StreamingEstimator(model), MonitorConfig(name="streaming", path="unused", **fields))


def test_a_frame_of_another_size_is_resized_and_every_answer_is_recorded(tmp_path):
    monitor = tiny_monitor()
    monitor.reset(seed=3)
    frames = np.random.default_rng(0).integers(0, 256, (3, 96, 96, 3), dtype=np.uint8)
    answers = [monitor.observe(frame, 0.1 * t) for t, frame in enumerate(frames)]
    assert [a.step for a in answers] == [0, 1, 2]
    metrics = answers[-1].metrics()
    assert set(metrics) == {"monitor/progress", "monitor/success_prob", *(f"monitor/event/{e}" for e in EVENTS)}
    assert all(0.0 <= v <= 1.0 for v in metrics.values())
    rows = [json.loads(line) for line in monitor.save(tmp_path / "m.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and rows[2]["progress"] == pytest.approx(answers[2].progress)
    assert set(rows[0]["events"]) == set(EVENTS) and len(rows[0]["pose"]) == 3


def test_live_frames_get_the_training_noise_seeded_so_a_static_scene_does_not_look_frozen(monkeypatch):
    seen = []
    monitor = tiny_monitor(input_noise=2.0)
    original = monitor.estimator.step
    monkeypatch.setattr(monitor.estimator, "step", lambda image, t: (seen.append(image.copy()), original(image, t))[1])
    still = np.full((64, 64, 3), 128, np.uint8)  # a rendered static scene: bit-identical frames
    monitor.reset(seed=5)
    monitor.observe(still, 0.0)
    monitor.observe(still, 0.1)
    first_run = [s.copy() for s in seen]
    assert not np.array_equal(seen[0], seen[1])  # the model never sees two identical frames
    assert abs(float(seen[0].astype(float).std()) - 2.0) < 0.2  # std 2 grey levels, as in training
    seen.clear()
    monitor.reset(seed=5)
    monitor.observe(still, 0.0)
    assert np.array_equal(seen[0], first_run[0])  # reproducible per episode seed
    seen.clear()
    quiet = tiny_monitor(input_noise=0.0)
    monkeypatch.setattr(quiet.estimator, "step", lambda image, t: (seen.append(image.copy()), original(image, t))[1])
    quiet.observe(still, 0.0)
    assert np.array_equal(seen[0], still)


def test_success_call_follows_the_threshold(monkeypatch):
    monitor = tiny_monitor(success_threshold=0.9)
    assert not monitor.success_called  # no frame yet
    answer = monitor.observe(np.zeros((64, 64, 3), np.uint8), 0.0)
    assert monitor.success_called == (answer.success_prob > 0.9)


def test_config_errors_name_the_key(tmp_path):
    with pytest.raises(ValueError, match="monitor.path"):
        MonitorConfig(name="streaming")
    with pytest.raises(ValueError, match="monitor.name"):
        MonitorConfig(name="vlm")
    with pytest.raises(ValueError, match="monitor.success_threshold"):
        MonitorConfig(name="streaming", path="x", success_threshold=1.0)
    with pytest.raises(ValueError, match="monitor.input_noise"):
        MonitorConfig(input_noise=-1.0)
    with pytest.raises(FileNotFoundError, match="monitor.path"):
        StreamMonitor.from_config(MonitorConfig(name="streaming", path=str(tmp_path / "nothing")))
    assert StreamMonitor.from_config(MonitorConfig()) is None


def test_bad_frames_are_refused():
    monitor = tiny_monitor()
    with pytest.raises(ValueError, match="uint8"):
        monitor.observe(np.zeros((64, 64, 3), np.float32), 0.0)
