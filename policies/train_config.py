"""Typed configuration of a training run (the ``train`` Hydra schema) and of offline evaluation."""

from __future__ import annotations

from dataclasses import dataclass, field, make_dataclass
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from perception.streaming.monitor import MonitorConfig
from policies.ablations import check_ablations
from policies.registry import policy_class, registered_policies
from policies.rewards.config import RewardConfig
from policies.rewards.config import register_configs as register_reward_configs
from policies.rewards.rabc import RABCConfig

DEVICES = ("auto", "cpu", "cuda")
LOGGER_MODES = ("offline", "online", "disabled")
AMP_MODES = ("off", "bf16", "fp16")


@dataclass
class DegradedExpertConfig:
    """A deliberately worse demonstrator (``dataset.degraded_fraction`` of the demos): the scripted expert with
    Gaussian action noise and random contacts, which with ``detour_prob`` per step leaves for ``detour_steps`` steps
    towards a random point of ``random_box`` (policies.rewards.rollouts.DetourAgent; positions in m, world frame).
    The defaults are the ``degraded`` agent of the reward rollouts (policies.rewards.rollouts.RolloutConfig)."""

    noise_std: float = 0.02  # std of the Gaussian noise on every action (m)
    random_contact_prob: float = 0.3  # probability that a contact re-selection picks a random contact
    detour_prob: float = 0.08  # probability per step of starting a detour (~1 every 12 steps)
    detour_steps: int = 12  # control steps of each detour (1.2 s at 10 Hz)
    random_box: tuple[float, float, float, float] = (0.40, -0.17, 0.72, 0.17)  # x0, y0, x1, y1 of detour targets

    def __post_init__(self) -> None:
        if self.noise_std < 0 or not 0 <= self.random_contact_prob <= 1:
            raise ValueError(f"dataset.degraded.noise_std must be >= 0 and dataset.degraded.random_contact_prob in "
                             f"[0, 1], got {self.noise_std}, {self.random_contact_prob}")
        if not 0 <= self.detour_prob <= 1 or self.detour_steps < 1:
            raise ValueError(f"dataset.degraded.detour_prob must be in [0, 1] and dataset.degraded.detour_steps >= 1, "
                             f"got {self.detour_prob}, {self.detour_steps}")
        x0, y0, x1, y1 = self.random_box
        if not (x0 < x1 and y0 < y1):
            raise ValueError(f"dataset.degraded.random_box must be (x0, y0, x1, y1) with x0 < x1 and y0 < y1, got "
                             f"{self.random_box}")


@dataclass
class DatasetConfig:
    """Where the demonstrations live and how to make them when they are missing."""

    root: str = "data/pusht_expert"  # relative paths are taken from the directory the command was started in
    n_episodes: int = 300  # demonstrations to collect when the dataset is missing or short
    start_seed: int = 0  # env seed of the first demonstration (evaluation uses a disjoint range)
    keep_failed: bool = False  # keep demonstrations that did not reach success (mixed-quality data)
    # share of collected episodes demonstrated by the degraded expert (drawn per episode from its seed); 0: none.
    # Its episodes are kept like the expert's (slow successes too; failures only with keep_failed)
    degraded_fraction: float = 0.0
    degraded: DegradedExpertConfig = field(default_factory=DegradedExpertConfig)

    def __post_init__(self) -> None:
        if self.n_episodes < 1:
            raise ValueError(f"dataset.n_episodes must be >= 1, got {self.n_episodes}")
        if not 0 <= self.degraded_fraction <= 1:
            raise ValueError(f"dataset.degraded_fraction must be in [0, 1], got {self.degraded_fraction}")


@dataclass
class OptimConfig:
    """AdamW with linear warm-up and cosine decay; EMA of the weights is what gets evaluated and saved."""

    steps: int = 16000  # optimizer steps in total
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-6
    warmup_steps: int = 500
    grad_clip_norm: float = 10.0
    ema_decay: float = 0.995  # 0 disables EMA
    num_workers: int = 0  # DataLoader workers; windows are sliced from memory, so 0 is fastest on 2 cores
    # --- scale (README "Training at scale") ------------------------------------------------------------------------
    # Micro-batches accumulated per optimiser step: the global batch is batch_size x grad_accum_steps, of which each
    # of the N processes (torchrun --nproc_per_node=N) takes batch_size / N per micro-batch.
    grad_accum_steps: int = 1
    amp: str = "off"  # mixed precision on GPU: off | bf16 (autocast) | fp16 (autocast + GradScaler)
    amp_on_cpu: bool = False  # allow amp=bf16 on a CPU device (slow on most CPUs; refused unless set)

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError(
                f"optim.steps, optim.batch_size and optim.lr must be positive, got {self.steps}, "
                f"{self.batch_size}, {self.lr}"
            )
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"optim.ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.grad_accum_steps < 1:
            raise ValueError(f"optim.grad_accum_steps must be >= 1, got {self.grad_accum_steps}")
        if self.amp not in AMP_MODES:
            raise ValueError(f"optim.amp must be one of {AMP_MODES}, got {self.amp!r}")


