"""The TOPReward backend a :class:`~policies.rewards.config.RewardConfig` names, built and checked."""

from __future__ import annotations

from policies.rewards.config import RewardConfig
from policies.rewards.protocol import TrueScorer
from policies.rewards.topreward import TOPReward

__all__ = ["build_scorer", "build_topreward"]


def build_scorer(cfg: RewardConfig) -> TrueScorer:
    """The backend of ``cfg``: ``native`` loads a model dir saved by ``scripts/train_reward.py``; ``hf`` a
    transformers Qwen-VL-class model (hub id or local dir).

    Raises:
        FileNotFoundError: ``native`` and ``cfg.path`` holds no ``model.pt`` (names the path).
        ValueError: an unknown backend (names ``reward.backend``).
    """
    if cfg.backend == "native":
        from policies.rewards.native import load_native

        return load_native(cfg.path, device=cfg.device)
    if cfg.backend == "hf":
        from policies.rewards.hf import HFScorer

        return HFScorer(cfg.path, device=cfg.device, dtype=cfg.dtype)
    raise ValueError(f"reward.backend must be 'native' or 'hf', got {cfg.backend!r}")


def build_topreward(cfg: RewardConfig) -> TOPReward:
    """:class:`TOPReward` around :func:`build_scorer`'s backend with ``cfg.k`` prefixes at ``cfg.sample_fps``."""
    return TOPReward(build_scorer(cfg), k=cfg.k, sample_fps=cfg.sample_fps)
