"""``bench.py perception``: the reconstruction model's streaming mode, peak memory and per-chunk latency as views
arrive, against the all-at-once mode on the same views.

A stream of synthetic views (random pixels, cameras on a ring; the weights are random too: cost does not depend on
them) is written chunk by chunk (``chunk_views``) into the fast weights under ``torch.inference_mode``, then one
query view is read. Figures, for each view count n::

    peak_mem_mb_<n>          peak resident memory of the process while streaming n views (MiB, libraries included)
    stream_mem_delta_mb_<n>  that peak minus the resident memory just before the stream (what the stream adds)
    chunk_ms_<n>             median wall time of one chunk's update (ms; load on a shared machine included)
    query_ms_<n>             wall time of reading one query view after n views (ms)
    allatonce_mem_delta_mb_<n>  the same views in one update: the memory it adds (grows with n)
    peak_mem_ratio_<max>_vs_<min>  peak_mem_mb of the most views over the fewest (flat: <= 1.1)
    mflop_per_chunk, params_m, n_threads

Peak memory is the kernel's high-water mark (``VmHWM``, reset through ``/proc/self/clear_refs`` before each stream);
where that reset is refused, a thread samples the resident size every millisecond instead.
"""

from __future__ import annotations

import math
import statistics
import threading
import time

import numpy as np
import torch

from perception.recon.cameras import Cameras, Views
from perception.recon.config import ReconConfig
from perception.recon.model import ReconModel, forward_flops


def _status_mb(field: str) -> float:
    """A ``/proc/self/status`` memory field (``VmRSS``, ``VmHWM``) in MiB; 0 where /proc is missing."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class PeakRSS:
    """Context manager measuring the peak resident memory (MiB) of the process inside it: ``.peak``, ``.start``."""

    def __enter__(self) -> PeakRSS:
        self.start = _status_mb("VmRSS")
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM to the current RSS
            self._sampler = None
        except OSError:
            self._samples, self._stop = [self.start], threading.Event()
            self._sampler = threading.Thread(target=self._sample, daemon=True)
            self._sampler.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.001):
            self._samples.append(_status_mb("VmRSS"))

    def __exit__(self, *exc: object) -> None:
        if self._sampler is None:
            self.peak = max(_status_mb("VmHWM"), _status_mb("VmRSS"))
        else:
            self._stop.set()
            self._sampler.join()
            self.peak = max(self._samples + [_status_mb("VmRSS")])


def synthetic_views(n: int, size: int, seed: int) -> Views:
    """``n`` views of random pixels from cameras on a ring around the origin, looking at it (one scene)."""
    rng = np.random.default_rng(seed)
    f = 0.5 * size / math.tan(math.radians(30))
    k = torch.tensor([[f, 0, (size - 1) / 2], [0, f, (size - 1) / 2], [0, 0, 1]], dtype=torch.float32)
    poses = torch.zeros(n, 4, 4)
    for i, angle in enumerate(rng.uniform(0, 2 * math.pi, n)):
        eye = torch.tensor([0.6 * math.cos(angle), 0.6 * math.sin(angle), 0.5])
        forward = -eye / eye.norm()
        right = torch.linalg.cross(forward, torch.tensor([0.0, 0.0, 1.0]))
        right = right / right.norm()
        poses[i, :3, :3] = torch.stack((right, torch.linalg.cross(forward, right), forward), dim=1)
        poses[i, :3, 3], poses[i, 3, 3] = eye, 1.0
    images = torch.as_tensor(rng.random((1, n, 3, size, size), dtype=np.float32))
    return Views(images, Cameras(k.expand(1, n, 3, 3), poses[None], size, size))


def measure_stream(model: ReconModel, n_views: int, chunk_views: int, seed: int = 0) -> dict[str, float]:
    """Streams ``n_views`` views (made chunk by chunk, as they would arrive) and reads one query view:
    ``peak_mem_mb``, ``stream_mem_delta_mb``, ``chunk_ms``, ``query_ms`` (suffixed ``_<n_views>``)."""
    size, times = model.config.image_size, []
    query = synthetic_views(1, size, seed + 10_000).cameras
    with torch.inference_mode(), PeakRSS() as memory:
        state = model.init_state(1)
        for start in range(0, n_views, chunk_views):
            chunk = synthetic_views(min(chunk_views, n_views - start), size, seed + start)
            begin = time.perf_counter()
            state = model.update(state, chunk)
            times.append(time.perf_counter() - begin)
        begin = time.perf_counter()
        model.query(state, query)
        query_s = time.perf_counter() - begin
    return {f"peak_mem_mb_{n_views}": memory.peak, f"stream_mem_delta_mb_{n_views}": memory.peak - memory.start,
            f"chunk_ms_{n_views}": statistics.median(times) * 1e3, f"query_ms_{n_views}": query_s * 1e3}


def measure_all_at_once(model: ReconModel, n_views: int, seed: int = 0) -> dict[str, float]:
    """The memory one update over all ``n_views`` adds: ``allatonce_mem_delta_mb_<n_views>``."""
    views = synthetic_views(n_views, model.config.image_size, seed)
    with torch.inference_mode(), PeakRSS() as memory:
        model.query(model.update(model.init_state(1), views), views.cameras.select(slice(0, 1)))
    return {f"allatonce_mem_delta_mb_{n_views}": memory.peak - memory.start}


def run_recon_benchmarks(config: ReconConfig, view_counts: list[int], chunk_views: int = 4, seed: int = 0,
                         n_threads: int = 1) -> dict[str, float]:
    """The module docstring's figures for ``config`` at each of ``view_counts``. ``n_threads`` > 0 sets torch's
    thread count for the run (restored after; 0 keeps torch's).

    Raises:
        ValueError: no view counts, a count or ``chunk_views`` < 1.
    """
    if not view_counts or min(view_counts) < 1 or chunk_views < 1:
        raise ValueError(f"view_counts must be >= 1 each (and some), chunk_views >= 1; got {view_counts}, "
                         f"{chunk_views}")
    threads = torch.get_num_threads()
    try:
        if n_threads > 0:
            torch.set_num_threads(n_threads)
        torch.manual_seed(seed)
        model = ReconModel(config).eval()
        figures = {"n_threads": torch.get_num_threads(), "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
                   "mflop_per_chunk": forward_flops(config, chunk_views, 0) / 1e6}
        measure_stream(model, 2 * chunk_views, chunk_views, seed)  # warm-up: torch's first calls, allocator pools
        for n in sorted(view_counts):
            figures |= measure_stream(model, n, chunk_views, seed)
        for n in sorted(view_counts):
            figures |= measure_all_at_once(model, n, seed)
        lo, hi = min(view_counts), max(view_counts)
        figures[f"peak_mem_ratio_{hi}_vs_{lo}"] = figures[f"peak_mem_mb_{hi}"] / figures[f"peak_mem_mb_{lo}"]
    finally:
        torch.set_num_threads(threads)
    return figures
