"""Train a policy in the PushT twin: `python scripts/train.py [overrides]` (Hydra; config in conf/train.yaml).

Collects expert demonstrations when the dataset is missing, trains, evaluates on listed seeds, checkpoints and
logs to W&B (offline by default). Prints the final figures as `name: value` lines.
"""

from __future__ import annotations

import os

# Let torch's OpenMP threads spin only briefly before they sleep: on a 2-core machine shared with env worker processes,
# long-spinning threads make every step wait for a preempted peer. Measured per training step (2 threads): idle
# 23 ms default / 24 ms here; with one core busy elsewhere 469 ms default / 56 ms here (OMP_WAIT_POLICY=PASSIVE:
# 39 ms idle, 44 ms busy).
os.environ.setdefault("GOMP_SPINCOUNT", "2000")

import hydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

import sim  # noqa: E402
from policies.resume import restore_run_config  # noqa: E402
from policies.runtime import print_figures  # noqa: E402
from policies.train_config import register_configs  # noqa: E402
from policies.trainer import EnvFactories, Trainer  # noqa: E402

sim.register_configs()
register_configs()


@hydra.main(config_path="../conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Validates the config, wires the twin into the trainer through the gymnasium API and runs it."""
    if cfg.resume:  # the run's own saved config; overrides that change it are refused before anything is collected
        cfg = restore_run_config(cfg, HydraConfig.get().overrides.task)
    train_cfg = OmegaConf.to_object(cfg)  # typed dataclasses; __post_init__ checks raise naming the field
    env_cfg = train_cfg.env
    envs = EnvFactories(
        make_env=lambda: sim.make_env(env_cfg, render_mode=None),
        make_vector_env=lambda n: sim.make_vector_env(env_cfg, n),
        make_expert=lambda env: sim.make_expert(env, env_cfg),
        fps=int(env_cfg.kwargs.control_hz),
        max_episode_steps=env_cfg.kwargs.max_episode_steps,
        metric_keys=tuple(env_cfg.metric_keys),
    )
    figures = Trainer(train_cfg, OmegaConf.to_container(cfg, resolve=True), envs).run()
    print_figures(figures)


if __name__ == "__main__":
    main()
