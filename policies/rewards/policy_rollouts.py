"""A policy's own rollouts in vectorised twin envs, recorded for the on-policy loop (:mod:`policies.rewards.improve`).

Episode ``j`` of a call is reset with ``seeds[j]``; episodes run ``num_envs`` at a time (gymnasium vector envs, the
sub-envs of a last partial batch padded with its last seed and ignored). The policy's sampling noise (torch's global
RNG, seeded by the caller) and optionally a wider initial flow noise (:func:`policies.common.flow.initial_noise_scale`)
make the episodes differ from the policy's mode.

Written to ``root`` (one iteration's rollouts)::

    <root>/                     a LeRobotDataset v3 (images lossless, as PNG): frame t = observation t, action t, the
                                instruction as the frame's task; what the update's training windows are cut from
    <root>/meta/twin.npz        per episode: seed, length T, success; per frame of the *video* (T + 1 frames: the
                                observations 0..T, the last one after the final action) the twin's progress; and the
                                final image (the video's last frame, which the dataset has no action for)

The dataset is written after every episode of the call has run, and ``twin.npz`` last; a folder without
``twin.npz`` is incomplete (a killed call) and is recorded again.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from policies.datasets import LeRobotDatasetReader, LeRobotDatasetWriter, features_from_spaces
from policies.datasets.atomic import atomic_path
from policies.evaluation import (
    PolicyLike,
    _autoreset_mode,
    _clear_pending_autoreset,
    _last_step_infos,
    _unbatch_info,
    obs_to_torch,
)

__all__ = ["TWIN_FILE", "PolicyRollouts", "load_policy_rollouts", "record_policy_rollouts"]

TWIN_FILE = "meta/twin.npz"


@dataclass
class PolicyRollouts:
    """One call's rollouts: the dataset (frames, observations, actions) and the twin's labels per episode."""

    root: Path
    seeds: np.ndarray  # (N,) int64
    lengths: np.ndarray  # (N,) int64: actions per episode (= the dataset's frames of it)
    success: np.ndarray  # (N,) bool: info["is_success"] at the episode's last step
    progress: list[np.ndarray]  # N arrays (T + 1,) float32: the twin's progress at observations 0..T
    final_images: np.ndarray  # (N, H, W, 3) uint8: the observation after the last action

    @property
    def dataset(self) -> LeRobotDatasetReader:
        """The rollouts' LeRobot dataset."""
        return LeRobotDatasetReader(self.root)

    def videos(self, dataset: LeRobotDatasetReader, image_key: str) -> list[np.ndarray]:
        """Per episode the ``(T + 1, H, W, 3)`` uint8 video TOPReward scores: the dataset's frames, then the final one."""
        frames = dataset.array(image_key)
        return [np.concatenate([frames[dataset.episode_slice(e)], self.final_images[e][None]])
                for e in range(len(self.seeds))]


@dataclass
class _Episode:
    """One episode being recorded: its per-step observations and actions, and the twin's labels."""

    frames: list[dict[str, Any]]
    progress: list[float]
    task: str
    success: bool = False
    final_image: np.ndarray | None = None


def record_policy_rollouts(policy: PolicyLike, make_vector_env: Callable[[int], gym.vector.VectorEnv], num_envs: int,
                           seeds: Sequence[int], max_steps: int, root: str | Path, fps: int, image_key: str,
                           progress_key: str, instruction: str = "", device: torch.device | str = "cpu"
                           ) -> PolicyRollouts:
    """Runs ``policy`` from each seed and writes the episodes to ``root`` (see the module; an old ``root`` is replaced).

    ``instruction`` is the task of episodes whose env gives none (PushT without language). The caller seeds torch's
    global RNG and puts the policy in eval mode.

    Raises:
        KeyError: the env observes no ``image_key`` or its info has no ``progress_key`` (names the key).
        ValueError: no seeds, or neither the env nor ``instruction`` gives an instruction.
    """
    if not seeds:
        raise ValueError("record_policy_rollouts needs at least one seed")
    root = Path(root)
    if root.exists():
        shutil.rmtree(root)
    envs = make_vector_env(min(num_envs, len(seeds)))
    episodes: list[_Episode] = []
    try:
        autoreset = _autoreset_mode(envs)
        for first in range(0, len(seeds), envs.num_envs):
            if first:
                _clear_pending_autoreset(envs, autoreset)
            batch = list(seeds[first:first + envs.num_envs])
            episodes += _run_batch(policy, envs, autoreset, batch, max_steps, image_key, progress_key, instruction,
                                   device)
        features = features_from_spaces(envs.single_observation_space, envs.single_action_space)
    finally:
        envs.close()
    return _save(root, episodes, seeds, _lossless(features), fps)


