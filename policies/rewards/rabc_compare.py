"""Plain BC against reward-aligned BC on the same mixed-quality dataset (issue 16, must-show 3).

Both runs share everything but the ``reward`` group: the dataset (collected once, by the first run), seeds, optimiser
budget and the evaluation seeds (``eval.start_seed`` ..), so the two success rates differ only by the weighting.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from policies.train_config import TrainConfig
from policies.trainer import EnvFactories, Trainer

__all__ = ["compare_rabc"]


def compare_rabc(cfg: TrainConfig, resolved: dict[str, Any], envs: EnvFactories) -> dict[str, Any]:
    """Trains and evaluates plain BC (``<output_dir>/bc``) then RA-BC (``<output_dir>/rabc``); returns
    ``success_rate_bc``, ``success_rate_rabc`` with their Wilson intervals (``*_ci_low``, ``*_ci_high``), the gain in
    points and the episodes evaluated.

    Raises:
        ValueError: ``cfg.reward`` is None (names ``reward``: RA-BC needs a TOPReward backend, e.g. reward=topreward).
    """
    if cfg.reward is None:
        raise ValueError("reward is null: the comparison needs a TOPReward backend (reward=topreward reward.path=...)")
    figures: dict[str, Any] = {}
    for name, reward, reward_node in (("bc", None, None), ("rabc", cfg.reward, resolved.get("reward"))):
        out = str(Path(cfg.output_dir) / name)
        run_cfg = dataclasses.replace(cfg, reward=reward, output_dir=out)
        run_cfg.logger = dataclasses.replace(cfg.logger, name=f"{cfg.logger.name or 'compare_rabc'}_{name}")
        result = Trainer(run_cfg, {**resolved, "reward": reward_node, "output_dir": out}, envs).run()
        figures[f"success_rate_{name}"] = result["success_rate"]
        figures[f"success_ci_low_{name}"] = result["success_ci_low"]
        figures[f"success_ci_high_{name}"] = result["success_ci_high"]
        figures["n_episodes"] = result["n_episodes"]
    figures["success_gain_points"] = 100.0 * (figures["success_rate_rabc"] - figures["success_rate_bc"])
    return figures
