"""The streaming video model: one causal pass equals frame-by-frame streaming, the memory stays bounded, checkpoints
round-trip, bad inputs fail clearly, the memory modes agree before eviction, and the loss can be fitted."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from perception.frames import ColorFrame, DepthFrame
from perception.protocol import Estimator, Prior
from perception.streaming import (
    EVENTS,
    StreamingConfig,
    StreamingEstimator,
    StreamingModel,
    StreamTargets,
    load_streaming,
    save_streaming,
    streaming_loss,
    tokenize,
)

FIELDS = ("pose_xy", "pose_cs", "progress_logit", "success_logit", "event_logits")


def tiny(**fields) -> StreamingConfig:
    """A small config for fast tests (window 6 frames, 2 sinks)."""
    base = dict(encoder_channels=[8, 8, 8, 8], d_model=32, n_heads=2, n_layers=2, n_sink=2, window=6)
    return StreamingConfig(**(base | fields))


def model_of(config: StreamingConfig, seed: int = 0) -> StreamingModel:
    torch.manual_seed(seed)
    return StreamingModel(config).eval()


def streamed(model: StreamingModel, frames: torch.Tensor, instruction: torch.Tensor | None = None) -> dict:
    """Frame-by-frame outputs of ``frames`` (B, N, 3, S, S), stacked to (B, N, ...)."""
    cache = model.init_state(frames.shape[0], instruction)
    steps = [model.step(cache, frames[:, i]) for i in range(frames.shape[1])]
    return {name: torch.stack([getattr(s, name) for s in steps], dim=1) for name in FIELDS}


def assert_same(outputs, reference: dict, atol: float = 1e-5) -> None:
    for name in FIELDS:
        torch.testing.assert_close(getattr(outputs, name), reference[name], atol=atol, rtol=0, msg=name)


@pytest.mark.parametrize("memory", ["sinks", "window", "full"])
def test_one_causal_pass_equals_frame_by_frame_while_shorter_than_the_window(memory):
    model = model_of(tiny(memory=memory, window=12))
    frames = torch.rand(2, 10, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    instruction = tokenize(["push the T onto the target", "push"], 32)  # padded: the second is shorter
    with torch.no_grad():
        assert_same(model(frames, instruction), streamed(model, frames, instruction))


@pytest.mark.parametrize("memory", ["sinks", "window"])
def test_the_causal_pass_reproduces_eviction_and_renumbered_positions_past_the_window(memory):
    model = model_of(tiny(memory=memory))
    frames = torch.rand(1, 25, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert_same(model(frames), streamed(model, frames), atol=1e-4)


def test_eviction_keeps_the_cache_bounded_over_a_long_stream():
    config = tiny()
    model = model_of(config)
    cache = model.init_state(1, tokenize(["push"], 32))
    buffer = cache.keys[0].data_ptr()
    bound = 4 + (config.n_sink + config.window) * config.tokens_per_frame  # instruction + sinks + window tokens
    frames = torch.rand(8, 3, 64, 64)
    for i in range(500):
        model.step(cache, frames[i % 8][None])
        assert cache.length <= bound
    assert (cache.length, cache.capacity, cache.evicted) == (bound, bound, 500 - config.n_sink - config.window)
    assert cache.keys[0].data_ptr() == buffer  # evicting shifts in place: nothing is reallocated
    full = model_of(dataclasses.replace(config, memory="full"))
    full_cache = full.init_state(1)
    for i in range(100):
        full.step(full_cache, frames[i % 8][None])
    assert full_cache.length == 100 * config.tokens_per_frame  # the baseline grows


def test_sinks_window_and_full_agree_before_the_first_eviction_and_differ_after():
    frames = torch.rand(1, 14, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    outputs = {}
    for memory in ("sinks", "window", "full"):
        with torch.no_grad():
            outputs[memory] = model_of(tiny(memory=memory, n_sink=2, window=6))(frames)
    before = 6  # memory=window evicts at its 7th frame
    for memory in ("window", "full"):
        for name in FIELDS:
            torch.testing.assert_close(getattr(outputs[memory], name)[:, :before],
                                       getattr(outputs["sinks"], name)[:, :before], atol=1e-5, rtol=0)
    assert not torch.allclose(outputs["window"].pose_xy[:, -1], outputs["sinks"].pose_xy[:, -1], atol=1e-6)
    assert not torch.allclose(outputs["full"].pose_xy[:, -1], outputs["sinks"].pose_xy[:, -1], atol=1e-6)


def test_a_checkpoint_round_trip_gives_identical_outputs(tmp_path):
    model = model_of(tiny(), seed=4)
    frames = torch.rand(1, 9, 3, 64, 64)
    path = save_streaming(model, tmp_path / "streaming")
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "model.safetensors"]  # no temp files left
    loaded = load_streaming(path)
    assert loaded.config == model.config
    with torch.no_grad():
        assert_same(loaded(frames), {name: getattr(model(frames), name) for name in FIELDS}, atol=0)
    assert load_streaming(path, memory="window").config.memory == "window"
    with pytest.raises(FileNotFoundError, match="no streaming model"):
        load_streaming(tmp_path / "missing")
    with pytest.raises(ValueError, match="unknown StreamingConfig fields"):
        load_streaming(path, widht=3)


def test_the_estimator_follows_the_protocol_and_rejects_bad_frames_and_time():
    estimator = StreamingEstimator(model_of(tiny()), camera="overhead", instruction="push the T")
    assert isinstance(estimator, Estimator)
    image = np.zeros((64, 64, 3), np.uint8)
    out = estimator.step(image, 0.0)
    assert out.pose.shape == (3,) and out.event_logits.shape == (len(EVENTS),) and 0 <= float(out.progress) <= 1
    with pytest.raises(ValueError, match=r"must be \(64, 64, 3\) uint8, got \(32, 32, 3\)"):
        estimator.step(np.zeros((32, 32, 3), np.uint8), 1.0)
    with pytest.raises(ValueError, match="float32"):
        estimator.step(np.zeros((64, 64, 3), np.float32), 1.0)
    with pytest.raises(ValueError, match="goes backwards"):
        estimator.step(image, -0.5)
    with pytest.raises(ValueError, match=r"frames must be torch.float32 \(B, 3, 64, 64\)"):
        estimator.model.step(estimator.cache, torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match=r"frames must be torch.float32 \(B, N, 3, 64, 64\).*float64"):
        estimator.model(torch.zeros(1, 2, 3, 64, 64, dtype=torch.float64))
    calibration = (np.eye(3), np.eye(4))
    colour = ColorFrame("overhead", image, *calibration, timestamp=0.1)
    first = estimator.update([DepthFrame("overhead", np.zeros((4, 4), np.float32), *calibration), colour],
                             Prior(time=0.1))
    assert first is not None and first.pose.shape == (3,) and first.time == 0.1
    assert estimator.update([colour], Prior(time=0.1)) is None  # the same frame again: already used
    assert estimator.update([ColorFrame("wrist", image, *calibration, timestamp=0.2)], Prior(time=0.2)) is None
    second = estimator.update([ColorFrame("overhead", image, *calibration, timestamp=0.2)], Prior(time=0.2))
    assert second is not None and second.velocity is not None and np.all(np.isfinite(second.velocity))
    with pytest.raises(ValueError, match="goes backwards"):
        estimator.update([ColorFrame("overhead", image, *calibration, timestamp=0.15)], Prior(time=0.15))
    estimator.reset()
    assert estimator.cache.frames_seen == 0 and estimator.step(image, 0.0) is not None  # a new episode: time restarts


@pytest.mark.parametrize(("fields", "name"), [({"memory": "ring"}, "memory"), ({"window": 0}, "window"),
                                              ({"n_sink": 0}, "n_sink"), ({"n_heads": 3}, "d_model"),
                                              ({"tokens_per_frame": 3}, "tokens_per_frame"),
                                              ({"keypoints": -1}, "keypoints")])
def test_a_bad_config_fails_naming_the_field(fields, name):
    with pytest.raises(ValueError, match=f"StreamingConfig.{name}"):
        StreamingConfig(**fields)


@pytest.mark.parametrize("keypoints", [0, 4])
def test_frame_tokens_see_where_a_spot_is_inside_one_pooling_cell(keypoints):
    """Two frames whose only bright spot sits at two places of the same pooled cell: the keypoints' expected (x, y)
    move towards the second spot (average pooling alone keeps no position inside a cell)."""
    model = model_of(tiny(keypoints=keypoints))
    frames = torch.zeros(2, 3, 64, 64)
    frames[0, :, 4:8, 4:8] = 1.0
    frames[1, :, 20:24, 20:24] = 1.0  # both inside the top-left cell of the 2x2 grid
    tokens = model.encoder(frames)
    assert tokens.shape == (2, 4, 32)
    if keypoints:
        points = model.encoder.keypoints[0](model.encoder.early(frames * 2 - 1)).view(2, keypoints, 2)
        assert (points[1] - points[0]).mean(0).gt(0).all()  # every coordinate moved towards the second spot


def test_frame_change_is_zero_for_a_frozen_frame_and_flags_a_stream_start():
    from perception.streaming.model import CHANGE_CELLS, frame_change

    frame = torch.rand(1, 3, 64, 64)
    noisy = (frame + torch.randn_like(frame) * 2 / 255).clamp(0, 1)
    assert torch.equal(frame_change(frame, None), torch.zeros(1, CHANGE_CELLS ** 2 + 1))  # no previous frame
    frozen = frame_change(frame, frame.clone())
    assert frozen[0, -1] == 1 and frozen[0, :-1].abs().max() == 0
    assert frame_change(noisy, frame)[0, :-1].min() > 0.5  # sensor noise alone changes every cell


def test_replay_match_finds_a_replayed_frame_in_memory_and_not_a_live_noisy_one():
    from perception.streaming.model import replay_match, thumbnail

    scene = torch.rand(1, 3, 64, 64)
    live = [(scene + torch.randn_like(scene) * 2 / 255).clamp(0, 1) for _ in range(6)]  # a still scene, fresh noise
    thumbs = thumbnail(torch.cat(live))  # (6, D)
    memory = thumbs[None, :4]
    everything = torch.ones(1, 4, dtype=torch.bool)
    replayed = replay_match(thumbs[None, 1], memory, everything)  # frame 1 shown again, bit for bit
    fresh = replay_match(thumbs[None, 5], memory, everything)
    assert replayed[0].tolist() == [0.0, 1.0]
    assert fresh[0, 0] > 0.3 and fresh[0, 1] == 1  # sensor noise alone keeps a live frame away from all of them
    assert replay_match(thumbs[None, 1], memory, everything & False)[0].tolist() == [0.0, 0.0]  # nothing to compare
    # in the model: only frames the memory still holds count, and never the frame just before
    model = model_of(tiny(window=4))
    allowed = model._match_allowed(8)
    assert allowed[7].tolist() == [True, True, False, False, True, True, False, False]  # sinks 0-1, 4-5 of window 4-7


def test_pose_labels_off_the_table_do_not_count():
    model = model_of(tiny())
    frames = torch.rand(1, 4, 3, 64, 64)
    pose = torch.zeros(1, 4, 3)
    targets = StreamTargets(pose=pose, progress=torch.zeros(1, 4), success=torch.zeros(1, 4),
                            events=torch.zeros(1, 4, len(EVENTS)), pose_mask=torch.tensor([[True, True, True, False]]))
    loss, _ = streaming_loss(model(frames), targets)
    falling = pose.index_put((torch.tensor([0]), torch.tensor([3])), torch.tensor([3e5, -1e3, 0.0]))
    far = dataclasses.replace(targets, pose=falling)
    far_loss, terms = streaming_loss(model(frames), far)
    assert torch.isfinite(far_loss) and far_loss == loss  # a falling block's label is not trained on
    everything = dataclasses.replace(far, pose_mask=None)
    assert streaming_loss(model(frames), everything)[0] > 1e6 * loss


def test_the_loss_falls_on_one_tiny_batch():
    torch.manual_seed(5)
    model = StreamingModel(tiny(window=4))
    frames = torch.rand(2, 8, 3, 64, 64)
    yaw = torch.linspace(-math.pi, math.pi, 16).view(2, 8)
    targets = StreamTargets(pose=torch.stack((yaw * 0.05, -yaw * 0.03, yaw), -1),
                            progress=torch.linspace(0, 1, 8).repeat(2, 1),
                            success=(torch.arange(8) >= 6).float().repeat(2, 1),
                            events=(torch.rand(2, 8, len(EVENTS)) > 0.7).float())
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        loss, terms = streaming_loss(model(frames), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss))
    assert set(terms) == {f"losses/{n}" for n in ("pose_xy", "pose_yaw", "progress", "success", "events")}
    assert losses[-1] < 0.5 * losses[0]  # soft progress targets leave a cross-entropy floor (~0.5)
    with pytest.raises(ValueError, match="unknown terms"):
        streaming_loss(model(frames), targets, weights={"pose": 1.0})
    with pytest.raises(ValueError, match="StreamTargets.events"):
        StreamTargets(pose=targets.pose, progress=targets.progress, success=targets.success, events=targets.events[..., :2])


def test_the_stream_benchmark_reports_its_figures_at_frame_100_and_the_last():
    from perception.streaming.bench import measure_stream

    figures = measure_stream(StreamingEstimator(model_of(tiny())), n_frames=120, prefix="x_", n_warmup=2)
    assert set(figures) == {f"x_{name}_{n}" for name in ("ms_per_frame", "wall_ms_per_frame", "rss_mb")
                            for n in (100, 120)} | {"x_fps"}
    assert all(value > 0 for value in figures.values())
