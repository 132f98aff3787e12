"""The Trainer on real PushT demonstrations: exact resume, and config validation at start-up."""

from __future__ import annotations

import json

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import sim
from policies.train_config import register_configs
from policies.trainer import DEMONSTRATED_ENV_FILE, EnvFactories, Trainer
from tests.conftest import CONF_DIR

sim.register_configs()
register_configs()


def _compose(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=overrides)


def _trainer(tmp_path, dataset_root, resume: bool, extra: tuple[str, ...] = ()) -> Trainer:
    cfg = _compose(
        [
            *extra,
            f"output_dir={tmp_path / 'run'}",
            f"dataset.root={dataset_root}",
            "dataset.n_episodes=2",
            "optim.steps=6",
            "optim.batch_size=16",
            "optim.warmup_steps=2",
            "policy.mlp_hidden_dim=32",
            "policy.mlp_num_blocks=1",
            "logger.mode=disabled",
            f"resume={str(resume).lower()}",
        ]
    )
    train_cfg = OmegaConf.to_object(cfg)
    env_cfg = train_cfg.env
    envs = EnvFactories(
        make_env=lambda: sim.make_env(env_cfg, render_mode=None),
        make_vector_env=lambda n: sim.make_vector_env(env_cfg, n),
        make_expert=lambda env: sim.make_expert(env, env_cfg),
        fps=10,
        max_episode_steps=300,
        metric_keys=tuple(env_cfg.metric_keys),
    )
    return Trainer(train_cfg, OmegaConf.to_container(cfg, resolve=True), envs)


def _losses(trainer: Trainer, until: int, save_at: int | None = None) -> list[float]:
    losses = []
    while trainer.step < until:
        losses.append(trainer.train_step(trainer.sample_batch(trainer.step))["loss"])
        trainer.step += 1
        if trainer.step == save_at:
            trainer.save()
    return losses


def test_resume_gives_the_same_next_losses(tmp_path):
    dataset_root = tmp_path / "demos"
    first = _trainer(tmp_path, dataset_root, resume=False)
    first.build(first.prepare_dataset())  # collects 2 expert demos with the real env
    uninterrupted = _losses(first, until=6, save_at=3)
    first.tracker.finish()

    resumed = _trainer(tmp_path, dataset_root, resume=True)
    resumed.build(resumed.prepare_dataset())
    assert resumed.step == 3
    after_resume = _losses(resumed, until=6)
    assert after_resume == uninterrupted[3:]

    # a record written before a schema field existed matches when the field is at its default ...
    record = dataset_root / DEMONSTRATED_ENV_FILE
    stored = json.loads(record.read_text())
    del stored["kwargs"]["randomization"]["friction_scale_std"]
    record.write_text(json.dumps(stored))
    _trainer(tmp_path, dataset_root, resume=False).prepare_dataset()

    # ... but the same demonstrations are never taken for those of another env (here: with pushes on the block)
    disturbed = _trainer(tmp_path, dataset_root, resume=False, extra=("env=pusht_disturbed",))
    with pytest.raises(ValueError, match=r"another env \(env.kwargs differ"):
        disturbed.prepare_dataset()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optim.stepz=5", "stepz"),
        ("optim.steps=many", "optim.steps"),
        ("env.kwargs.cameras=[top]", "unknown camera"),
        ("policy.n_action_steps=32", "n_action_steps"),
        ("logger.mode=cloud", "logger.mode"),
        ("device=tpu", "device"),
    ],
)
def test_bad_config_fails_at_start_naming_the_key(override, message):
    with pytest.raises(Exception, match=message):
        OmegaConf.to_object(_compose(["output_dir=/tmp/unused", "dataset.root=/tmp/unused", override]))
