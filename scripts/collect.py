"""Record demonstrations through the twin in collect mode: `python scripts/collect.py n_episodes=3 dataset.root=data/collected`.

A teleoperator drives the robot (the emulated reality in its own process, one per episode, or a robot server with
`robot=remote`); the twin's arm follows the robot's measured joints, its block is corrected from the robot's
depth cameras, and every frame is recorded from the twin's state into a LeRobot v3 dataset (resumed if it exists),
which `scripts/train.py dataset.root=<root>` trains on. Prints `name: value` figures. `monitor=streaming
monitor.path=<model dir>`: the streaming video model watches the robot's colour frames (real.modes.monitoring).
"""

from __future__ import annotations

import contextlib

import _entry

from real.modes.collect_run import collect_dataset


@_entry.main("collect")
def main(run, config: dict) -> None:
    """Collects and prints the figures."""
    with _entry.tracker(run, config) if run.monitor.enabled else contextlib.nullcontext() as tracker:
        result = collect_dataset(run, tracker)  # monitor=streaming: its answers go to W&B (monitor/*)
    _entry.print_figures({**result.figures(), "dataset_root": str(run.dataset.root)})


if __name__ == "__main__":
    main()
