"""``conf/improve.yaml``'s schema: the on-policy improvement loop driven by TOPReward (policies/rewards/improve.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from policies.rewards.config import RewardConfig
from policies.rewards.rabc import SCALES
from policies.train_config import DEVICES, LoggerConfig

__all__ = ["REWARD_SOURCES", "ImproveConfig", "ImproveEvalConfig", "register_configs"]

REWARD_SOURCES = ("topreward", "coverage")


@dataclass
class ImproveEvalConfig:
    """The evaluation of the starting and the final policy, on the same listed seeds (episode i: start_seed + i)."""

    n_episodes: int = 100
    start_seed: int = 100000  # the training run's evaluation seeds: disjoint from demos and rollouts
    n_envs: int = 2  # parallel envs (worker processes)
    n_videos: int = 0  # film the first N episodes of each evaluation

    def __post_init__(self) -> None:
        if self.n_episodes < 1 or self.n_envs < 1 or self.n_videos < 0 or self.start_seed < 0:
            raise ValueError(f"eval.n_episodes and eval.n_envs must be >= 1, eval.n_videos and eval.start_seed >= 0; "
                             f"got {self.n_episodes}, {self.n_envs}, {self.n_videos}, {self.start_seed}")
        if self.n_videos > self.n_episodes:
            raise ValueError(f"eval.n_videos ({self.n_videos}) must be <= eval.n_episodes ({self.n_episodes})")


@dataclass
class ImproveConfig:
    """An on-policy improvement run: roll out, score with TOPReward (or the twin's progress), reweight, fine-tune."""

    policy_path: str = MISSING  # the starting checkpoint (run dir, checkpoint dir or its pretrained_model)
    reward: RewardConfig = field(default_factory=RewardConfig)  # conf/reward/*.yaml: the TOPReward backend
    # topreward: TOPReward progress is the only reward | coverage: the twin's true progress (info[progress_key])
    reward_source: str = "topreward"
    iterations: int = 8  # rollout -> score -> update rounds
    # --- rollouts ------------------------------------------------------------------------------------------------
    n_rollouts: int = 48  # episodes per iteration (seeded rollout_seed + iteration * n_rollouts + j)
    rollout_seed: int = 50000  # disjoint from the demos (0..) and the evaluation (100000..)
    n_envs: int = 2  # parallel envs for rollouts (worker processes: one per core)
    noise_scale: float = 1.0  # std of the flow's initial noise while rolling out (1: the trained distribution)
    image_key: str = "observation.images.overhead"  # the camera TOPReward watches
    progress_key: str = "proximity"  # info key of the twin's true progress (coverage source, and the correlation)
    instruction: str = "push the T-shaped block onto the goal"  # the task of envs that give no instruction
    score_batch: int = 8  # rollouts per TOPReward backend call
    # --- update (reward-weighted regression on the rollouts' windows) ---------------------------------------------
    top_fraction: float = 0.5  # rollouts kept per iteration, best first (TOPReward: final log p(True))
    scale: str = "batch_max"  # weight scaling (policies/rewards/rabc.py): batch_max | clip
    replay_fraction: float = 0.5  # share of each batch drawn from the original demos (weight 1)
    demo_root: str = ""  # the demos replayed; "": the starting checkpoint's dataset.root
    steps: int = 300  # optimiser steps per iteration
    batch_size: int = 64
    lr: float = 1e-4  # AdamW, constant
    weight_decay: float = 1e-6
    grad_clip_norm: float = 10.0
    # --- run -------------------------------------------------------------------------------------------------------
    eval: ImproveEvalConfig = field(default_factory=ImproveEvalConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    seed: int = 0
    device: str = "auto"  # cpu | cuda | auto
    output_dir: str = MISSING  # the run directory (Hydra's output dir)
    resume: bool = False  # continue the run in output_dir from its last iteration's checkpoint
    keep_checkpoints: int = 2  # newest iteration checkpoints kept on disk

    def __post_init__(self) -> None:
        if self.reward_source not in REWARD_SOURCES:
            raise ValueError(f"reward_source must be one of {REWARD_SOURCES}, got {self.reward_source!r}")
        if self.scale not in SCALES:
            raise ValueError(f"scale must be one of {SCALES}, got {self.scale!r}")
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}, got {self.device!r}")
        for key in ("iterations", "n_rollouts", "n_envs", "score_batch", "steps", "batch_size", "keep_checkpoints"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        if not 0 < self.top_fraction <= 1:
            raise ValueError(f"top_fraction must be in (0, 1], got {self.top_fraction}")
        if not 0 <= self.replay_fraction < 1:
            raise ValueError(f"replay_fraction must be in [0, 1), got {self.replay_fraction}")
        if self.noise_scale <= 0 or self.lr <= 0 or self.weight_decay < 0 or self.grad_clip_norm <= 0:
            raise ValueError(f"noise_scale, lr and grad_clip_norm must be > 0 and weight_decay >= 0, got "
                             f"{self.noise_scale}, {self.lr}, {self.grad_clip_norm}, {self.weight_decay}")
        if self.rollout_seed < 0:
            raise ValueError(f"rollout_seed must be >= 0, got {self.rollout_seed}")
        if not self.image_key or not self.progress_key:
            raise ValueError(f"image_key and progress_key must name an observation and an info key, got "
                             f"{self.image_key!r}, {self.progress_key!r}")

    def rollout_seeds(self, iteration: int) -> list[int]:
        """The env seeds of iteration ``iteration``'s rollouts (0-based)."""
        first = self.rollout_seed + iteration * self.n_rollouts
        return list(range(first, first + self.n_rollouts))


def register_configs() -> None:
    """Registers ``improve_schema`` (conf/improve.yaml) and ``reward/reward_schema`` in Hydra's ConfigStore."""
    ConfigStore.instance().store(name="improve_schema", node=ImproveConfig)
