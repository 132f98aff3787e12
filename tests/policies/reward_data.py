"""Tiny twin-like reward data for the TOPReward evaluation tests: rollouts on disk in the rollouts module's format
(a white square whose x position is the true progress) and an untrained native model saved like a training run's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from policies.rewards.native import NativeVLM, NativeVLMConfig, build_tokenizer, save_native
from policies.rewards.rollouts import Rollout, save_rollout

TASK = "push the T onto the red target"
HELDOUT_TASK = "shove the tee over to the red disc"
TINY = NativeVLMConfig(image_size=32, channels=(8, 16), num_keypoints=4, d_model=32, n_layers=2, n_heads=2,
                       max_frames=32)
SPLITS = {"train": (0, TASK), "heldout": (100, TASK), "heldout_instructions": (200, HELDOUT_TASK)}


def square_rollout(progress: np.ndarray, seed: int, task: str = TASK, fps: float = 10.0) -> Rollout:
    """Frames of a white square at x = progress (0: left, 1: right); success once progress >= 0.9."""
    images = np.full((len(progress), 32, 32, 3), 40, np.uint8)
    for t, p in enumerate(progress):
        x = int(round(2 + p * 22))
        images[t, 12:20, x:x + 8] = 255
    return Rollout(images, progress.astype(np.float32), progress >= 0.9, task, seed, "synthetic", fps)


def write_rollouts(root: Path, n: int = 4, n_frames: int = 25) -> Path:
    """``n`` rollouts per split under ``root/<split>/episode_<seed>.npz``, alternately reaching 1 (success) and
    stopping short (failure), at 10 fps."""
    for split, (first_seed, task) in SPLITS.items():
        for i in range(n):
            final = 1.0 if i % 2 == 0 else 0.3 + 0.1 * i
            progress = np.clip(np.linspace(0.0, final, n_frames), 0, 1)
            seed = first_seed + i
            save_rollout(square_rollout(progress, seed, task), root / split / f"episode_{seed:06d}.npz")
    return root


def save_tiny_native(directory: Path, seed: int = 0) -> Path:
    """An untrained tiny native reward model saved in ``directory`` (what ``load_native`` reads)."""
    torch.manual_seed(seed)
    tokenizer = build_tokenizer([TASK, HELDOUT_TASK])
    return save_native(NativeVLM(TINY, len(tokenizer)).eval(), tokenizer, directory)
