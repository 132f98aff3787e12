"""Evaluate a checkpoint in the PushT twin: `python scripts/eval.py policy_path=<run or checkpoint> n_episodes=50`.

Rebuilds the env from the config saved with the checkpoint, runs episodes on the listed seeds (episode i uses seed
start_seed + i) in parallel envs, and writes eval_info.json and videos to the output dir. Prints `name: value`
figures: the success rate with its 95% Wilson interval and the mean final coverage.
"""

from __future__ import annotations

from pathlib import Path

import _entry

from policies.evaluation import Evaluator, save_eval_info
from policies.runtime import resolve_device, seed_everything

FIGURES = ("success_rate", "success_ci_low", "success_ci_high", "mean_coverage", "n_episodes")


@_entry.main("eval")
def main(run, config: dict) -> None:
    """Loads the policy and its env config, evaluates, saves and prints the figures."""
    device = resolve_device(run.device)
    seed_everything(run.seed)
    policy, env_cfg = _entry.load_checkpoint(run.policy_path, device)
    out = Path(run.output_dir)
    result = Evaluator.from_config(run, _entry.eval_envs(env_cfg), out, device).run(policy)
    save_eval_info(out / "eval_info.json", result)
    print(f"eval_info: {out / 'eval_info.json'}")
    _entry.print_figures({k: result[k] for k in FIGURES})


if __name__ == "__main__":
    main()
