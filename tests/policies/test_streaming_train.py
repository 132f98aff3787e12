"""Training and evaluating the streaming model on synthetic streams: checkpoints, resume, finite figures."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from perception.streaming import EVENTS, load_streaming
from policies.streaming import train as train_module
from policies.streaming.clips import ClipConfig
from policies.streaming.evaluate import StreamEvalConfig, detect_delay, evaluate_streaming, f1
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
