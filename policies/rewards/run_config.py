"""The typed configs of ``scripts/train_reward.py`` and ``scripts/eval_reward.py`` (conf/train_reward.yaml,
conf/eval_reward.yaml), registered in Hydra's ConfigStore."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from policies.rewards.config import RewardConfig
from policies.rewards.evaluate import RewardEvalConfig
from policies.rewards.native import NativeVLMConfig
from policies.rewards.rollouts import RolloutConfig
from policies.rewards.train_native import RewardTrainConfig
from policies.train_config import LoggerConfig


@dataclass
class TrainRewardConfig:
    """A native reward run: collect twin rollouts if missing, train the model, evaluate on held-out rollouts, save."""

    env: Any = MISSING  # env group (its own schema, e.g. env/pusht_targets_schema)
    reward_model: NativeVLMConfig = field(default_factory=NativeVLMConfig)  # conf/reward_model/*.yaml
    train: RewardTrainConfig = field(default_factory=RewardTrainConfig)
    rollouts: RolloutConfig = field(default_factory=RolloutConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    data_root: str = MISSING  # folder of the rollouts (collected there when missing; resumable)
    output_dir: str = MISSING  # the run directory (Hydra's output dir): checkpoints, model.pt, figures.json
    # a symlink pointed at output_dir when the run ends (relative to the working dir; conf/reward/topreward
    # reads the model there); "": none
    latest_link: str = "outputs/train_reward/latest"


@dataclass
class EvalRewardConfig:
    """A reward evaluation: a TOPReward backend scored on held-out twin rollouts (policies/rewards/evaluate.py)."""

    reward: RewardConfig = field(default_factory=RewardConfig)  # conf/reward/*.yaml: backend and model
    eval: RewardEvalConfig = field(default_factory=RewardEvalConfig)  # splits, counts, plot
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    data_root: str = MISSING  # the rollouts (scripts/train_reward.py's data_root: <data_root>/<split>/episode_*.npz)
    output_dir: str = MISSING  # the run directory (Hydra's output dir): figures.json, progress.png, wandb/


def register_configs() -> None:
    """Registers ``train_reward_schema``, ``eval_reward_schema`` and ``reward_model/native_schema``."""
    store = ConfigStore.instance()
    store.store(name="train_reward_schema", node=TrainRewardConfig)
    store.store(name="eval_reward_schema", node=EvalRewardConfig)
    store.store(group="reward_model", name="native_schema", node=NativeVLMConfig)
