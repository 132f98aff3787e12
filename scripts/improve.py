"""On-policy improvement driven by TOPReward: `python scripts/improve.py policy_path=<run dir> [overrides]`.

Hydra; conf/improve.yaml. Rolls the checkpoint's policy out in its twin, scores the rollouts with TOPReward (or, with
reward_source=coverage, the twin's true progress), fine-tunes by reward-weighted regression, repeats; evaluates the
start and the end on the same seeded episodes and prints `success_rate_before`, `success_rate_after` (Wilson
intervals) and `reward_source` as `name: value` lines (policies/rewards/improve.py).
"""

from __future__ import annotations

from pathlib import Path

import _entry

from policies.rewards.improve import Improver
from policies.runtime import resolve_device


@_entry.main("improve", restore_on_resume=False)  # Improver checks its resume itself
def main(run, config: dict) -> None:
    """Loads the checkpoint and its twin, runs the loop and writes `figures.json`."""
    policy, env_cfg = _entry.load_checkpoint(run.policy_path, resolve_device(run.device))
    figures = Improver(run, config, policy, _entry.eval_envs(env_cfg)).run()
    _entry.write_figures(figures, Path(run.output_dir) / "figures.json")


if __name__ == "__main__":
    main()
