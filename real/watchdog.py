"""A command watchdog: a deadline that fresh commands push forward and a thread that acts when it passes."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class Watchdog:
    """Calls ``on_expire()`` once when no ``feed()`` came for ``timeout`` seconds after the last one.

    The watchdog is disarmed until the first ``feed()`` and again after it fires (the robot is then holding; the
    next fresh command re-arms it). A background thread sleeps until the deadline (it does not poll), so the
    reaction time is the timeout plus the OS's wake-up latency, typically well under a millisecond.

    Args:
        timeout: seconds without a fresh command before ``on_expire`` runs.
        on_expire: called from the watchdog thread, without the watchdog's lock, with the time
            (``time.monotonic()``) it fired; a ``feed()`` may race with it, so it should check that no fresh
            command arrived meanwhile. Exceptions are logged and the watchdog stays disarmed.
        name: thread name, for logs.

    Raises:
        ValueError: from the constructor, if ``timeout`` is not positive.
    """

    def __init__(self, timeout: float, on_expire: Callable[[float], None], name: str = "watchdog") -> None:
        if not timeout > 0:
            raise ValueError(f"watchdog timeout must be > 0 s, got {timeout!r}")
        self.timeout = float(timeout)
        self._on_expire = on_expire
        self._name = name
        self._cond = threading.Condition()
        self._deadline: float | None = None
        self._stop = False
        self._thread: threading.Thread | None = None
        self.n_expired = 0  # times the watchdog fired
        self.last_expired_at: float | None = None  # time.monotonic() of the last firing

    @property
    def armed(self) -> bool:
        """Whether a deadline is pending."""
        return self._deadline is not None

    def start(self) -> None:
        """Start the watchdog thread (disarmed). Raises RuntimeError if it is already running."""
        if self._thread is not None:
            raise RuntimeError(f"{self._name} is already running")
        self._stop = False
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop and join the thread; a pending deadline is dropped."""
        with self._cond:
            self._stop = True
            self._deadline = None
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def feed(self, now: float | None = None) -> None:
        """A fresh command arrived at ``now`` (default: ``time.monotonic()``): arm or push the deadline."""
        with self._cond:
            first = self._deadline is None
            self._deadline = (time.monotonic() if now is None else now) + self.timeout
            if first:
                self._cond.notify_all()

    def disarm(self) -> None:
        """Drop the pending deadline (e.g. the robot was told to hold by other means)."""
        with self._cond:
            self._deadline = None

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stop and (self._deadline is None or self._deadline > time.monotonic()):
                    self._cond.wait(None if self._deadline is None else self._deadline - time.monotonic())
                if self._stop:
                    return
                self._deadline = None
                fired_at = time.monotonic()
                self.n_expired += 1
                self.last_expired_at = fired_at
            # Called without the lock, so on_expire may take its own locks (a concurrent feed() must not block on
            # ours while on_expire waits for the caller of feed()); it must itself check that no fresh command
            # arrived in between.
            try:
                self._on_expire(fired_at)
            except Exception:
                log.exception("%s: on_expire failed", self._name)
