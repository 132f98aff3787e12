"""The stop request services wait on: set from signal handlers under a storm of signals, without a lock."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

from real.stop_request import StopRequest
from tests.conftest import REPO_ROOT

# SIGALRM every 100 us while the main thread waits in 0.5 ms slices, for 1 s. With a threading.Event here the
# handlers nest inside Event.set() (it holds the event's lock when the next signal lands) and the process dies of
# RecursionError or hangs; that is how two robot servers outlived their deploy.
STORM = textwrap.dedent("""
    import signal, time
    from real.stop_request import StopRequest
    stop = StopRequest()
    signal.signal(signal.SIGALRM, stop.set)
    signal.setitimer(signal.ITIMER_REAL, 1e-4, 1e-4)
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        stop.wait(0.0005)
    signal.setitimer(signal.ITIMER_REAL, 0)
    print("set:", stop.is_set())
""")


def test_a_storm_of_signals_sets_it_without_hanging_or_recursing():
    proc = subprocess.run([sys.executable, "-c", STORM], cwd=REPO_ROOT, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0 and "set: True" in proc.stdout, proc.stderr[-2000:]


def test_wait_returns_at_the_request_or_after_the_timeout():
    stop = StopRequest()
    start = time.monotonic()
    assert stop.wait(0.1) is False and time.monotonic() - start >= 0.1
    stop.set()
    assert stop.wait(10.0) is True and stop.is_set()
