"""``conf/reward/*.yaml``'s schema: which TOPReward backend scores, and how (policies/rewards/)."""

from __future__ import annotations

from dataclasses import dataclass

from hydra.core.config_store import ConfigStore

__all__ = ["BACKENDS", "RewardConfig", "register_configs"]

BACKENDS = ("hf", "native")


@dataclass
class RewardConfig:
    """A TOPReward scorer: the backend, its model, and the method's prefix count and sampling rate."""

    backend: str = "native"  # native: our small VLM trained by scripts/train_reward.py | hf: a Qwen-VL-class model
    # native: the model dir of a scripts/train_reward.py run (relative to the working dir; each run points
    # outputs/train_reward/latest at itself); hf: hub id or local dir (conf/reward/topreward_hf.yaml: the paper's)
    path: str = "outputs/train_reward/latest"
    k: int = 15  # prefixes scored per trajectory (linspace over its length)
    sample_fps: float = 2.0  # frames resampled to this rate before scoring
    device: str = "cpu"  # torch device: cpu | cuda | cuda:0 ...
    dtype: str = "float32"  # hf only: float32 | bfloat16 (use bfloat16 on a GPU); native runs in float32

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"reward.backend must be one of {BACKENDS}, got {self.backend!r}")
        if not self.path:
            raise ValueError("reward.path must name a model (hub id or local dir), got ''")
        if self.k < 1:
            raise ValueError(f"reward.k must be >= 1, got {self.k}")
        if self.sample_fps <= 0:
            raise ValueError(f"reward.sample_fps must be > 0, got {self.sample_fps}")
        if self.dtype not in ("float32", "bfloat16"):
            raise ValueError(f"reward.dtype must be float32 or bfloat16, got {self.dtype!r}")
        if not self.device:
            raise ValueError("reward.device must name a torch device, got ''")


def register_configs() -> None:
    """Registers ``reward/reward_schema`` (for ``conf/reward/*.yaml``) in Hydra's ConfigStore."""
    ConfigStore.instance().store(group="reward", name="reward_schema", node=RewardConfig)
