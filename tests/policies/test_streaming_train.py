"""Training and evaluating the streaming model on synthetic streams: checkpoints, resume, finite figures."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from perception.streaming import EVENTS, load_streaming
from policies.streaming import train as train_module
from policies.streaming.clips import ClipConfig
from policies.streaming.evaluate import (
    StreamEvalConfig,
    StreamPredictions,
    choose_thresholds,
    detect_delay,
    evaluate_streaming,
    f1,
    figures_of,
)
from policies.streaming.train import CHECKPOINT, MODEL_DIR, StreamTrainConfig, train_streaming
from tests.policies.stream_data import synthetic_episode, tiny_model


def _train(out, steps: int):
    model = tiny_model()
    t = StreamTrainConfig(steps=steps, batch_size=2, log_every=1, checkpoint_every=1, warmup_steps=1)
    clips = ClipConfig(clip_frames=20, segment_frames=(2, 6), frozen_prob=0.3, replay_prob=0.3, splice_prob=0.2)
    return train_streaming(model.config, t, clips, [synthetic_episode(s, n=40) for s in range(3)], out)


def test_three_steps_write_a_checkpoint_and_resume_exactly(tmp_path, monkeypatch):
    _train(tmp_path / "a", 3)
    assert torch.load(tmp_path / "a" / CHECKPOINT, weights_only=False)["step"] == 3
    real_step, calls = train_module.train_step, []

    def crash_at_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # the run is killed during its third step
        return real_step(*args, **kwargs)

    monkeypatch.setattr(train_module, "train_step", crash_at_third)
    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path / "b", 3)
    monkeypatch.setattr(train_module, "train_step", real_step)
    assert torch.load(tmp_path / "b" / CHECKPOINT, weights_only=False)["step"] == 2
    resumed = _train(tmp_path / "b", 3)  # continues from step 2: the same weights as 3 steps straight
    straight = load_streaming(tmp_path / "a" / MODEL_DIR)
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), name
    with pytest.raises(ValueError, match="cannot resume"):
        cfg = tiny_model().config
        cfg.d_model = 64
        train_streaming(cfg, StreamTrainConfig(steps=4), ClipConfig(clip_frames=20, segment_frames=(2, 6)),
                        [synthetic_episode(0, n=40)], tmp_path / "a")


def test_f1_and_detection_delay():
    assert f1(np.array([1, 1, 0, 0], bool), np.array([1, 0, 1, 0], bool)) == pytest.approx(0.5)
    assert math.isnan(f1(np.zeros(3, bool), np.zeros(3, bool)))
    prob = np.array([0.9, 0.1, 0.2, 0.7, 0.9])
    assert detect_delay(prob, 1, 4, 0.5) == (2, True)
    assert detect_delay(prob, 1, 2, 0.5) == (2, False)


def test_an_untrained_model_gets_finite_figures_for_sinks_and_window():
    episodes = [synthetic_episode(s, n=70) for s in range(3)]
    figures = evaluate_streaming(tiny_model(), episodes, StreamEvalConfig(segment_frames=8))
    names = ["pose_err_mm", "pose_err_deg", "progress_voc", "success_auc", "frozen_detect_s", "replay_detect_s",
             *(f"event_f1_{e}" for e in EVENTS)]
    for name in names:
        assert math.isfinite(figures[name]), name
        assert math.isfinite(figures[f"window_{name}"]), f"window_{name}"
    assert -1.0 <= figures["progress_voc"] <= 1.0 and 0.0 <= figures["success_auc"] <= 1.0
    assert 0.0 <= figures["frozen_detect_s"] <= 0.8  # at most the 8-frame segment at 10 fps


def _predictions(rng: np.random.Generator, n: int = 400) -> StreamPredictions:
    """Clean-stream answers where the push event's positives score 0.2-0.3 and its negatives 0.0-0.15 (a rare event
    a model calls with low confidence); no off-table frames at all."""
    labels = np.zeros((n, len(EVENTS)), bool)
    labels[rng.choice(n, 20, replace=False), 0] = True
    probs = np.where(labels, rng.uniform(0.2, 0.3, labels.shape), rng.uniform(0.0, 0.15, labels.shape))
    rows = {"xy": [np.zeros(n)], "yaw": [np.zeros(n)], "succ_p": [np.linspace(0, 1, n)],
            "succ_y": [np.arange(n) > n // 2], "ev_p": [probs], "ev_y": [labels], "cam_p": [probs[:, 3]],
            "cam_y": [labels[:, 3]]}
    return StreamPredictions(rows, [1.0], {"frozen": [], "replay": []}, 8, 10.0)


def test_event_thresholds_chosen_on_calibration_streams_find_a_rare_event_that_0_5_misses():
    rng = np.random.default_rng(0)
    calibration, heldout = _predictions(rng), _predictions(rng)
    thresholds = choose_thresholds(calibration, default=0.5)
    assert 0.15 <= thresholds[0] < 0.2  # between the negatives' and the positives' scores
    assert thresholds[2] == 0.5  # no positives to calibrate on: the default
    assert figures_of(heldout, thresholds)["event_f1_block_moved_externally"] == 1.0
    assert figures_of(heldout, np.full(len(EVENTS), 0.5))["event_f1_block_moved_externally"] == 0.0
    figures = evaluate_streaming(tiny_model(), [synthetic_episode(1, n=70)], StreamEvalConfig(segment_frames=8),
                                 calibration=[synthetic_episode(2, n=70)])
    assert all(0.05 <= figures[f"event_threshold_{e}"] <= 0.95 for e in EVENTS)
