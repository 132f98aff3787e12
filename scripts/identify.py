"""Identify a deployment's physics from the twin's own logs: `python scripts/identify.py run_dir=<deploy run> name=<n>`.

Reads <= 10 episode logs of a scripts/deploy.py run (<run_dir>/episodes/episode_<i>.npz), identifies the block's
friction and mass and the rate and size of unmodelled pushes with their uncertainty (real/sim2real/identify.py), and
writes conf/env/identified_<name>.yaml (or out=<file>): the deployed env with domain randomisation drawn from them,
for `python scripts/eval.py policy_path=... env=identified_<name>`. reference_push_force=<N> (a known push) makes the
mass identifiable. Prints `name: value` figures and writes them to <output_dir>/identification.json.
"""

from __future__ import annotations

from pathlib import Path

import _entry

from real.sim2real.identified_env import run_identification


@_entry.main("identify")
def main(run, config: dict) -> None:
    """Identifies, writes the env config and prints the figures."""
    ident, path = run_identification(run, _entry.CONF_DIR)
    print(f"env config: {path}")
    _entry.write_figures(ident.figures(), Path(run.output_dir) / "identification.json")


if __name__ == "__main__":
    main()
