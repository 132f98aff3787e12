"""Demonstrations of the coloured-targets task through the collection path: the instruction of every frame lands in
LeRobot's tasks table, and the trainer's batches carry it back as ``task`` (one string per sample)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq

import sim
from policies.collect import record_episodes
from policies.datasets import ChunkWindowDataset, LeRobotDatasetReader

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
