"""Does success in the twin predict success in reality? `python scripts/eval_sim2real.py run_dir=<training run>`.

For every checkpoint of the run (or `checkpoints=[...]`), the same seeded episodes are evaluated offline in the twin
and deployed through the twin into the robot (by default the emulated reality, each episode in its own process);
the last checkpoint is also deployed on reality's raw observations (no twin) as the baseline. Reality's physics are
identified from <= 10 logged deployed episodes (the first checkpoint's, or calibration.run_dir=<deploy run>) and every
checkpoint is evaluated offline again with them (the calibrated column). Prints the columns with the absolute errors,
then `name: value` figures: uncalibrated_mae, calibrated_mae, pearson_r, pearson_r_calibrated, offline_speedup, and
real success through the twin vs raw. Results (and the identification) go to `<output_dir>/sim2real.json`, the
episode logs to `<output_dir>/episodes/<checkpoint>/`; rerun with `hydra.run.dir=<that dir>` to resume a crashed run.
"""

from __future__ import annotations

import _entry

from policies.runtime import resolve_device
from real.sim2real.evaluation import evaluate_sim2real, report


@_entry.main("eval_sim2real")
def main(run, config: dict) -> None:
    """Measures the checkpoints, prints the table and the figures."""
    with _entry.tracker(run, config) as tracker:
        results = evaluate_sim2real(run, resolve_device(run.device), tracker)
        table, figures = report(results)
        tracker.log({f"sim2real/{k}": v for k, v in figures.items()}, step=max(r["step"] for r in results.rows) + 1)
    print(table)
    print(f"results: {results.path}")
    _entry.print_figures(figures)


if __name__ == "__main__":
    main()
