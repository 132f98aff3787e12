"""Records demonstrations from any agent acting in a gymnasium env into a LeRobotDataset v3 on disk."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import gymnasium as gym
import numpy as np
from tqdm.auto import tqdm

from policies.datasets import LeRobotDatasetWriter, features_from_spaces
from policies.datasets.atomic import atomic_write_json


class Agent(Protocol):
    """Anything that acts from observations: scripted experts, teleoperators, policies wrapped for numpy."""

    def reset(self, seed: int | None = None) -> None:
        """Starts a new episode."""

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """The action for one observation."""


def executed_action(agent: Agent, action: np.ndarray) -> np.ndarray:
    """What the env runs for the recorded ``action``: the agent's ``explore(action)`` where it has one (the expert's
    DART noise, :meth:`sim.expert.PushTExpert.explore`), else ``action`` itself."""
    explore = getattr(agent, "explore", None)
    return action if explore is None else np.asarray(explore(action), dtype=np.float32)


@dataclass
class CollectionStats:
    """What a collection run produced."""

    episodes_saved: int  # saved by this run (not counting those the dataset held before)
    episodes_attempted: int  # attempted by this run
    frames: int  # frames saved by this run
    episodes_before: int = 0  # episodes the dataset held when this run started

    @property
    def success_rate(self) -> float:
        """Fraction of this run's attempts that were saved: the expert's success unless failures are kept."""
        return self.episodes_saved / max(self.episodes_attempted, 1)


def record_episodes(
    env: gym.Env,
    agent: Agent,
    root: str | Path,
    n_episodes: int,
    fps: int,
    start_seed: int = 0,
    keep_failed: bool = False,
    max_attempts: int | None = None,
    robot_type: str = "franka_panda",
    extra_meta: Mapping[str, Any] | None = None,
) -> CollectionStats:
    """Runs ``agent`` in ``env`` and appends each finished episode to the dataset at ``root``.

    Each frame's instruction (``obs["task"]``, else ``info["task"]``) is stored as LeRobot's per-frame task
    (``task_index`` into ``meta/tasks.parquet``).

    Attempt ``k`` is reset with seed ``start_seed + saved_before + k``, where ``saved_before`` is the number of
    episodes the dataset already holds: collection resumes where a killed run stopped (an interrupted run loses at
    most its episode in flight). Failed episodes (no ``info["is_success"]`` at the end) are dropped unless
    ``keep_failed``. Stops after ``n_episodes`` saved episodes or ``max_attempts`` tries (default ``2 * n_episodes``).
    ``extra_meta`` maps paths relative to ``root`` (e.g. ``meta/demonstrated_env.json``) to JSON values written
    once the dataset exists and before its first episode is recorded (files already there are kept).

    Raises:
        RuntimeError: if no episode at all could be saved within ``max_attempts``.
    """
    features = features_from_spaces(env.observation_space, env.action_space)
    max_attempts = max_attempts if max_attempts is not None else 2 * n_episodes
    attempts, frames = 0, 0
    with LeRobotDatasetWriter(root, fps=fps, features=features, robot_type=robot_type) as writer:
        saved = saved_before = writer.num_episodes
        for rel, value in (extra_meta or {}).items():
            if not (Path(root) / rel).exists():
                atomic_write_json(Path(root) / rel, value)
        with tqdm(total=n_episodes, initial=saved, desc="collecting demos", unit="ep") as bar:
            while saved < n_episodes and attempts < max_attempts:
                seed = start_seed + saved_before + attempts
                episode_frames, success = _run_episode(env, agent, seed)
                attempts += 1
                if not (success or keep_failed):
                    continue
                for frame in episode_frames:
                    writer.add_frame(frame, task=frame.pop("task"))
                writer.save_episode()
                frames += len(episode_frames)
                saved += 1
                bar.update(1)
    if saved == 0:
        raise RuntimeError(f"no successful episode in {attempts} attempts; check the expert and env config")
    return CollectionStats(episodes_saved=saved - saved_before, episodes_attempted=attempts, frames=frames,
                           episodes_before=saved_before)


def _run_episode(env: gym.Env, agent: Agent, seed: int) -> tuple[list[dict[str, Any]], bool]:
    obs, info = env.reset(seed=seed)
    agent.reset(seed=seed)
    frames: list[dict[str, Any]] = []
    while True:
        action = np.asarray(agent.act(obs), dtype=np.float32)
        # the instruction the agent saw (a language-conditioned env observes it), else the env's info
        frames.append({**obs, "action": action, "task": obs.get("task", info.get("task", ""))})
        obs, _, terminated, truncated, info = env.step(executed_action(agent, action))
        if terminated or truncated:
            return frames, bool(info.get("is_success", False))
