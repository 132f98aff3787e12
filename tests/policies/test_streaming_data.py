"""The streaming model's data: twin videos labelled from the twin's state, and clips with injected camera faults."""

from __future__ import annotations

import numpy as np
import pytest

from perception.streaming import EVENTS
from policies.streaming.clips import CAMERA, ClipConfig, collate, cut, inject, sample_clip
from policies.streaming.data import (
    EVENT_INDEX,
    StreamDataConfig,
    StreamLabelConfig,
    derive_events,
    load_stream,
    load_streams,
    save_stream,
)
from tests.policies.stream_data import synthetic_episode


def test_events_come_from_pushes_contact_changes_and_the_table_box():
    cfg = StreamLabelConfig(event_frames=2)
    pose = np.zeros((6, 3))
    pose[5, 0] = 2.0  # off the table (x > 1.0)
    contact = np.array([0, 1, 1, 0, 0, 1], bool)
    pushes = np.array([0, 0, 1, 1, 1, 2])
    events = derive_events(pose, contact, pushes, cfg)
    assert events[:, EVENT_INDEX["block_moved_externally"]].tolist() == [0, 0, 1, 1, 0, 1]
    assert events[:, EVENT_INDEX["contact_lost"]].tolist() == [0, 0, 0, 1, 1, 0]
    assert events[:, EVENT_INDEX["block_off_table"]].tolist() == [0, 0, 0, 0, 0, 1]
    assert not events[:, EVENT_INDEX["camera_frozen_or_replayed"]].any()


def test_bad_label_settings_are_named():
    with pytest.raises(ValueError, match="table_box"):
        StreamLabelConfig(table_box=(1.0, 0.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="clip_frames"):
        ClipConfig(clip_frames=10, segment_frames=(4, 16))


def test_the_collector_labels_two_twin_episodes(tmp_path):
    sim = pytest.importorskip("sim")
    from omegaconf import OmegaConf

    from policies.rewards.rollouts import build_agents
    from policies.streaming.data import collect_streams

    env_cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(sim.TargetsEnvConfig()), {"kwargs": {
        "max_episode_steps": 40, "randomization": {"push_force": 1.5, "push_interval": [0.5, 1.0]}}}))
    data = StreamDataConfig()
    data.rollouts.n_train, data.rollouts.n_heldout, data.rollouts.n_heldout_instructions = 1, 1, 0
    data.rollouts.agent_weights = {"random": 1.0}
    data.labels.shove_prob = 0.0

    def make_agents(env):
        return build_agents(env, lambda e: sim.make_expert(e, env_cfg), lambda e: sim.make_expert(e, env_cfg),
                            data.rollouts)

    done = collect_streams(lambda shove: sim.make_env(env_cfg), make_agents, tmp_path, data, 10.0)
    assert done == {"train": 1, "heldout": 1}
    assert collect_streams(lambda shove: sim.make_env(env_cfg), make_agents, tmp_path, data, 10.0) == \
        {"train": 0, "heldout": 0}  # resumable: nothing left to do
    episodes = load_streams(tmp_path, "train") + load_streams(tmp_path, "heldout")
    for ep in episodes:
        n = len(ep.images)
        assert ep.images.shape == (n, 64, 64, 3) and ep.images.dtype == np.uint8
        assert n == 41 or (ep.success.any() and n <= 41)  # truncated at 40 steps, or 10 steps past a success
        assert 0.0 <= ep.progress.min() <= ep.progress.max() <= 1.0
        assert np.all(np.abs(ep.pose[:, :2] - (0.55, 0.0)) < 0.5) and np.all(np.abs(ep.pose[:, 2]) <= np.pi + 1e-5)
        assert ep.events.shape == (n, len(EVENTS)) and not ep.events[:, CAMERA].any()
    # pushes every 0.5-1 s over 4 s: each episode has some
    assert all(ep.events[:, EVENT_INDEX["block_moved_externally"]].any() for ep in episodes)


def test_an_episode_ends_a_set_number_of_steps_after_its_block_left_the_table():
    sim = pytest.importorskip("sim")
    from omegaconf import OmegaConf

    from policies.streaming.data import off_table, record_stream

    # pushes of 30 N for 0.1 s throw the 0.2 kg block off the table within the first second or two
    env_cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(sim.TargetsEnvConfig()), {"kwargs": {
        "max_episode_steps": 150, "randomization": {"push_force": 30.0, "push_interval": [0.3, 0.5]}}}))
    env = sim.make_env(env_cfg)
    data = StreamDataConfig(labels=StreamLabelConfig(steps_after_off_table=5))
    episode = record_stream(env, sim.make_expert(env, env_cfg), seed=4, data=data)
    env.close()
    gone = np.flatnonzero(off_table(episode.pose, data.labels.table_box))
    assert gone.size and len(episode.images) == gone[0] + 6 < 151  # its first frame off the table, then 5 more
    assert episode.events[gone[0]:, EVENT_INDEX["block_off_table"]].all()


def test_save_and_load_round_trip(tmp_path):
    ep = synthetic_episode(3, n=30)
    back = load_stream(save_stream(ep, tmp_path / "e.npz"))
    assert np.array_equal(back.images, ep.images) and np.array_equal(back.events, ep.events)
    assert back.task == ep.task and back.seed == 3 and back.fps == 10.0


def test_frozen_replayed_and_spliced_frames_are_labelled():
    ep = synthetic_episode(0, n=40)
    clip = cut(ep, 0, 40)
    inject(clip, "frozen", 5, 4)
    assert all(np.array_equal(clip.images[t], ep.images[4]) for t in range(5, 9))
    inject(clip, "replay", 20, 6, np.array(10))
    assert np.array_equal(clip.images[20:26], ep.images[10:16])
    other = synthetic_episode(1, n=10).images[:5]
    inject(clip, "splice", 30, 5, other)
    assert np.array_equal(clip.images[30:35], other)
    expected = np.zeros(40, bool)
    expected[5:9] = expected[20:26] = expected[30:35] = True
    assert np.array_equal(clip.events[:, CAMERA], expected)
    assert np.array_equal(clip.pose, ep.pose)  # the world's truth is kept
    with pytest.raises(ValueError, match="earlier segment"):
        inject(clip, "replay", 10, 6, np.array(8))


def test_sampled_clips_inject_with_the_configured_probability_and_pad_short_episodes():
    episodes = [synthetic_episode(s, n=60) for s in range(3)]
    cfg = ClipConfig(clip_frames=48, frozen_prob=1.0, replay_prob=0.0, splice_prob=0.0, noise_std=2.0)
    rng = np.random.default_rng(0)
    for _ in range(5):
        clip = sample_clip(episodes, cfg, rng)
        flagged = np.flatnonzero(clip.events[:, CAMERA])
        assert cfg.segment_frames[0] <= len(flagged) <= cfg.segment_frames[1]
        assert np.all(np.diff(flagged) == 1)  # one segment
        assert all(np.array_equal(clip.images[t], clip.images[flagged[0] - 1]) for t in flagged)
        assert not np.array_equal(clip.images[flagged[0] - 1], clip.images[flagged[0] - 2])  # noise: no natural repeat
    short = sample_clip([synthetic_episode(0, n=30)], ClipConfig(frozen_prob=0.0, replay_prob=0.0, splice_prob=0.0),
                        rng)
    assert short.mask.sum() == 30 and not short.mask[30:].any()
    frames, tokens, targets = collate([short, short], 32)
    assert frames.shape == (2, 48, 3, 64, 64) and 0.0 <= frames.min() and frames.max() <= 1.0
    assert targets.mask.shape == (2, 48) and tokens.shape[0] == 2
