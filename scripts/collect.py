"""Record demonstrations through the twin in collect mode: `python scripts/collect.py n_episodes=3 dataset.root=data/collected`.

A teleoperator drives the robot (the emulated reality in its own process, one per episode, or a robot server with
`robot=remote`); the twin's arm follows the robot's measured joints, its block is corrected from the robot's
depth cameras, and every frame is recorded from the twin's state into a LeRobot v3 dataset (resumed if it exists),
which `scripts/train.py dataset.root=<root>` trains on. Prints `name: value` figures.
"""

from __future__ import annotations

import os

os.environ.setdefault("GOMP_SPINCOUNT", "2000")  # see scripts/train.py

import hydra  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

import sim  # noqa: E402, F401  (head-less rendering default)
from policies.runtime import print_figures  # noqa: E402
from real.modes.collect_run import collect_dataset, register_configs  # noqa: E402

register_configs()


@hydra.main(config_path="../conf", config_name="collect", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Validates the config, collects, and prints the figures."""
    run = OmegaConf.to_object(cfg)  # typed dataclasses; __post_init__ checks raise naming the field
    result = collect_dataset(run)
    print_figures({**result.figures(), "dataset_root": str(run.dataset.root)})


if __name__ == "__main__":
    main()
