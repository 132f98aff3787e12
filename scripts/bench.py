"""Benchmarks that run our code and the reference on the same data in one process and print each ratio.

Usage: `python scripts/bench.py sim [n_steps=1000] [n_envs=2] [n_worlds=0]`
       `python scripts/bench.py sim backend=mjwarp n_worlds=4096 [device=auto]` (MuJoCo Warp beside MuJoCo C)
       `python scripts/bench.py kernels [device=cpu|cuda] [sizes=[100000,1000000]]`
       `python scripts/bench.py bridge [rate_hz=500] [duration_s=5]`
       `python scripts/bench.py sync [n_episodes=3] [max_steps=100] [time_scale=0.5] [sources=[twin,open_loop,raw]]
                                     [lookahead_s=0.06] [recon_model=<dir>]`
       (sources=[twin,recon] recon_model=<dir>: the twin corrected from RGB only; recon_rms_mm, recon_rms_deg, recon_hz)
       (sync runs at half speed by default, as conf/robot/emulated.yaml: on 2 cores the twin cannot keep real time)
       `python scripts/bench.py policy [preset=flow_matching] [n_iters=100] [control_steps=200]`
       (action-chunk latency p50/p99 on all threads and on 1, control rate and peak memory of each conf/policy preset)
       `python scripts/bench.py reward [n_frames=300] [k=15] [path=<hub id or dir>] [device=cpu] [dtype=float32]`
       (TOPReward: KV-cache path vs per-prefix scoring, kv_speedup and frames_per_s; path "": a tiny random Qwen2.5-VL)
       `python scripts/bench.py streaming [n_frames=10000] [full_frames=2000] [n_threads=1]`
       (streaming video model: ms_per_frame and rss_mb at frame 100 and n_frames, fps; full_* without eviction)
       `python scripts/bench.py perception [preset=recon_tiny] [view_counts=16,64,256] [chunk_views=4]`
       (streaming reconstruction: peak_mem_mb_<n> and chunk_ms_<n> as n views arrive; allatonce_* in one update)
Options are overrides of conf/bench.yaml (`sim n_steps=10` is `area=sim sim.n_steps=10`). Figures are printed as
`name: value` lines at the end (ratios > 1 mean realsim is faster) and written to `outputs/bench/<area>.json`.
"""

from __future__ import annotations

import sys

import _entry


@_entry.main("bench")
def main(run, config: dict) -> None:
    """Runs the benchmark area ``run.area``, writes and prints its figures."""
    if run.area == "sim":
        from sim.bench import run_sim_benchmarks as bench
    elif run.area == "kernels":
        from kernels.bench import run_kernel_benchmarks as bench
    elif run.area == "bridge":
        from real.bridge.bench import run_bridge_benchmarks as bench
    elif run.area == "policy":
        bench = _entry.run_policy_bench
    elif run.area == "reward":
        from policies.rewards.bench import run_reward_benchmarks as bench
    elif run.area == "streaming":
        from perception.streaming.bench import run_streaming_benchmarks as bench
    elif run.area == "perception":
        bench = _entry.run_perception_bench
    else:
        from real.sim2real.sync_bench import run_sync_benchmarks as bench
    _entry.write_figures(bench(**config[run.area]), run.out)


if __name__ == "__main__":
    sys.argv[1:] = _entry.bench_overrides(sys.argv[1:], usage=__doc__)
    main()