@dataclass
class AugmentConfig:
    """Image augmentation of training batches (every ``observation.images.*`` input; all off by default).

    The same transform is applied to every observation step of a sample; each sample and camera draws its own.
    Setting either on for a policy without image inputs is refused (it would do nothing).
    """

    random_shift: int = 0  # pixels: pad each side by this much (edge pixels repeated), crop back at a random offset
    crop_scale: float = 1.0  # crop a random square of [crop_scale, 1] of the image area and resize it back; 1: off

    def __post_init__(self) -> None:
        if self.random_shift < 0:
            raise ValueError(f"augment.random_shift must be >= 0 pixels, got {self.random_shift}")
        if not 0 < self.crop_scale <= 1:
            raise ValueError(f"augment.crop_scale must be in (0, 1], got {self.crop_scale}")

    @property
    def enabled(self) -> bool:
        """Whether any augmentation is on."""
        return self.random_shift > 0 or self.crop_scale < 1


@dataclass
class EvalConfig:
    """Evaluation in vectorised envs on a listed set of seeds (episode i uses seed start_seed + i)."""

    n_episodes: int = 50
    start_seed: int = 100000  # disjoint from the demonstration seeds
    n_envs: int = 2  # parallel envs (worker processes); one per core
    n_videos: int = 2  # film the first N episodes
    every: int = 8000  # evaluate every N optimizer steps during training (0: only at the end)
    n_episodes_during_training: int = 10  # shorter evaluations during training; the final one uses n_episodes

    def __post_init__(self) -> None:
        if self.n_episodes < 1 or self.n_envs < 1 or self.n_videos < 0 or self.every < 0:
            raise ValueError(
                f"eval.n_episodes and eval.n_envs must be >= 1, eval.n_videos and eval.every >= 0; got "
                f"{self.n_episodes}, {self.n_envs}, {self.n_videos}, {self.every}"
            )
        if self.n_episodes_during_training < 1:
            raise ValueError(f"eval.n_episodes_during_training must be >= 1, got {self.n_episodes_during_training}")
        # evaluation films its first n_videos episodes: checked here, not when the final evaluation is reached
        _check_videos("eval.n_videos", self.n_videos, "eval.n_episodes", self.n_episodes)
        if self.every:
            _check_videos("eval.n_videos", self.n_videos, "eval.n_episodes_during_training",
                          self.n_episodes_during_training)


@dataclass
class LoggerConfig:
    """Weights & Biases tracking: offline by default (sync later with ``wandb sync``)."""

    project: str = "realsim"
    mode: str = "offline"  # offline | online | disabled
    name: str | None = None
    group: str | None = None
    tags: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.mode not in LOGGER_MODES:
            raise ValueError(f"logger.mode must be one of {LOGGER_MODES}, got {self.mode!r}")


@dataclass
class TrainConfig:
    """A training run: collect demos if missing, train a policy, evaluate, checkpoint, log."""

    env: Any = MISSING  # env group (typed by its own schema, e.g. env/pusht_schema)
    policy: Any = MISSING  # policy group (typed by its own schema, e.g. policy/flow_matching_schema)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    seed: int = 0  # drives numpy, torch, python and env resets
    device: str = "auto"  # cpu | cuda | auto (cuda when available)
    output_dir: str = MISSING  # the run directory (Hydra's output dir)
    resume: bool = False  # continue the run in output_dir from its last checkpoint
    log_every: int = 200  # optimizer steps between training-loss logs
    save_every: int = 8000  # optimizer steps between checkpoints (and at the end)
    keep_checkpoints: int = 2  # newest checkpoints kept on disk
    compile: bool = False  # torch.compile the policy for training (evaluation and checkpoints use the plain module)
    # reward-aligned BC (policies/rewards/rabc.py): None (default) trains plain BC; a conf/reward option (e.g.
    # reward=topreward, the native backend) scores the dataset with TOPReward and weights samples by progress
    reward: Any = None
    rabc: RABCConfig = field(default_factory=RABCConfig)  # how the weights are made (used only with a reward)

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}, got {self.device!r}")
        if self.reward is not None and not isinstance(self.reward, RewardConfig):
            raise ValueError(f"reward must be a conf/reward option (typed by RewardConfig, e.g. reward=topreward) or "
                             f"null, got {type(self.reward).__name__}")
        if self.log_every < 1 or self.save_every < 1:
            raise ValueError(f"log_every and save_every must be >= 1, got {self.log_every}, {self.save_every}")