def _run_batch(policy: PolicyLike, envs: gym.vector.VectorEnv, autoreset: Any, seeds: list[int], max_steps: int,
               image_key: str, progress_key: str, instruction: str, device: torch.device | str) -> list[_Episode]:
    """Runs one batch of episodes (sub-env ``j`` <- ``seeds[j]``) until all ended or ``max_steps``."""
    n_envs, n_valid = envs.num_envs, len(seeds)
    obs, info = envs.reset(seed=seeds + [seeds[-1]] * (n_envs - n_valid))
    policy.reset()
    per_env = _unbatch_info(info, n_envs)
    _check_keys(obs, per_env[0], image_key, progress_key)
    tasks = [_task(obs, per_env[j], j, instruction) for j in range(n_envs)]
    episodes = [_Episode([], [float(per_env[j][progress_key])], tasks[j]) for j in range(n_valid)]
    running = np.arange(n_envs) < n_valid
    for step in range(max_steps):
        batch = obs_to_torch({k: v for k, v in obs.items() if k != "task"}, device)
        batch["task"] = list(tasks)
        action = policy.select_action(batch).detach().cpu().numpy().astype(envs.action_space.dtype)
        for j in np.flatnonzero(running):
            frame = {k: np.asarray(v[j]) for k, v in obs.items() if k != "task"}
            episodes[j].frames.append({**frame, "action": action[j].astype(np.float32)})
        obs, _, terminated, truncated, info = envs.step(action)
        ended = np.logical_or(terminated, truncated)
        infos = _last_step_infos(info, ended, autoreset)
        for j in np.flatnonzero(running):
            episodes[j].progress.append(float(infos[j][progress_key]))
            episodes[j].success = bool(infos[j].get("is_success", False))
            if ended[j] or step == max_steps - 1:
                episodes[j].final_image = np.asarray(obs[image_key][j]).copy()
        running &= ~ended
        if not running.any():
            break
    return episodes


def _check_keys(obs: Mapping[str, Any], info: Mapping[str, Any], image_key: str, progress_key: str) -> None:
    """Raises KeyError naming ``image_key`` / ``progress_key`` when the env does not give them."""
    if image_key not in obs:
        raise KeyError(f"image_key {image_key!r} is not an observation of the env (observations: {sorted(obs)}); "
                       f"TOPReward scores the rollouts' video, so the policy's env must record a camera")
    if progress_key not in info:
        raise KeyError(f"progress_key {progress_key!r} is not in the env's info (keys: {sorted(info)}); it is the "
                       f"twin's true progress (e.g. proximity for realsim/PushTTargets-v0)")


def _task(obs: Mapping[str, Any], info: Mapping[str, Any], j: int, instruction: str) -> str:
    """Sub-env ``j``'s instruction: ``info["task"]``, else ``obs["task"][j]``, else ``instruction``."""
    task = info.get("task")
    if task is None and "task" in obs:
        task = obs["task"][j]
    task = str(task) if task is not None else instruction
    if not task:
        raise ValueError("the env gives no instruction (neither info['task'] nor obs['task']): set instruction "
                         "(e.g. 'push the T-shaped block onto the goal')")
    return task


def _lossless(features: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``features`` with every ``video`` feature stored as ``image`` (PNG: what the policy saw, bit for bit)."""
    return {k: {**v, "dtype": "image"} if v["dtype"] == "video" else v for k, v in features.items()}


def _save(root: Path, episodes: list[_Episode], seeds: Sequence[int], features: dict[str, dict[str, Any]],
          fps: int) -> PolicyRollouts:
    """Writes the episodes (the dataset, then ``twin.npz``) and returns them as :class:`PolicyRollouts`."""
    with LeRobotDatasetWriter(root, fps=fps, features=features) as writer:
        for episode in episodes:
            for frame in episode.frames:
                writer.add_frame(frame, task=episode.task)
            writer.save_episode()
    lengths = np.array([len(e.frames) for e in episodes], dtype=np.int64)
    progress = np.concatenate([np.asarray(e.progress, np.float32) for e in episodes])
    with atomic_path(root / TWIN_FILE) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, seeds=np.asarray(seeds, np.int64), lengths=lengths,
                 success=np.array([e.success for e in episodes]), progress=progress,
                 final_images=np.stack([e.final_image for e in episodes]))
    return load_policy_rollouts(root)


def load_policy_rollouts(root: str | Path) -> PolicyRollouts | None:
    """The rollouts recorded at ``root``, or None when the folder is missing or incomplete (no ``twin.npz``)."""
    root = Path(root)
    if not (root / TWIN_FILE).is_file():
        return None
    with np.load(root / TWIN_FILE) as data:
        lengths = data["lengths"]
        bounds = np.cumsum(np.concatenate([[0], lengths + 1]))
        progress = [data["progress"][a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        return PolicyRollouts(root, data["seeds"], lengths, data["success"], progress, data["final_images"])
