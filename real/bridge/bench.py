"""Bridge benchmarks: command latency over loopback, and how fast the robot holds when its commander dies.

Both run real processes on real sockets: the robot server (a :class:`SimulatedJointRobot` behind the safety
layer) in one process, the commander in this one (latency) or in a child that gets killed (hold time).

* Latency: a ``rate_hz`` stream of COMMANDs along a smooth trajectory; each latency is from just before the
  send to the arrival of the STATE that acknowledges it (the full round trip, safety filter included).
* Hold time after a commander dies: a child process streams commands at ``rate_hz``; we SIGKILL it (the
  server sees the connection drop) or SIGSTOP it (a hung commander: only the watchdog can notice), while an
  observer connection reads the state every millisecond or so. ``hold_ms``: from the signal until the
  commanded target stops changing for good (the robot holds); ``stop_ms``: until every joint's speed stays
  below ``STOP_SPEED`` (the robot has braked to rest). Times come from the robot's measurement timestamps,
  sampled at 1 kHz.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from real.bridge.client import RemoteRobot, RemoteRobotConfig
from real.bridge.server import ServerConfig, ServerProcess
from real.emulated.sim_robot import SimulatedJointRobot
from real.realtime import set_realtime_priority, try_realtime_priority
from real.robot import JOINT_POS, JOINT_TARGET, JOINT_VEL, SAFETY_STATUS, TIMESTAMP
from real.safety import Status

STOP_SPEED = 1e-3  # rad/s: a joint slower than this is at rest
AMPLITUDE = 0.05  # rad, of the benchmark trajectory q0 + A (1 - cos(2 pi f t)) on every joint
FREQUENCY = 0.3  # Hz; peak speed 2 pi f A = 0.094 rad/s, a careful pushing motion


def trajectory(q0: np.ndarray, t: float) -> np.ndarray:
    """The benchmark's smooth joint trajectory at time ``t`` (s) from its start (rad; starts at rest at ``q0``)."""
    return q0 + AMPLITUDE * (1.0 - math.cos(2.0 * math.pi * FREQUENCY * t))


def stream_commands(robot: RemoteRobot, rate_hz: float, duration_s: float,
                    should_stop: Callable[[], bool] = lambda: False) -> dict[str, float]:
    """Command ``trajectory`` at ``rate_hz`` for ``duration_s`` seconds; returns latency and rate figures.

    Each command is stamped with its sample time, so the safety layer's rate limits see the trajectory's true
    velocity. Figures: ``p50_latency_ms``, ``p99_latency_ms``, ``max_latency_ms`` (send -> STATE reply),
    ``achieved_rate_hz``, ``n_commands``, ``late_fraction`` (commands sent over a period after their slot).
    """
    period = 1.0 / rate_hz
    q0 = robot.get_observation()[JOINT_POS].copy()
    robot.latencies_ns = []
    start = time.monotonic()
    n, late = 0, 0
    while (now := time.monotonic()) - start < duration_s and not should_stop():
        slot = start + n * period
        if now > slot + period:
            late += 1
        robot.send_action({JOINT_POS: trajectory(q0, slot - start)}, sent_at=slot)
        n += 1
        next_slot = start + n * period
        delay = next_slot - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    elapsed = time.monotonic() - start
    latencies = np.array(robot.latencies_ns, dtype=np.float64) * 1e-6
    robot.latencies_ns = None
    return {
        "p50_latency_ms": float(np.percentile(latencies, 50)),
        "p99_latency_ms": float(np.percentile(latencies, 99)),
        "max_latency_ms": float(latencies.max()),
        "achieved_rate_hz": n / elapsed,
        "n_commands": float(n),
        "late_fraction": late / max(n, 1),
    }


def _commander_main(port: int, secret: str, rate_hz: float, priority: int, ready: Any) -> None:
    """Child process: connect and stream commands until killed; reports 'streaming' once it is moving."""
    set_realtime_priority(priority)
    robot = RemoteRobot(RemoteRobotConfig(id="commander", port=port, secret=secret))
    robot.connect()
    started = time.monotonic()
    told = False

    def signal_ready() -> bool:
        nonlocal told
        if not told and time.monotonic() - started > 0.4:
            ready.send("streaming")
            told = True
        return False

    stream_commands(robot, rate_hz, duration_s=3600.0, should_stop=signal_ready)


def measure_hold(port: int, sig: int, rate_hz: float = 500.0, secret: str = "", observe_s: float = 0.25,
                 priority: int = 0, start_timeout: float = 30.0) -> dict[str, float]:
    """Kill (or stop) a commanding child process with ``sig`` and time how fast the robot holds and comes to rest.

    Returns ``hold_ms``, ``stop_ms`` (``inf`` if not reached within ``observe_s``) and ``speed_at_signal``
    (rad/s, the fastest joint when the signal was sent), as described in the module docstring. ``priority``:
    SCHED_FIFO priority of the commander and of the observing thread (0: normal scheduling).

    Raises:
        RuntimeError: the commander did not start streaming within ``start_timeout`` seconds.
    """
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    commander = ctx.Process(target=_commander_main, args=(port, secret, rate_hz, priority, child), daemon=True)
    observer = RemoteRobot(RemoteRobotConfig(id="observer", port=port, secret=secret))
    commander.start()
    child.close()
    try:
        if not parent.poll(start_timeout):
            raise RuntimeError(f"the commander process did not start streaming within {start_timeout} s")
        parent.recv()
        t_signal, records = run_in_thread(lambda: _observe_signal(observer, commander.pid, sig, observe_s), priority)
    finally:
        if commander.is_alive():
            commander.kill()
        commander.join(5.0)
    before, after = records[0], records[1:]
    final_target = after[-1][1]
    held = [np.array_equal(r[1], final_target) and bool(r[3] & Status.HOLDING) for r in after]
    still = [r[2] < STOP_SPEED for r in after]
    return {"hold_ms": _settle_ms(after, held, t_signal), "stop_ms": _settle_ms(after, still, t_signal),
            "speed_at_signal": before[2]}


