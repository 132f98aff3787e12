"""Does success in the twin predict success in reality? `python scripts/eval_sim2real.py run_dir=<training run>`.

For every checkpoint of the run (or `checkpoints=[...]`), the same seeded episodes are evaluated offline in the twin
and deployed through the twin into the robot (by default the emulated reality, each episode in its own process);
the last checkpoint is also deployed on reality's raw observations (no twin) as the baseline. Prints the columns,
then `name: value` figures: the Pearson r of twin vs real success, and real success through the twin vs raw.
Results go to `<output_dir>/sim2real.json`; rerun with `hydra.run.dir=<that dir>` to resume a crashed run.
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
