"""``bench.py streaming``: per-frame latency and resident memory of one long stream, bounded memory against full.

One stream of synthetic 64x64 frames (a pool of random images, cycled) goes through
:meth:`StreamingEstimator.step <perception.streaming.estimator.StreamingEstimator.step>` of the default preset
(random weights: speed does not depend on them), then a shorter one through the same model with ``memory=full``
(no eviction, the growing baseline). Figures::

    ms_per_frame_<n>      median CPU time of a step (this thread's, torch on 1 thread) over the 100 frames ending at
                          frame n (n = 100 and n_frames): the cost, without the time other processes on a shared
                          machine take the core away
    wall_ms_per_frame_<n> the same in wall-clock time (what a caller waits, load included)
    rss_mb_<n>            resident memory of the process at frame n (MiB)
    fps                   frames per second over the whole stream
    full_...              the same for memory=full, up to full_frames
    mflop_per_frame, params_m, n_threads, cache_tokens (bounded cache size at the end)
"""

from __future__ import annotations

import dataclasses
import os
import time

import numpy as np
import torch

from perception.streaming.config import StreamingConfig
from perception.streaming.estimator import StreamingEstimator
from perception.streaming.model import StreamingModel, forward_flops_per_frame


def rss_mb() -> float:
    """Resident set size of this process (MiB; 0 where /proc is missing)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, AttributeError):
        return 0.0


def measure_stream(estimator: StreamingEstimator, n_frames: int, seed: int = 0, fps: float = 10.0,
                   prefix: str = "", n_warmup: int = 20) -> dict[str, float]:
    """Streams ``n_frames`` synthetic frames through ``estimator``; ``<prefix>ms_per_frame_<n>``,
    ``<prefix>rss_mb_<n>`` at n = 100 and ``n_frames``, and ``<prefix>fps``. A stream of ``n_warmup`` untimed frames
    comes first (torch's first calls), then ``reset()`` starts the measured one."""
    size = estimator.model.config.image_size
    pool = np.random.default_rng(seed).integers(0, 256, (64, size, size, 3), dtype=np.uint8)
    marks = sorted({min(100, n_frames), n_frames})
    latencies = np.empty((2, n_frames))  # CPU s, wall s
    figures: dict[str, float] = {}
    for i in range(n_warmup):
        estimator.step(pool[i % len(pool)], i / fps)
    estimator.reset()
    begin = time.perf_counter()
    for i in range(n_frames):
        cpu, wall = time.thread_time(), time.perf_counter()
        estimator.step(pool[i % len(pool)], i / fps)
        latencies[:, i] = time.thread_time() - cpu, time.perf_counter() - wall
        if i + 1 in marks:
            cpu_ms, wall_ms = np.median(latencies[:, max(0, i - 99):i + 1], axis=1) * 1e3
            figures |= {f"{prefix}ms_per_frame_{i + 1}": float(cpu_ms), f"{prefix}wall_ms_per_frame_{i + 1}":
                        float(wall_ms), f"{prefix}rss_mb_{i + 1}": rss_mb()}
    figures[f"{prefix}fps"] = n_frames / (time.perf_counter() - begin)
    return figures


def run_streaming_benchmarks(n_frames: int = 10_000, full_frames: int = 2_000, seed: int = 0,
                             n_threads: int = 1) -> dict[str, float]:
    """The module docstring's figures for the default :class:`StreamingConfig`. ``n_threads`` > 0 sets torch's
    thread count for the run (restored after); 1 by default: a step is ~50 small ops, and on this shared 2-core
    machine two threads made it 8x slower (16 vs 2 ms a frame, measured under load); 0 keeps torch's count.

    Raises:
        ValueError: n_frames or full_frames < 1.
    """
    if n_frames < 1 or full_frames < 1:
        raise ValueError(f"n_frames and full_frames must be >= 1, got {n_frames}, {full_frames}")
    threads = torch.get_num_threads()
    try:
        if n_threads > 0:
            torch.set_num_threads(n_threads)
        torch.manual_seed(seed)
        config = StreamingConfig()
        model = StreamingModel(config).eval()
        figures = {"n_threads": torch.get_num_threads(), "mflop_per_frame": forward_flops_per_frame(config) / 1e6,
                   "params_m": sum(p.numel() for p in model.parameters()) / 1e6}
        bounded = StreamingEstimator(model)
        figures |= measure_stream(bounded, n_frames, seed)
        figures["cache_tokens"] = bounded.cache.length
        full = StreamingModel(dataclasses.replace(config, memory="full")).eval()
        full.load_state_dict(model.state_dict())
        figures |= measure_stream(StreamingEstimator(full), full_frames, seed, prefix="full_")
    finally:
        torch.set_num_threads(threads)
    return figures
