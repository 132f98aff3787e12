"""Does success in the twin predict success in reality? `python scripts/eval_sim2real.py run_dir=<training run>`.

For every checkpoint of the run (or `checkpoints=[...]`), the same seeded episodes are evaluated offline in the twin
and deployed through the twin into the robot (by default the emulated reality, each episode in its own process);
the last checkpoint is also deployed on reality's raw observations (no twin) as the baseline. Prints the columns,
then `name: value` figures: the Pearson r of twin vs real success, and real success through the twin vs raw.
Results go to `<output_dir>/sim2real.json`; rerun with `hydra.run.dir=<that dir>` to resume a crashed run.
"""

from __future__ import annotations

import os

os.environ.setdefault("GOMP_SPINCOUNT", "2000")  # see scripts/train.py

import hydra  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

import sim  # noqa: E402, F401  (head-less rendering default)
from policies.runtime import print_figures, resolve_device  # noqa: E402
from policies.tracking import Tracker  # noqa: E402
from real.sim2real.evaluation import evaluate_sim2real, register_configs, report  # noqa: E402

register_configs()


@hydra.main(config_path="../conf", config_name="eval_sim2real", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Measures the checkpoints, prints the table and the figures."""
    run = OmegaConf.to_object(cfg)
    tracker = Tracker(project=run.logger.project, mode=run.logger.mode, run_dir=run.output_dir,
                      config=OmegaConf.to_container(cfg, resolve=True))
    try:
        results = evaluate_sim2real(run, resolve_device(run.device), tracker)
        table, figures = report(results)
        tracker.log({f"sim2real/{k}": v for k, v in figures.items()}, step=max(r["step"] for r in results.rows) + 1)
    finally:
        tracker.finish()
    print(table)
    print(f"results: {results.path}")
    print_figures(figures)


if __name__ == "__main__":
    main()
