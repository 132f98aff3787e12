"""Plain BC vs reward-aligned BC: `python scripts/compare_rabc.py reward.path=<native reward run dir> [overrides]`.

Hydra; conf/compare_rabc.yaml (the train config on a half-degraded dataset with reward=topreward). Trains both on the
same data, seeds and budget, evaluates both on the same seeded episodes, and prints `success_rate_bc`,
`success_rate_rabc` (with Wilson intervals) as `name: value` lines (policies/rewards/rabc_compare.py).
"""

from __future__ import annotations

from pathlib import Path

import _entry

from policies.rewards.rabc_compare import compare_rabc


@_entry.main("compare_rabc")
def main(run, config: dict) -> None:
    """Runs the comparison through the twin's gymnasium factories and writes `figures.json`."""
    figures = compare_rabc(run, config, _entry.env_factories(run.env))
    _entry.write_figures(figures, Path(run.output_dir) / "figures.json")


if __name__ == "__main__":
    main()
