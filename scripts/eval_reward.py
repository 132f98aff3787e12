"""TOPReward's figures on held-out twin rollouts: `python scripts/eval_reward.py [overrides]` (conf/eval_reward.yaml).

Builds the scorer of `reward` (default: the native model `scripts/train_reward.py` linked at
outputs/train_reward/latest), fits the success threshold on training rollouts, scores the held-out splits and prints
`voc`, `static_voc`, `success_auc`, `success_accuracy` (and `gvl_voc` for the hf backend), suffixed per extra split,
as `name: value` lines; writes figures.json and progress.png to the run dir and logs both to W&B (offline).
"""

from __future__ import annotations

from pathlib import Path

import _entry

from policies.rewards.backends import make_scorer
from policies.rewards.evaluate import evaluate_reward
from policies.rewards.topreward import TOPReward


@_entry.main("eval_reward")
def main(run, config: dict) -> None:
    """Builds the reward, evaluates it and prints the figures."""
    reward = TOPReward(make_scorer(run.reward), k=run.reward.k, sample_fps=run.reward.sample_fps)
    with _entry.tracker(run, config) as tracker:
        figures = evaluate_reward(reward, run.data_root, run.eval, run.output_dir, tracker)
    _entry.write_figures(figures, Path(run.output_dir) / "figures.json")


if __name__ == "__main__":
    main()
