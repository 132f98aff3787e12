"""``bench.py reward``: TOPReward's KV-cache path against scoring every prefix from scratch, in one process.

One episode of ``n_frames`` random frames at ``fps`` is resampled at ``sample_fps`` and its ``k`` prefixes scored by
:class:`~policies.rewards.hf.HFScorer` twice, on the same frames: the cached path (the default) and the naive path
(one full forward per prefix). The model is a tiny random Qwen2.5-VL built in a temp dir (``path=""``) or any
Qwen-VL-class model (hub id or local dir). Figures::

    kv_speedup        naive seconds / cached seconds (goal >= 3 at k = 15 on a 300-frame episode)
    frames_per_s      original frames scored per second by the cached path (n_frames / cached seconds)
    cached_s, naive_s the best of ``n_repeats`` timings of each path (s)
    max_abs_diff      largest |cached - naive| over the k log-probabilities (they must agree to 1e-4)
    n_prefixes, n_sampled_frames
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable

import numpy as np

from policies.rewards.hf import HFScorer
from policies.rewards.tiny import build_tiny_qwen2_5_vl
from policies.rewards.topreward import prefix_lengths, resample

__all__ = ["run_reward_benchmarks"]


def _best_time(fn: Callable[[], np.ndarray], n_repeats: int) -> tuple[float, np.ndarray]:
    best, out = float("inf"), None
    for _ in range(n_repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def _measure(scorer: HFScorer, n_frames: int, fps: float, k: int, sample_fps: float, frame_size: int,
             instruction: str, n_repeats: int) -> dict:
    frames = np.random.default_rng(0).integers(0, 256, (n_frames, frame_size, frame_size, 3), dtype=np.uint8)
    sampled, _ = resample(frames, fps, sample_fps)
    lengths = prefix_lengths(len(sampled), k)
    scorer.cached_log_probs(sampled[:2], instruction, [1, 2])  # warm-up: first-call allocations, lazy imports
    cached_s, cached = _best_time(lambda: scorer.cached_log_probs(sampled, instruction, lengths), n_repeats)
    naive_s, naive = _best_time(lambda: scorer.naive_log_probs(sampled, instruction, lengths), n_repeats)
    return {"kv_speedup": naive_s / cached_s, "frames_per_s": n_frames / cached_s, "cached_s": cached_s,
            "naive_s": naive_s, "max_abs_diff": float(np.abs(cached - naive).max()), "n_prefixes": len(lengths),
            "n_sampled_frames": len(sampled)}


def run_reward_benchmarks(n_frames: int = 300, fps: float = 10.0, k: int = 15, sample_fps: float = 2.0,
                          frame_size: int = 56, path: str = "", device: str = "cpu", dtype: str = "float32",
                          instruction: str = "push the T-shaped block onto the goal", n_repeats: int = 2) -> dict:
    """The figures of the module docstring for one episode. ``path=""``: the tiny random Qwen2.5-VL.

    Raises: ValueError: the model cannot be loaded (names the path), bad sizes.
    """
    options = dict(n_frames=n_frames, fps=fps, k=k, sample_fps=sample_fps, frame_size=frame_size,
                   instruction=instruction, n_repeats=n_repeats)
    if path:
        return _measure(HFScorer(path, device=device, dtype=dtype), **options)
    with tempfile.TemporaryDirectory() as tmp:
        return _measure(HFScorer(str(build_tiny_qwen2_5_vl(tmp)), device=device, dtype=dtype), **options)
