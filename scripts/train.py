"""Train a policy in the PushT twin: `python scripts/train.py [overrides]` (Hydra; config in conf/train.yaml).

Collects expert demonstrations when the dataset is missing, trains, evaluates on listed seeds, checkpoints and
logs to W&B (offline by default). Prints the final figures as `name: value` lines.
"""

from __future__ import annotations

import _entry

from policies.trainer import Trainer


@_entry.main("train")
def main(run, config: dict) -> None:
    """Wires the twin into the trainer through the gymnasium API, trains and prints the final figures."""
    _entry.print_figures(Trainer(run, config, _entry.env_factories(run.env)).run())


if __name__ == "__main__":
    main()
