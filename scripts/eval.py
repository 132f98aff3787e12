"""Evaluate a checkpoint in the twin: `python scripts/eval.py policy_path=<run or checkpoint> n_episodes=50`.

Rebuilds the env saved with the checkpoint (`env=identified_<name>`: with that option's physics, scripts/identify.py),
runs episodes on the listed seeds (episode i uses seed start_seed + i) in parallel envs, writes eval_info.json and
videos to the output dir and prints `name: value` figures: the success rate with its 95% Wilson interval and the mean
final metrics (coverage for PushT); `ablations=[none,shuffled_instructions,heldout_paraphrases,blank_images]` adds
success_rate_<ablation> on the same seeds; `policy_execution.n_action_steps=4` (or `execution`,
`num_inference_steps`) runs the checkpoint's chunks another way; `monitor=streaming monitor.path=<model dir>` adds
the streaming model's monitor_progress_voc and monitor_success_agreement on every episode's frames
(policies/streaming/monitor_eval.py)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import _entry

from policies.ablations import ablation_dir, ablation_figures, eval_info, run_ablations
from policies.checkpoint import with_execution
from policies.eval_report import format_instruction_table
from policies.evaluation import Evaluator, save_eval_info
from policies.runtime import resolve_device, seed_everything


@_entry.main("eval")
def main(run, config: dict) -> None:
    """Loads the policy and its env config, evaluates it under each ablation, saves and prints the figures."""
    device = resolve_device(run.device)
    seed_everything(run.seed)
    policy, env_cfg = _entry.load_checkpoint(run.policy_path, device, physics_of=run.env)  # env=<option>'s physics
    with_execution(policy, dataclasses.asdict(run.policy_execution))  # e.g. policy_execution.n_action_steps=4
    envs = {a: _entry.eval_envs(_entry.ablation_env(env_cfg, a, run.heldout_env_kwargs)) for a in run.ablations}
    out, observer = Path(run.output_dir), _entry.monitor_observer(run.monitor, env_cfg)  # monitor=streaming
    results = run_ablations(policy, run.ablations, lambda a: Evaluator.from_config(
        run, envs[a], ablation_dir(out, a), device, ablation=a, observer=observer))
    save_eval_info(out / "eval_info.json", eval_info(results, env_cfg.metric_keys))
    print(f"eval_info: {out / 'eval_info.json'}")
    for ablation, result in results.items():
        if result["per_instruction"]:
            print(format_instruction_table(result["per_instruction"], ablation))
    _entry.print_figures(ablation_figures(results, env_cfg.metric_keys))


if __name__ == "__main__":
    main()
