"""Reward-aligned behaviour cloning (TOPReward, arXiv 2602.19313): per-sample BC weights from progress deltas.

Before training, every episode of the demonstration dataset is scored once by a TOPReward backend
(:func:`dataset_progress`: K prefixes at 2 FPS, min-max per episode, interpolated to every frame), and the per-frame
progress is cached next to the dataset (``<root>/meta/topreward_<hash>.npy``, keyed by backend, model path and the
model files' sizes and times, k, sampling rate, image key and the dataset's frame count). For a training window
starting at frame ``t`` whose action chunk spans ``H`` steps::

    delta  = progress[min(t + H, last)] - progress[t]            (last: the episode's last frame)
    weight = 0                                 if delta <= 0     (the chunk made no progress: not imitated)
           = delta / max(positive deltas of the batch)           (scale "batch_max": the batch's best chunk has 1)
           = min(delta, 1)                                       (scale "clip": progress units, no batch statistic)

The BC loss is then the weighted mean over samples (:func:`policies.common.flow.flow_matching_loss`, normalised by
the weight sum; a batch whose weights are all 0 gives loss 0). "batch_max" is the default: progress is min-max
normalised per episode, so a chunk's delta is a fraction of its own episode's range, and dividing by the batch's
largest positive delta keeps the mean weight (and so the effective learning rate) comparable across batches.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from policies.datasets.atomic import atomic_path
from policies.datasets.reader import LeRobotDatasetReader
from policies.rewards.backends import build_topreward
from policies.rewards.config import RewardConfig
from policies.rewards.topreward import TOPReward

__all__ = ["SCALES", "ChunkWeights", "RABCConfig", "chunk_deltas", "dataset_progress", "progress_cache_path",
           "rabc_weights", "weight_figures"]

SCALES = ("batch_max", "clip")


@dataclass
class RABCConfig:
    """How reward-aligned BC weights samples (on when the train config selects a ``reward`` group)."""

    image_key: str = "observation.images.overhead"  # the dataset's camera the reward model watches
    scale: str = "batch_max"  # batch_max: delta / the batch's largest positive delta | clip: min(delta, 1)
    score_batch: int = 8  # episodes per backend call when the dataset is scored

    def __post_init__(self) -> None:
        if self.scale not in SCALES:
            raise ValueError(f"rabc.scale must be one of {SCALES}, got {self.scale!r}")
        if self.score_batch < 1:
            raise ValueError(f"rabc.score_batch must be >= 1, got {self.score_batch}")
        if not self.image_key:
            raise ValueError("rabc.image_key must name the dataset's camera, got ''")


def chunk_deltas(progress: np.ndarray, t: np.ndarray, horizon: int, last: np.ndarray) -> np.ndarray:
    """``progress[min(t + horizon, last)] - progress[t]`` per window start ``t`` (global frame indices; ``last``:
    the last frame of each window's episode)."""
    t = np.asarray(t, dtype=np.int64)
    return progress[np.minimum(t + horizon, last)] - progress[t]


def rabc_weights(delta: np.ndarray, scale: str = "batch_max") -> np.ndarray:
    """Per-sample weights in [0, 1] from progress deltas: 0 where ``delta <= 0`` (or NaN), else scaled by ``scale``
    (see the module docstring). An all-non-positive batch gives all zeros.

    Raises: ValueError: an unknown ``scale``.
    """
    if scale not in SCALES:
        raise ValueError(f"rabc.scale must be one of {SCALES}, got {scale!r}")
    delta = np.nan_to_num(np.asarray(delta, dtype=np.float64), nan=0.0)
    positive = np.where(delta > 0, delta, 0.0)
    if scale == "clip":
        return np.minimum(positive, 1.0).astype(np.float32)
    top = positive.max() if positive.size else 0.0
    return (positive / top if top > 0 else positive).astype(np.float32)


def weight_figures(weights: np.ndarray) -> dict[str, float]:
    """``rabc_weight_mean`` and ``rabc_zero_fraction`` (share of samples with weight 0) of a batch's weights."""
    weights = np.asarray(weights, dtype=np.float64)
    return {"rabc_weight_mean": float(weights.mean()), "rabc_zero_fraction": float((weights == 0).mean())}


class ChunkWeights:
    """The weights of training windows of ``dataset``: :func:`rabc_weights` of :func:`chunk_deltas` of ``progress``
    (one value per frame of the dataset) for action chunks of ``horizon`` steps."""

    def __init__(self, dataset: LeRobotDatasetReader, progress: np.ndarray, horizon: int, scale: str) -> None:
        if len(progress) != dataset.num_frames:
            raise ValueError(f"progress has {len(progress)} values, the dataset {dataset.num_frames} frames")
        self.progress, self.horizon, self.scale = np.asarray(progress, dtype=np.float64), int(horizon), scale
        lengths = dataset.episode_lengths
        self.last = np.repeat(dataset.episode_starts + lengths - 1, lengths)

    def __call__(self, t: np.ndarray) -> np.ndarray:
        """Weights ``(B,)`` float32 of the windows starting at global frames ``t`` (one batch)."""
        t = np.asarray(t, dtype=np.int64)
        return rabc_weights(chunk_deltas(self.progress, t, self.horizon, self.last[t]), self.scale)


def _model_fingerprint(path: str) -> list:
    """(name, size, mtime) of the files of a local model dir, so a retrained model at the same path recomputes."""
    root = Path(path).expanduser()
    if not root.is_dir():
        return []
    return sorted([p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in root.iterdir() if p.is_file())


def progress_cache_path(dataset: LeRobotDatasetReader, reward: RewardConfig, image_key: str) -> Path:
    """``<root>/meta/topreward_<hash>.npy``: the hash of everything the progress depends on (see the module)."""
    path = str(Path(reward.path).expanduser().resolve()) if Path(reward.path).expanduser().exists() else reward.path
    key = {"backend": reward.backend, "path": path, "model": _model_fingerprint(reward.path), "k": reward.k,
           "sample_fps": reward.sample_fps, "image_key": image_key, "frames": int(dataset.num_frames),
           "episodes": int(dataset.num_episodes)}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return dataset.root / "meta" / f"topreward_{digest}.npy"


def dataset_progress(dataset: LeRobotDatasetReader, reward: RewardConfig, rabc: RABCConfig,
                     make_reward: Callable[[RewardConfig], TOPReward] = build_topreward) -> np.ndarray:
    """TOPReward progress ``(num_frames,)`` float32 of every frame of ``dataset``, read from the cache or scored now
    (each episode once, ``rabc.score_batch`` at a time) and cached atomically.

    Raises:
        ValueError: ``rabc.image_key`` is not a camera of the dataset (names the key and the cameras).
    """
    cameras = [*dataset.video_keys, *dataset.image_keys]
    if rabc.image_key not in cameras:
        raise ValueError(f"rabc.image_key {rabc.image_key!r} is not a camera of {dataset.root} (cameras: {cameras}); "
                         f"reward-aligned BC scores the episodes' video")
    cache = progress_cache_path(dataset, reward, rabc.image_key)
    if cache.is_file():
        progress = np.load(cache)
        if progress.shape == (dataset.num_frames,):
            return progress
    topreward = make_reward(reward)
    frames = dataset.array(rabc.image_key)
    progress = np.zeros(dataset.num_frames, dtype=np.float32)
    episodes = list(range(dataset.num_episodes))
    for first in tqdm(range(0, len(episodes), rabc.score_batch), desc="TOPReward scoring", unit="batch"):
        chunk = episodes[first:first + rabc.score_batch]
        slices = [dataset.episode_slice(e) for e in chunk]
        results = topreward.score_batch([frames[s] for s in slices],
                                        [dataset.frame_task(s.start) for s in slices], float(dataset.fps))
        for s, result in zip(slices, results, strict=True):
            progress[s] = result.progress
    with atomic_path(cache) as tmp, open(tmp, "wb") as handle:
        np.save(handle, progress)
    return progress

