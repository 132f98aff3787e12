"""Benchmarks that run our code and the reference on the same data in one process and print each ratio.

Usage: `python scripts/bench.py sim [n_steps=1000] [n_envs=2]`
       `python scripts/bench.py kernels [device=cpu|cuda] [sizes=100000,1000000]`
       `python scripts/bench.py bridge [rate_hz=500] [duration_s=5]`
       `python scripts/bench.py sync [n_episodes=3] [max_steps=100] [time_scale=0.5] [sources=twin,open_loop,raw]
                                     [lookahead_s=0.06]`
       (sync runs at half speed by default, as conf/robot/emulated.yaml: on 2 cores the twin cannot keep real time)
Figures are printed as `name: value` lines at the end (ratios > 1 mean realsim is faster) and written to
`outputs/bench/<area>.json`.
"""

from __future__ import annotations

import os
import sys

# Head-less MuJoCo rendering (the kernels benchmark renders with MuJoCo before anything imports sim).
os.environ.setdefault("MUJOCO_GL", "egl")
from pathlib import Path

from policies.datasets.atomic import atomic_write_json
from policies.runtime import print_figures


def _options(args: list[str]) -> dict[str, str]:
    options = {}
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep:
            raise SystemExit(f"bench options are key=value, got {arg!r}")
        options[key] = value
    return options


def main(argv: list[str]) -> None:
    """Runs the benchmark area named by ``argv[0]`` with ``key=value`` options."""
    if not argv or argv[0] not in ("sim", "kernels", "bridge", "sync"):
        raise SystemExit(__doc__)
    area, options = argv[0], _options(argv[1:])
    if area == "sim":
        from sim.bench import run_sim_benchmarks

        figures = run_sim_benchmarks(n_steps=int(options.get("n_steps", 1000)), n_envs=int(options.get("n_envs", 2)))
    elif area == "bridge":
        from real.bridge.bench import run_bridge_benchmarks

        figures = run_bridge_benchmarks(
            rate_hz=float(options.get("rate_hz", 500)), duration_s=float(options.get("duration_s", 5)), log=print
        )
    elif area == "sync":
        from real.sim2real.sync_bench import run_sync_benchmarks

        figures = run_sync_benchmarks(n_episodes=int(options.get("n_episodes", 3)),
                                      max_steps=int(options.get("max_steps", 100)),
                                      time_scale=float(options.get("time_scale", 0.5)),
                                      sources=tuple(options.get("sources", "twin,open_loop,raw").split(",")),
                                      lookahead_s=float(options.get("lookahead_s", 0.06)), log=print)
    else:
        from kernels.bench import run_kernel_benchmarks

        sizes = [int(s) for s in options.get("sizes", "100000,1000000").split(",")]
        figures = run_kernel_benchmarks(device=options.get("device", "cpu"), sizes=sizes)
    out = Path(options.get("out", f"outputs/bench/{area}.json"))
    atomic_write_json(out, figures)
    print(f"figures written to {out}")
    print_figures(figures)


if __name__ == "__main__":
    main(sys.argv[1:])