def _observe_signal(observer: RemoteRobot, pid: int, sig: int, observe_s: float) -> tuple[float, list[tuple]]:
    """Send ``sig`` to ``pid``, then record observations (:func:`_record`) for ``observe_s``; the first is from before."""
    with observer:
        before = observer.get_observation()
        t_signal = time.monotonic()
        os.kill(pid, sig)
        records = [_record(before)]
        while time.monotonic() - t_signal < observe_s:
            records.append(_record(observer.get_observation()))
            time.sleep(0.001)
    return t_signal, records


def _record(obs: dict[str, np.ndarray]) -> tuple[float, np.ndarray, float, int]:
    """(measurement time, target, top joint speed, status) of one observation."""
    return (float(obs[TIMESTAMP][0]), obs[JOINT_TARGET], float(np.abs(obs[JOINT_VEL]).max()),
            int(obs[SAFETY_STATUS][0]))


def run_in_thread(fn: Callable[[], Any], priority: int) -> Any:
    """Run ``fn`` in a new thread at SCHED_FIFO ``priority`` (0: normal) and return its result or raise its error.

    Only that thread changes scheduling; the calling process keeps its own.
    """
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            set_realtime_priority(priority)
            result["value"] = fn()
        except BaseException as exc:  # re-raised in the caller
            result["error"] = exc

    thread = threading.Thread(target=target, name="bench-rt")
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result["value"]


def _settle_ms(records: list[tuple], flags: list[bool], t_signal: float) -> float:
    """ms from ``t_signal`` to the first record from which ``flags`` stays true to the end (inf: never)."""
    if not flags[-1]:
        return math.inf
    first = len(flags) - 1
    while first > 0 and flags[first - 1]:
        first -= 1
    return max(0.0, (records[first][0] - t_signal) * 1e3)


def run_bridge_benchmarks(rate_hz: float = 500.0, duration_s: float = 5.0, trials: int = 3, realtime_priority: int = 20,
                          log: Callable[[str], None] = print) -> dict[str, float]:
    """Run both benchmarks against a fresh server process; returns the figures (worst case over ``trials``).

    ``realtime_priority`` > 0 runs the server, the commanders and the measuring threads under SCHED_FIFO, as a
    robot's control stack would, when the OS allows it (``realtime`` is 1.0 in the figures then); the latency
    stream is also measured at normal priority (``*_normal_priority``), which shows the machine's load.

    Figures: ``p50_latency_ms``, ``p99_latency_ms``, ``max_latency_ms``, ``achieved_rate_hz``, ``n_commands``,
    ``late_fraction``, ``watchdog_timeout_ms``, ``realtime``, and for ``kill`` (SIGKILL) and ``stall``
    (SIGSTOP): ``hold_ms_after_<x>``, ``stop_ms_after_<x>``.
    """
    priority = realtime_priority if _realtime_allowed(realtime_priority) else 0
    server = ServerProcess(SimulatedJointRobot, ServerConfig(realtime_priority=priority))
    host, port = server.start()
    try:
        log(f"robot server pid {server.pid} on {host}:{port}; {rate_hz:g} Hz for {duration_s:g} s; "
            f"SCHED_FIFO priority {priority or 'off'}")
        figures: dict[str, float] = {}
        for suffix, prio in (("_normal_priority", 0), ("", priority)) if priority else (("", 0),):
            with RemoteRobot(RemoteRobotConfig(id="bench", port=port)) as robot:
                stream = run_in_thread(lambda robot=robot: stream_commands(robot, rate_hz, duration_s), prio)
                watchdog_ms = 1e3 * float(robot.server_info["safety"]["watchdog_timeout"])
            figures.update({f"{key}{suffix}": value for key, value in stream.items()})
        figures["watchdog_timeout_ms"] = watchdog_ms
        figures["realtime"] = float(priority > 0)
        for name, sig in (("kill", signal.SIGKILL), ("stall", signal.SIGSTOP)):
            runs = [measure_hold(port, sig, rate_hz, priority=priority) for _ in range(trials)]
            for run in runs:
                log(f"{name}: hold {run['hold_ms']:.1f} ms, stop {run['stop_ms']:.1f} ms "
                    f"(speed at signal {run['speed_at_signal']:.3f} rad/s)")
            figures[f"hold_ms_after_{name}"] = max(r["hold_ms"] for r in runs)
            figures[f"stop_ms_after_{name}"] = max(r["stop_ms"] for r in runs)
    finally:
        server.stop()
    return figures


def _realtime_allowed(priority: int) -> bool:
    """Whether a thread of this process may take SCHED_FIFO ``priority`` (tried in a throw-away thread)."""
    return priority > 0 and bool(run_in_thread(lambda: try_realtime_priority(priority), 0))


if __name__ == "__main__":
    for key, value in run_bridge_benchmarks(duration_s=3.0, trials=2).items():
        print(f"{key}: {value:.4g}")
