"""Evaluate a checkpoint in the PushT twin: `python scripts/eval.py policy_path=<run or checkpoint> n_episodes=50`.

Rebuilds the env from the config saved with the checkpoint, runs episodes on the listed seeds (episode i uses seed
start_seed + i) in parallel envs, and writes eval_info.json and videos to the output dir. Prints `name: value`
figures: the success rate with its 95% Wilson interval and the mean final coverage.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf  # noqa: E402

import sim  # noqa: E402
from policies.checkpoint import load_policy, load_train_config  # noqa: E402
from policies.evaluation import Evaluator, save_eval_info  # noqa: E402
from policies.runtime import print_figures, resolve_device, seed_everything  # noqa: E402
from policies.train_config import register_configs  # noqa: E402

register_configs()


@hydra.main(config_path="../conf", config_name="eval", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Loads the policy and its env config, evaluates, saves and prints the figures."""
    eval_cfg = OmegaConf.to_object(cfg)
    device = resolve_device(eval_cfg.device)
    seed_everything(eval_cfg.seed)
    policy = load_policy(eval_cfg.policy_path, device=device)
    env_cfg = sim.env_config_from_dict(load_train_config(eval_cfg.policy_path)["env"])
    out = Path(eval_cfg.output_dir)
    evaluator = Evaluator(
        make_env=lambda: sim.make_vector_env(env_cfg, min(eval_cfg.n_envs, eval_cfg.n_episodes)),
        n_episodes=eval_cfg.n_episodes,
        start_seed=eval_cfg.start_seed,
        max_steps=env_cfg.kwargs.max_episode_steps,
        n_videos=eval_cfg.n_videos,
        video_dir=out / "videos",
        fps=int(env_cfg.kwargs.control_hz),
        device=device,
        metric_keys=env_cfg.metric_keys,
    )
    result = evaluator.run(policy)
    save_eval_info(out / "eval_info.json", result)
    print(f"eval_info: {out / 'eval_info.json'}")
    print_figures({k: result[k] for k in ("success_rate", "success_ci_low", "success_ci_high", "mean_coverage", "n_episodes")})


if __name__ == "__main__":
    main()