@dataclass
class ExecutionOverrides:
    """``scripts/eval.py policy_execution.<field>=...``: how a loaded policy runs its chunks, changed without
    retraining (:func:`policies.checkpoint.with_execution`); None keeps the checkpoint's value."""

    n_action_steps: int | None = None  # actions executed from each chunk before replanning
    execution: str | None = None  # vla: receding | ensemble
    num_inference_steps: int | None = None  # flow-matching integration steps per chunk


@dataclass
class EvalRunConfig:
    """``scripts/eval.py``: evaluate a saved policy in the env it was trained on, optionally under ablations."""

    policy_path: str = MISSING  # a checkpoint's pretrained_model directory (or a run dir: its last checkpoint)
    n_episodes: int = 50
    start_seed: int = 100000
    n_envs: int = 2
    n_videos: int = 2  # filmed per ablation, the instruction written on the frames
    seed: int = 0
    device: str = "auto"
    output_dir: str = MISSING
    # --- ablations (policies/ablations.py), run in this order on the same seeds --------------------------------------
    # none | shuffled_instructions | heldout_paraphrases | blank_images; figures success_rate_<ablation>
    ablations: list[str] = field(default_factory=lambda: ["none"])
    # env kwargs that the heldout_paraphrases run overrides (merged into the checkpoint's env.kwargs)
    heldout_env_kwargs: dict[str, Any] = field(default_factory=lambda: {"instructions": "heldout"})
    # env group option (env=identified_<name>, scripts/identify.py) whose physics (kwargs.randomization) replaces the
    # checkpoint env's; its observation features must be the checkpoint's. None: the checkpoint's env as trained.
    env: Any = None
    # monitor group: none | streaming (the streaming video model watching each episode's monitor.camera frames,
    # policies.streaming.monitor_eval): figures monitor_progress_voc, monitor_success_agreement
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    policy_execution: ExecutionOverrides = field(default_factory=ExecutionOverrides)

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}, got {self.device!r}")
        if self.n_episodes < 1 or self.n_envs < 1 or self.n_videos < 0:
            raise ValueError(f"n_episodes and n_envs must be >= 1 and n_videos >= 0; got {self.n_episodes}, "
                             f"{self.n_envs}, {self.n_videos}")
        _check_videos("n_videos", self.n_videos, "n_episodes", self.n_episodes)
        self.ablations = list(check_ablations(self.ablations))
        if "heldout_paraphrases" in self.ablations and not self.heldout_env_kwargs:
            raise ValueError("heldout_env_kwargs must not be empty when ablations has heldout_paraphrases (it is "
                             "what that run changes, e.g. {instructions: heldout})")


def _check_videos(videos_key: str, n_videos: int, episodes_key: str, n_episodes: int) -> None:
    """Raises ``ValueError`` naming both keys when more episodes are to be filmed than are run."""
    if n_videos > n_episodes:
        raise ValueError(f"{videos_key} ({n_videos}) must be <= {episodes_key} ({n_episodes}): set {videos_key}="
                         f"{n_episodes} or fewer, or run more episodes")


def policy_schema(name: str) -> type:
    """The Hydra schema of policy ``name``: its config dataclass plus the ``name`` field that selects it."""
    config_class = policy_class(name).config_class
    return make_dataclass(f"{config_class.__name__}Schema", [("name", str, field(default=name))], bases=(config_class,))


def register_configs(policy_names: tuple[str, ...] | None = None) -> None:
    """Registers ``train_schema``, ``eval_schema``, ``reward/reward_schema`` and ``policy/<name>_schema`` in Hydra's
    ConfigStore.

    ``policy_names`` defaults to every registered policy (:func:`policies.registry.registered_policies`).
    """
    store = ConfigStore.instance()
    store.store(name="train_schema", node=TrainConfig)
    store.store(name="eval_schema", node=EvalRunConfig)
    register_reward_configs()  # reward/reward_schema: the train config's optional reward group
    for name in registered_policies() if policy_names is None else policy_names:
        store.store(group="policy", name=f"{name}_schema", node=policy_schema(name))
