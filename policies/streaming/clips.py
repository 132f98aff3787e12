"""Training clips of the streaming model: random windows of the labelled twin videos, with a camera that sometimes
freezes or replays, and the labels that say so.

Every frame gets sensor noise (``noise_std`` grey levels, Gaussian) first, as a real camera's; then, in a fraction of
clips, one segment of ``segment_frames`` frames is replaced by

* ``frozen``: the frame before the segment, repeated bit for bit (a camera driver that keeps handing out its last
  image);
* ``replay``: an earlier segment of the same clip, as recorded (a log played back into the live stream);
* ``splice``: a segment of another episode (a stream switched to the wrong source).

The replaced frames are labelled ``camera_frozen_or_replayed``; the other labels keep the world's truth (the world
went on while the camera lied). Clips shorter than ``clip_frames`` are padded (``mask`` False there).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from perception.streaming.config import EVENTS
from perception.streaming.loss import StreamTargets
from perception.streaming.model import tokenize
from policies.streaming.data import StreamEpisode

CAMERA = EVENTS.index("camera_frozen_or_replayed")
OFF_TABLE = EVENTS.index("block_off_table")  # frames whose pose label is not trained on (a falling block's)
INJECTIONS = ("frozen", "replay", "splice")


@dataclass
class ClipConfig:
    """How clips are cut and corrupted (frames, probabilities per clip, grey levels)."""

    clip_frames: int = 48  # frames per clip (> the model's sinks + window, so eviction happens inside a clip)
    frozen_prob: float = 0.2  # probability that a clip holds a frozen segment
    replay_prob: float = 0.15  # ... a replayed segment (of its own earlier frames)
    splice_prob: float = 0.1  # ... a segment spliced from another episode
    segment_frames: tuple[int, int] = (4, 16)  # length range of an injected segment (inclusive)
    noise_std: float = 2.0  # sensor noise on every frame, grey levels of 255

    def __post_init__(self) -> None:
        lo, hi = self.segment_frames
        if self.clip_frames < 2 or not 1 <= lo <= hi or 2 * hi + 1 > self.clip_frames:
            raise ValueError(f"clips.clip_frames must be >= 2 * segment_frames[1] + 1 and 1 <= segment_frames[0] <= "
                             f"segment_frames[1]; got {self.clip_frames}, {self.segment_frames}")
        probs = (self.frozen_prob, self.replay_prob, self.splice_prob)
        if min(probs) < 0 or sum(probs) > 1 or self.noise_std < 0:
            raise ValueError(f"clips.frozen_prob, replay_prob and splice_prob must be >= 0 with sum <= 1, noise_std "
                             f">= 0; got {probs}, {self.noise_std}")


@dataclass
class Clip:
    """A window of one episode (N frames), maybe corrupted; arrays share their first dimension N."""

    images: np.ndarray  # (N, H, W, 3) uint8
    pose: np.ndarray  # (N, 3) float32
    progress: np.ndarray  # (N,) float32
    success: np.ndarray  # (N,) bool
    events: np.ndarray  # (N, len(EVENTS)) bool
    mask: np.ndarray  # (N,) bool, False at padding
    task: str


def cut(episode: StreamEpisode, start: int, n_frames: int) -> Clip:
    """Frames ``start .. start + n_frames`` of ``episode`` (padded with zeros and mask False past its end)."""
    stop = min(start + n_frames, len(episode.images))
    pad = n_frames - (stop - start)

    def take(a: np.ndarray) -> np.ndarray:
        part = a[start:stop]
        return np.concatenate((part, np.zeros((pad, *a.shape[1:]), a.dtype))) if pad else part.copy()

    mask = np.arange(n_frames) < stop - start
    return Clip(take(episode.images), take(episode.pose), take(episode.progress), take(episode.success),
                take(episode.events), mask, episode.task)


def add_noise(images: np.ndarray, std: float, rng: np.random.Generator) -> np.ndarray:
    """``images`` (uint8) plus Gaussian noise of ``std`` grey levels, rounded and clipped to uint8."""
    if std == 0:
        return images.copy()
    noisy = images.astype(np.float32) + rng.normal(0.0, std, images.shape).astype(np.float32)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def inject(clip: Clip, kind: str, start: int, length: int, source: np.ndarray | None = None) -> None:
    """Replaces frames ``start .. start + length`` of ``clip`` in place by a ``kind`` of :data:`INJECTIONS` and labels
    them: ``frozen`` repeats frame ``start - 1``; ``replay`` copies frames ``source_start .. + length`` of the clip
    itself, where ``source`` is that start as a 0-d array; ``splice`` copies ``source`` (length, H, W, 3) frames.

    Raises:
        ValueError: an unknown kind, a segment outside the valid frames, or a replay that is not from the past.
    """
    valid = int(clip.mask.sum())
    if kind not in INJECTIONS:
        raise ValueError(f"injection kind must be one of {INJECTIONS}, got {kind!r}")
    if start < 1 or length < 1 or start + length > valid:
        raise ValueError(f"injected segment {start}..{start + length} must lie in frames 1..{valid} of the clip")
    if kind == "frozen":
        clip.images[start:start + length] = clip.images[start - 1]
    elif kind == "replay":
        src = int(source) if source is not None else -1
        if not 0 <= src or src + length > start:
            raise ValueError(f"a replay copies an earlier segment: source start {src} + {length} must be <= {start}")
        clip.images[start:start + length] = clip.images[src:src + length].copy()
    else:
        if source is None or len(source) != length:
            raise ValueError(f"a splice needs {length} source frames")
        clip.images[start:start + length] = source
    clip.events[start:start + length, CAMERA] = True


def sample_clip(episodes: Sequence[StreamEpisode], cfg: ClipConfig, rng: np.random.Generator) -> Clip:
    """A random clip of a random episode, noised, and corrupted with the configured probabilities."""
    episode = episodes[int(rng.integers(len(episodes)))]
    start = int(rng.integers(max(1, len(episode.images) - cfg.clip_frames + 1)))
    clip = cut(episode, start, cfg.clip_frames)
    clip.images = add_noise(clip.images, cfg.noise_std, rng)
    valid = int(clip.mask.sum())
    length = int(rng.integers(cfg.segment_frames[0], cfg.segment_frames[1] + 1))
    kind = rng.choice([*INJECTIONS, "none"], p=[cfg.frozen_prob, cfg.replay_prob, cfg.splice_prob,
                                                 1 - cfg.frozen_prob - cfg.replay_prob - cfg.splice_prob])
    first = length if kind == "replay" else 1  # a replay needs `length` past frames to copy
    if kind == "none" or valid - length <= first:
        return clip
    at = int(rng.integers(first, valid - length + 1))
    if kind == "frozen":
        inject(clip, "frozen", at, length)
    elif kind == "replay":
        inject(clip, "replay", at, length, np.array(rng.integers(0, at - length + 1)))
    else:
        other = episodes[int(rng.integers(len(episodes)))]
        offset = int(rng.integers(max(1, len(other.images) - length + 1)))
        frames = other.images[offset:offset + length]
        if len(frames) < length:
            return clip
        inject(clip, "splice", at, length, add_noise(frames, cfg.noise_std, rng))
    return clip


def collate(clips: Sequence[Clip], max_instruction_tokens: int) -> tuple[torch.Tensor, torch.Tensor, StreamTargets]:
    """``(frames (B, N, 3, H, W) float32 in [0, 1], instruction tokens (B, P), targets)`` of ``clips``; the pose
    counts only while the block is on the table."""
    images = torch.from_numpy(np.stack([c.images for c in clips])).permute(0, 1, 4, 2, 3).float() / 255
    tokens = tokenize([c.task for c in clips], max_instruction_tokens)

    def stack(name: str) -> torch.Tensor:
        return torch.from_numpy(np.stack([getattr(c, name) for c in clips]))

    events, mask = stack("events"), stack("mask")
    targets = StreamTargets(pose=stack("pose").float(), progress=stack("progress").float(),
                            success=stack("success").float(), events=events.float(), mask=mask,
                            pose_mask=mask & ~events[..., OFF_TABLE])
    return images, tokens, targets
