"""A stop request that signal handlers may raise: services run until SIGTERM/SIGINT sets it.

Why not ``threading.Event``: a Python signal handler runs in the main thread, between two of its bytecodes, and
``Event.set()`` takes the lock that ``Event.wait()`` holds while it wakes up. A SIGTERM that lands then, or a second
signal while the first handler is inside ``set()``, blocks the main thread on a lock it holds itself: the robot
server never stops and keeps its world running (seen here: two emulated-reality servers outlived their killed
deploy by 50 minutes, deadlocked in that handler). Setting a plain attribute takes no lock.
"""

from __future__ import annotations

import signal
import time

POLL_S = 0.05  # s between looks at the flag while waiting


class StopRequest:
    """A flag set once (from a signal handler or any thread) and waited on by a service's main loop."""

    def __init__(self) -> None:
        self._requested = False

    def set(self, *_: object) -> None:
        """Requests the stop (takes no lock; callable as a signal handler)."""
        self._requested = True

    def clear(self) -> None:
        """Withdraws the request (before a service starts again)."""
        self._requested = False

    def is_set(self) -> bool:
        """Whether a stop was requested."""
        return self._requested

    def wait(self, timeout: float) -> bool:
        """Sleeps until the stop is requested or ``timeout`` s have passed; returns :meth:`is_set`."""
        deadline = time.monotonic() + timeout
        while not self._requested:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            time.sleep(min(left, POLL_S))
        return self._requested


def stop_on_signals(*signals: signal.Signals) -> StopRequest:
    """A :class:`StopRequest` set by any of ``signals`` (default SIGTERM and SIGINT); call from the main thread."""
    stop = StopRequest()
    for sig in signals or (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop.set)
    return stop
