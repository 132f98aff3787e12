"""Demonstrations of the coloured-targets task through the collection path: the instruction of every frame lands in
LeRobot's tasks table, and the trainer's batches carry it back as ``task`` (one string per sample); DART demos
execute perturbed pushes and record the clean ones."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pyarrow.parquet as pq
import pytest

import sim
from policies.collect import record_episodes
from policies.datasets import ChunkWindowDataset, LeRobotDatasetReader
from sim.expert import ExpertConfig

N_EPISODES = 4


def _record(root) -> list[str]:
    """Records N_EPISODES expert demos (64x64 images) and returns each episode's instruction, as the env gave it."""
    cfg = sim.TargetsEnvConfig()
    env = sim.make_env(cfg, render_mode=None)
    stats = record_episodes(env, sim.make_expert(env, cfg), root, n_episodes=N_EPISODES, fps=10)
    assert stats.episodes_saved == N_EPISODES and stats.success_rate == 1.0
    instructions = [env.reset(seed=seed)[0]["task"] for seed in range(N_EPISODES)]  # attempt k used seed k
    env.close()
    return instructions


def test_demos_store_each_frames_instruction_and_batches_carry_it(tmp_path):
    root = tmp_path / "targets_demos"
    instructions = _record(root)
    assert len(set(instructions)) >= 3  # the seeds drew different instructions

    ds = LeRobotDatasetReader(root)
    assert "task" not in ds.features and "observation.environment_state" in ds.features
    assert ds.tasks == list(dict.fromkeys(instructions))
    assert [ds.episode_tasks(e) for e in range(N_EPISODES)] == [(text,) for text in instructions]

    # LeRobot's layout: meta/tasks.parquet has the task strings as its (pandas) index and a task_index column
    table = pq.read_table(root / "meta" / "tasks.parquet")
    assert table.column("task").to_pylist() == ds.tasks
    assert table.column("task_index").to_pylist() == list(range(len(ds.tasks)))
    assert json.loads(table.schema.metadata[b"pandas"])["index_columns"] == ["task"]
    info = json.loads((root / "meta" / "info.json").read_text())
    assert info["total_tasks"] == len(ds.tasks) and info["features"]["task_index"]["dtype"] == "int64"

    windows = ChunkWindowDataset(ds, ["observation.images.overhead", "observation.state"], n_obs_steps=2, horizon=8)
    episode_of_frame = np.repeat(np.arange(N_EPISODES), ds.episode_lengths)
    items = np.array([0, ds.episode_starts[1], ds.episode_starts[2] + 3, len(windows) - 1, 5])
    batch = windows.get_batch(items)
    assert batch["task"] == [instructions[episode_of_frame[t]] for t in items]
    assert batch["observation.images.overhead"].shape == (len(items), 2, 3, 64, 64)
    targets = ds.array("observation.environment_state")[:, 4:]  # privileged: the instructed pad's centre
    slots = np.asarray(sim.PushTTargetsConfig().slots)
    for e in range(N_EPISODES):
        span = ds.episode_slice(e)
        assert np.all(targets[span] == targets[span.start])  # one target per episode
        assert np.min(np.linalg.norm(slots - targets[span.start], axis=1)) < 1e-6


class _ActionSpy(gym.Wrapper):
    """Keeps every action the env was stepped with."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.stepped: list[np.ndarray] = []

    def step(self, action):
        self.stepped.append(np.asarray(action, dtype=np.float32).copy())
        return super().step(action)


def test_dart_demos_execute_perturbed_pushes_and_record_the_experts_clean_ones(tmp_path):
    cfg = sim.TargetsEnvConfig(expert=ExpertConfig(execution_noise_std=0.015))
    env = _ActionSpy(sim.make_env(cfg, render_mode=None))
    stats = record_episodes(env, sim.make_expert(env, cfg), tmp_path / "dart", n_episodes=2, fps=10)
    assert stats.episodes_saved == 2 and stats.episodes_attempted == 2  # the expert recovers from its perturbations
    recorded = LeRobotDatasetReader(tmp_path / "dart").array("action")
    executed = np.stack(env.stepped)
    assert recorded.shape == executed.shape
    # the executed push is the recorded one plus zero-mean noise of the configured std (m)
    noise = executed - recorded
    assert abs(float(noise.mean())) < 0.003 and 0.012 < float(noise.std()) < 0.018
    env.close()


def test_expert_explore_is_the_identity_without_execution_noise_and_rejects_a_negative_std():
    cfg = sim.TargetsEnvConfig()
    env = sim.make_env(cfg, render_mode=None)
    action = np.array([0.1, -0.2], dtype=np.float32)
    assert sim.make_expert(env, cfg).explore(action) is action
    with pytest.raises(ValueError, match="execution_noise_std"):
        ExpertConfig(execution_noise_std=-0.01)
    env.close()
