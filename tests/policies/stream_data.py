"""Synthetic labelled streams for the streaming tests (no simulator): random frames, every label class present."""

from __future__ import annotations

import numpy as np

from perception.streaming import EVENTS, StreamingConfig, StreamingModel
from policies.streaming.data import EVENT_INDEX, StreamEpisode


def synthetic_episode(seed: int, n: int = 70) -> StreamEpisode:
    """An episode of ``n`` random 64x64 frames with rising progress, success over the last fifth, and each event of
    the twin (push, contact lost, off table) on some frames; the camera event 0 (the clip sampler injects it)."""
    rng = np.random.default_rng(seed)
    events = np.zeros((n, len(EVENTS)), bool)
    events[10:12, EVENT_INDEX["block_moved_externally"]] = True
    events[20:22, EVENT_INDEX["contact_lost"]] = True
    events[n - 5:, EVENT_INDEX["block_off_table"]] = True
    pose = np.column_stack([rng.uniform(0.4, 0.7, n), rng.uniform(-0.1, 0.1, n), rng.uniform(-3, 3, n)])
    return StreamEpisode(rng.integers(0, 256, (n, 64, 64, 3), dtype=np.uint8), pose.astype(np.float32),
                         np.linspace(0, 1, n, dtype=np.float32), np.arange(n) >= n - n // 5, events,
                         np.zeros(n, bool), "push the T onto the red target", seed, "expert", False, 10.0)


def tiny_model(seed: int = 0) -> StreamingModel:
    """An untrained, very small streaming model (sinks + an 8-frame window)."""
    import torch

    torch.manual_seed(seed)
    return StreamingModel(StreamingConfig(encoder_channels=[8, 8, 8, 8], d_model=32, n_layers=1, n_heads=2,
                                          window=8, max_instruction_tokens=16))
