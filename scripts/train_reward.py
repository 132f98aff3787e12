"""Train the native TOPReward model: `python scripts/train_reward.py [overrides]` (Hydra; conf/train_reward.yaml).

Collects twin rollouts of mixed quality when they are missing (resumable), trains the small VLM on the training
seeds, evaluates on held-out seeds (VOC, static-frame VOC), logs to W&B (offline by default) and saves `model.pt`,
`tokenizer.json` and `config.json` in the run directory, and points `latest_link` (outputs/train_reward/latest) at it:
`python scripts/eval_reward.py` then evaluates that model. Prints the final figures as `name: value` lines.
"""

from __future__ import annotations

from pathlib import Path

import _entry

from policies.datasets.atomic import atomic_symlink
from policies.rewards.rollouts import collect_rollouts, load_splits
from policies.rewards.train_native import NativeRewardConfig, train_native_reward


@_entry.main("train_reward")
def main(run, config: dict) -> None:
    """Collects the rollouts if needed, trains and prints the figures."""
    make_envs, make_agents, fps = _entry.reward_rollout_factories(run.env, run.rollouts)
    collect_rollouts(make_envs, make_agents, run.data_root, run.rollouts, fps, env_meta=config["env"])
    splits = load_splits(run.data_root, run.rollouts)
    with _entry.tracker(run, config) as tracker:
        figures = train_native_reward(NativeRewardConfig(run.reward_model, run.train), splits["train"],
                                      run.output_dir, tracker, splits.get("heldout", []))
    _entry.write_figures(figures, Path(run.output_dir) / "figures.json")
    if run.latest_link:
        print(f"model: {run.output_dir} (linked as {atomic_symlink(run.output_dir, run.latest_link)})")


if __name__ == "__main__":
    main()
