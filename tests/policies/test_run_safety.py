"""Runs that lose no work and mix no data: start-up checks, save before the final evaluation, resume that restores
the run's own config, datasets never topped up with another source's demos, malformed files named."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import sim
from policies.checkpoint import CheckpointError, find_last_checkpoint
from policies.collect import record_episodes
from policies.datasets.layout import DatasetError
from policies.resume import restore_run_config
from policies.train_config import register_configs
from policies.trainer import DEMONSTRATED_ENV_FILE, EnvFactories, Trainer
from tests.conftest import CONF_DIR

sim.register_configs()
register_configs()

TINY = ["optim.steps=4", "optim.batch_size=8", "optim.warmup_steps=1", "policy.mlp_hidden_dim=32",
        "policy.mlp_num_blocks=1", "logger.mode=disabled", "eval.every=0", "save_every=2"]


def _compose(config: str, overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config, overrides=overrides)


def _trainer(cfg) -> Trainer:
    train_cfg = OmegaConf.to_object(cfg)
    env_cfg = train_cfg.env
    envs = EnvFactories(
        make_env=lambda: sim.make_env(env_cfg, render_mode=None),
        make_vector_env=lambda n: sim.make_vector_env(env_cfg, n, asynchronous=False),
        make_expert=lambda env: sim.make_expert(env, env_cfg),
        fps=int(env_cfg.kwargs.control_hz),
        max_episode_steps=env_cfg.kwargs.max_episode_steps,
        metric_keys=tuple(env_cfg.metric_keys),
    )
    return Trainer(train_cfg, OmegaConf.to_container(cfg, resolve=True), envs)


def _train_cfg(run_dir: Path, root: Path, *extra: str):
    return _compose("train", [*TINY, f"output_dir={run_dir}", f"dataset.root={root}", "dataset.n_episodes=2", *extra])


@pytest.fixture(scope="module")
def demos(tmp_path_factory) -> Path:
    """Two scripted-expert demonstrations of the default env, collected once through the trainer."""
    root = tmp_path_factory.mktemp("demos") / "expert"
    _trainer(_train_cfg(tmp_path_factory.mktemp("unused"), root)).prepare_dataset()
    return root


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _episodes(root: Path) -> int:
    return json.loads((root / "meta" / "info.json").read_text())["total_episodes"]


# ------------------------------------------------------------------------------------------------ start-up
def test_more_videos_than_episodes_fails_at_start_naming_both_keys():
    with pytest.raises(ValueError, match=r"eval\.n_videos \(2\) must be <= eval\.n_episodes \(1\)"):
        OmegaConf.to_object(_compose("train", ["output_dir=/tmp/unused", "dataset.root=/tmp/unused",
                                               "eval.n_episodes=1"]))
    with pytest.raises(ValueError, match=r"eval\.n_videos \(2\) must be <= eval\.n_episodes_during_training \(1\)"):
        OmegaConf.to_object(_compose("train", ["output_dir=/tmp/unused", "dataset.root=/tmp/unused",
                                               "eval.n_episodes_during_training=1"]))
    with pytest.raises(ValueError, match=r"n_videos \(2\) must be <= n_episodes \(1\)"):
        OmegaConf.to_object(_compose("eval", ["policy_path=/tmp/unused", "output_dir=/tmp/unused", "n_episodes=1"]))


# --------------------------------------------------------------------------------------- final checkpoint
def test_final_checkpoint_is_saved_before_the_final_evaluation(tmp_path, demos, monkeypatch):
    trainer = _trainer(_train_cfg(tmp_path / "run", _copy(demos, tmp_path / "demos"), "save_every=100"))

    def failing_evaluation(self, n_episodes, tag):
        raise RuntimeError("evaluation crashed")

    monkeypatch.setattr(Trainer, "evaluate", failing_evaluation)
    with pytest.raises(RuntimeError, match="evaluation crashed"):
        trainer.run()
    assert find_last_checkpoint(tmp_path / "run") == tmp_path / "run" / "checkpoints" / "000004"


# -------------------------------------------------------------------------------------------------- resume
@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, demos) -> tuple[Path, Path]:
    """A run of 4 steps (checkpoints at 2 and 4) on its own copy of the demos: (run dir, dataset root)."""
    base = tmp_path_factory.mktemp("finished")
    root = _copy(demos, base / "demos")
    trainer = _trainer(_train_cfg(base / "run", root, "eval.n_episodes=2", "eval.n_videos=0"))
    trainer.run()
    return base / "run", root


def test_resume_restores_the_saved_config(finished_run):
    run_dir, root = finished_run
    cfg = _compose("train", [f"output_dir={run_dir}", "resume=true", "logger.mode=disabled"])  # README's line
    assert cfg.optim.steps == 16000 and cfg.dataset.n_episodes == 300
    restored = restore_run_config(cfg, ["resume=true", "logger.mode=disabled"])
    assert restored.optim.steps == 4 and restored.dataset.n_episodes == 2  # the run's own, not the defaults
    assert restored.dataset.root == str(root) and restored.output_dir == str(run_dir) and restored.resume
    assert OmegaConf.to_object(restored).policy.mlp_hidden_dim == 32
    same = restore_run_config(_compose("train", [f"output_dir={run_dir}", "resume=true", "optim.steps=4"]),
                              ["resume=true", "optim.steps=4", "device=cpu"])  # same value, and a free key: kept
    assert same.optim.steps == 4


def test_resume_refuses_overrides_that_change_the_saved_config_naming_each(finished_run):
    run_dir, _ = finished_run
    overrides = ["resume=true", "optim.steps=600", "dataset.n_episodes=5", "env=pusht_disturbed"]
    cfg = _compose("train", [f"output_dir={run_dir}", *overrides])
    with pytest.raises(CheckpointError, match=r"optim\.steps \(saved 4, given 600\).*dataset\.n_episodes "
                                              r"\(saved 2, given 5\).*env \(saved"):
        restore_run_config(cfg, overrides)
    with pytest.raises(FileNotFoundError, match="holds no checkpoint"):
        restore_run_config(_compose("train", [f"output_dir={run_dir.parent / 'none'}"]), ["resume=true"])


def test_resume_is_checked_before_any_demonstration_is_collected(tmp_path, finished_run):
    run_dir, root = finished_run
    run_copy, root_copy = _copy(run_dir, tmp_path / "run"), _copy(root, tmp_path / "demos")
    trainer = _trainer(_train_cfg(run_copy, root_copy, "dataset.n_episodes=3", "resume=true"))
    with pytest.raises(CheckpointError, match=r"dataset\.n_episodes: 2 -> 3"):
        trainer.run()
    assert _episodes(root_copy) == 2  # nothing was collected before the refusal


# ------------------------------------------------------------------------------------------------ datasets
def test_a_dataset_the_expert_did_not_write_is_never_topped_up(tmp_path, demos):
    root = _copy(demos, tmp_path / "teleop")
    (root / DEMONSTRATED_ENV_FILE).unlink()  # as scripts/collect.py writes it: no record of the scripted expert
    trainer = _trainer(_train_cfg(tmp_path / "run", root, "dataset.n_episodes=3"))
    with pytest.raises(ValueError, match=r"holds 2 episodes that the scripted expert did not record"):
        trainer.prepare_dataset()
    assert _episodes(root) == 2
    assert _trainer(_train_cfg(tmp_path / "run", root)).prepare_dataset().num_episodes == 2  # trained on as it is


def test_resumed_collection_reports_this_runs_expert_success(tmp_path, demos):
    root = _copy(demos, tmp_path / "more")
    env_cfg = sim.EnvConfig()
    env = sim.make_env(env_cfg, render_mode=None)
    try:
        stats = record_episodes(env, sim.make_expert(env, env_cfg), root, n_episodes=3, fps=10)
    finally:
        env.close()
    assert (stats.episodes_before, stats.episodes_saved) == (2, 1)
    assert stats.success_rate == pytest.approx(1 / stats.episodes_attempted)
    assert _episodes(root) == 3


@pytest.mark.parametrize(("rel", "content", "named"), [
    ("meta/info.json", "{not json", "info.json"),
    ("meta/info.json", "[]", "info.json"),
    (DEMONSTRATED_ENV_FILE, "{not json", "demonstrated_env.json"),
    (DEMONSTRATED_ENV_FILE, "[]", "demonstrated_env.json"),
])
def test_malformed_dataset_files_are_named(tmp_path, demos, rel, content, named):
    root = _copy(demos, tmp_path / "demos")
    (root / rel).write_text(content)
    with pytest.raises(DatasetError, match=named.replace(".", r"\.")):
        _trainer(_train_cfg(tmp_path / "run", root)).prepare_dataset()


# ---------------------------------------------------------------------------------------------- pusht_image
def test_pusht_image_observes_the_image_and_the_pusher_only():
    cfg = OmegaConf.to_object(_compose("train", ["output_dir=/tmp/unused", "dataset.root=/tmp/unused",
                                                 "env=pusht_image"]))
    env = sim.make_env(cfg.env, render_mode=None)
    try:
        obs, _ = env.reset(seed=0)
        assert set(env.observation_space.spaces) == set(obs) == {"observation.state", "observation.images.overhead"}
        assert obs["observation.images.overhead"].shape == (96, 96, 3)
        expert = sim.make_expert(env, cfg.env)  # demonstrates from the simulator's block pose
        expert.reset(seed=0)
        action = expert.act(obs)
        state_env = sim.make_env(sim.EnvConfig(), render_mode=None)
        state_obs, _ = state_env.reset(seed=0)
        state_expert = sim.make_expert(state_env, sim.EnvConfig())
        state_expert.reset(seed=0)
        np.testing.assert_allclose(action, state_expert.act(state_obs), atol=1e-4)  # the same demonstrator
        state_env.close()
    finally:
        env.close()
