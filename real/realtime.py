"""Real-time scheduling for control processes: what a robot stack runs its bridge and control loop with."""

from __future__ import annotations

import logging
import os
import threading

log = logging.getLogger(__name__)


def set_realtime_priority(priority: int) -> None:
    """Put the calling thread (and the threads it starts afterwards) under ``SCHED_FIFO`` at ``priority``.

    A real-time thread runs as soon as it is woken, ahead of every normal process, so a busy machine (a
    training run next to the robot) cannot delay a command or the watchdog. The kernel's real-time throttling
    (``/proc/sys/kernel/sched_rt_runtime_us``, 95% by default) keeps a runaway thread from freezing the
    machine. ``priority`` 0 leaves the scheduling unchanged.

    Raises:
        ValueError: ``priority`` is outside ``[0, sched_get_priority_max(SCHED_FIFO)]``.
        PermissionError: the process may not use real-time scheduling (needs CAP_SYS_NICE or an rtprio limit).
        NotImplementedError: the platform has no SCHED_FIFO.
    """
    if priority == 0:
        return
    if not hasattr(os, "sched_setscheduler"):
        raise NotImplementedError("real-time scheduling (SCHED_FIFO) is not available on this platform")
    top = os.sched_get_priority_max(os.SCHED_FIFO)
    if not 0 <= priority <= top:
        raise ValueError(f"realtime priority must be in [0, {top}], got {priority}")
    os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    log.info("thread %d of process %d runs SCHED_FIFO at priority %d", threading.get_native_id(), os.getpid(), priority)


def try_realtime_priority(priority: int) -> bool:
    """Like :func:`set_realtime_priority`, but returns False (and logs why) instead of raising."""
    try:
        set_realtime_priority(priority)
    except (OSError, NotImplementedError, ValueError) as exc:
        log.warning("no real-time scheduling (%s); timings will include the machine's load", exc)
        return False
    return priority > 0
