"""Warp start-up, device choice and CPU-parallel launches shared by every kernel module.

Importing this module initialises Warp once:

* the kernel cache honours ``WARP_CACHE_PATH`` (the Makefile sets ``.cache/warp``); only when that
  variable and ``wp.config.kernel_cache_dir`` are both unset is the cache pointed at
  ``<repo>/.cache/warp`` so compiled modules survive between runs (compiling a module costs ~2-3 s
  cold, milliseconds when cached);
* warp-lang older than 1.12.1 is refused: its ``wp.HashGrid`` misses neighbours at negative
  coordinates.

Warp's CPU backend runs one launch on one core. ``launch_rows`` splits a launch over row ranges and
runs the pieces from a thread pool; Warp's native call releases the GIL, so the pieces run on
separate cores. Only kernels whose rows write disjoint outputs may be split (no atomics: Warp's CPU
atomics are plain read-modify-writes).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import warp as wp

MIN_WARP_VERSION = (1, 12, 1)


def _version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


if _version_tuple(wp.__version__) < MIN_WARP_VERSION:
    raise ImportError(
        f"kernels needs warp-lang >= {'.'.join(map(str, MIN_WARP_VERSION))} (wp.HashGrid misses neighbours at "
        f"negative coordinates before it); found {wp.__version__}"
    )

if "WARP_CACHE_PATH" not in os.environ and wp.config.kernel_cache_dir is None:
    wp.config.kernel_cache_dir = str(Path(__file__).resolve().parent.parent / ".cache" / "warp")

wp.init()

# Launches below this many rows are not split: thread hand-off costs more than it saves.
MIN_ROWS_PER_SPLIT = 16_384

_cpu_threads: int | None = None
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()
_loaded: set[tuple[str, str]] = set()


def cpu_threads() -> int:
    """Return how many CPU threads ``launch_rows`` uses (``REALSIM_KERNEL_THREADS`` or the usable cores)."""
    global _cpu_threads
    if _cpu_threads is None:
        env = os.environ.get("REALSIM_KERNEL_THREADS")
        if env is not None:
            set_cpu_threads(int(env))
        else:
            _cpu_threads = max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    return int(_cpu_threads)


def set_cpu_threads(n: int) -> None:
    """Set how many threads CPU launches are split over (1 = Warp's single-core default).

    Raises:
        ValueError: if ``n`` is not a positive integer.
    """
    global _cpu_threads, _pool
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"cpu threads must be a positive integer, got {n!r}")
    with _pool_lock:
        _cpu_threads = n
        if _pool is not None:
            _pool.shutdown(wait=True)
            _pool = None


def _get_pool() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=cpu_threads(), thread_name_prefix="kernels")
        return _pool


def resolve_device(device: str | None = None, like: Any = None) -> wp.context.Device:
    """Turn a device setting into a Warp device.

    ``None`` follows ``like`` (a torch tensor on CUDA picks that GPU, anything else the CPU);
    ``"auto"`` picks ``cuda`` when a CUDA device exists, else ``cpu``; ``"cpu"``, ``"cuda"`` and
    ``"cuda:N"`` are taken as given.

    Raises:
        ValueError: if the device string is unknown or names a CUDA device that does not exist.
    """
    if device is None:
        torch_device = getattr(like, "device", None)
        if torch_device is not None and getattr(torch_device, "type", "cpu") == "cuda":
            device = f"cuda:{torch_device.index or 0}"
        else:
            device = "cpu"
    if not isinstance(device, str):
        device = str(device)
    if device == "auto":
        device = "cuda" if wp.get_cuda_device_count() > 0 else "cpu"
    if device.startswith("cuda"):
        count = wp.get_cuda_device_count()
        index = 0
        if ":" in device:
            try:
                index = int(device.split(":", 1)[1])
            except ValueError:
                raise ValueError(f"device {device!r} is not 'cpu', 'cuda', 'cuda:N' or 'auto'") from None
        if index >= count:
            raise ValueError(f"device {device!r} requested but this machine has {count} CUDA device(s)")
    elif device != "cpu":
        raise ValueError(f"device {device!r} is not 'cpu', 'cuda', 'cuda:N' or 'auto'")
    return wp.get_device(device)


def _ensure_loaded(kernel: wp.Kernel, device: wp.context.Device) -> None:
    key = (kernel.module.name, str(device))
    if key not in _loaded:
        wp.load_module(kernel.module, device=device)
        _loaded.add(key)


def launch_rows(kernel: wp.Kernel, rows: int, inputs: Sequence[Any], device: wp.context.Device, *,
                min_split: int = MIN_ROWS_PER_SPLIT) -> None:
    """Launch ``kernel`` over ``rows`` rows; on the CPU split the rows over threads.

    The kernel's last parameter must be ``offset: int`` and its row is ``wp.tid() + offset``. Rows
    must write disjoint outputs (no atomics), because CPU pieces run concurrently. Launches of
    fewer than ``min_split`` rows run in one piece (lower it for kernels whose rows are long loops).
    """
    if rows <= 0:
        return
    threads = cpu_threads() if device.is_cpu else 1
    if threads == 1 or rows < min_split:
        wp.launch(kernel, dim=rows, inputs=[*inputs, 0], device=device)
        return
    _ensure_loaded(kernel, device)
    # A few pieces per thread balance uneven rows; small launches get one piece per thread.
    pieces = threads * 4 if rows >= 16 * min_split else threads
    step = (rows + pieces - 1) // pieces
    starts = list(range(0, rows, step))

    def run(start: int) -> None:
        wp.launch(kernel, dim=min(step, rows - start), inputs=[*inputs, start], device=device)

    for future in [_get_pool().submit(run, s) for s in starts]:
        future.result()


def launch_chunks(kernel: wp.Kernel, rows: int, inputs: Sequence[Any], device: wp.context.Device, slots: int) -> None:
    """Launch a kernel that sums into ``slots`` accumulation slots (see ``reduction_slots``).

    The kernel's last three parameters must be ``offset: int, chunk: int, spread: int``; its row is
    ``wp.tid() + offset`` and it adds into slot ``chunk + wp.tid() % spread``. On the CPU each thread
    piece owns one slot (``spread`` 1), so the plain read-modify-write CPU atomics never race; on a
    GPU one launch spreads its atomics over all slots. The caller sums the slots afterwards.
    """
    if rows <= 0:
        return
    if device.is_cpu and slots > 1:
        _ensure_loaded(kernel, device)
        step = (rows + slots - 1) // slots
        starts = list(range(0, rows, step))

        def run(i: int) -> None:
            wp.launch(kernel, dim=min(step, rows - starts[i]), inputs=[*inputs, starts[i], i, 1], device=device)

        for future in [_get_pool().submit(run, i) for i in range(len(starts))]:
            future.result()
    else:
        spread = 1 if device.is_cpu else slots
        wp.launch(kernel, dim=rows, inputs=[*inputs, 0, 0, spread], device=device)


def reduction_slots(rows: int, device: wp.context.Device) -> int:
    """Return how many accumulation slots ``launch_chunks`` uses for ``rows`` rows on ``device``.

    On the CPU one slot per thread piece (so pieces never share one); on a GPU 1024 slots so that
    atomics from many threads spread over many addresses.
    """
    if device.is_cpu:
        return 1 if rows < MIN_ROWS_PER_SPLIT else cpu_threads()
    return 1024
