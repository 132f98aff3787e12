"""The scorer a ``conf/reward/*.yaml`` names: :func:`make_scorer` builds the ``hf`` or ``native`` backend."""

from __future__ import annotations

from pathlib import Path

from policies.rewards.config import RewardConfig
from policies.rewards.protocol import TrueScorer
from policies.rewards.topreward import TOPReward

__all__ = ["build_topreward", "make_scorer"]


def make_scorer(cfg: RewardConfig) -> TrueScorer:
    """The :class:`~policies.rewards.protocol.TrueScorer` of ``cfg``.

    ``hf``: :class:`~policies.rewards.hf.HFScorer` of ``cfg.path`` (hub id or local dir) in ``cfg.dtype`` on
    ``cfg.device``. ``native``: the model saved by ``scripts/train_reward.py`` in the dir ``cfg.path``
    (:func:`~policies.rewards.native.load_native`, float32 on ``cfg.device``).

    Raises:
        FileNotFoundError: native, and ``cfg.path`` holds no trained model (the message names ``reward.path`` and
            how to make one).
        ValueError: hf, and the model cannot be loaded or fails the prompt checks (see ``HFScorer``).
    """
    if cfg.backend == "hf":
        from policies.rewards.hf import HFScorer

        return HFScorer(cfg.path, device=cfg.device, dtype=cfg.dtype)
    from policies.rewards.native import MODEL_FILE, load_native

    directory = Path(cfg.path).expanduser()
    if not (directory / MODEL_FILE).is_file():
        raise FileNotFoundError(
            f"reward.path={cfg.path!r} holds no native reward model (no {directory / MODEL_FILE}): train one with "
            "`python scripts/train_reward.py` (it points outputs/train_reward/latest at its run dir) or set "
            "reward.path=<a train_reward run dir>")
    return load_native(directory, device=cfg.device)


def build_topreward(cfg: RewardConfig) -> TOPReward:
    """:class:`TOPReward` around :func:`make_scorer`'s backend with ``cfg.k`` prefixes at ``cfg.sample_fps``."""
    return TOPReward(make_scorer(cfg), k=cfg.k, sample_fps=cfg.sample_fps)
