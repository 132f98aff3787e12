"""What deploy and collect mode share while a twin and a robot run together: the clock that maps twin time to the
wall clock, the thread that streams joint targets to the robot, the start check and the episode's figures."""

from __future__ import annotations

import bisect
import collections
import dataclasses
import sys
import threading
import time
from typing import Any

import numpy as np

from real.modes.block_sync import BlockSyncMeter
from real.robot import JOINT_POS, Robot

GIL_SWITCH_S = 0.0005  # s; with Python's default 5 ms a busy twin thread delays every reply the streamer waits for


@dataclasses.dataclass
class TwinClock:
    """Maps twin time (s) to wall-clock time (``time.monotonic()`` s); the twin runs at ``time_scale`` twin seconds
    per wall second from (``wall0``, ``sim0``)."""

    time_scale: float = 1.0
    wall0: float = 0.0
    sim0: float = 0.0

    def start(self, sim_time: float) -> None:
        """Ties twin time ``sim_time`` to now."""
        self.wall0, self.sim0 = time.monotonic(), float(sim_time)

    def sim_time_of(self, stamp: float) -> float:
        """Twin time of a wall-clock stamp."""
        return self.sim0 + (stamp - self.wall0) * self.time_scale

    def wall_time_of(self, sim_time: float) -> float:
        """Wall-clock stamp a twin time belongs to."""
        return self.wall0 + (sim_time - self.sim0) / self.time_scale

    def elapsed(self) -> float:
        """Wall seconds since :meth:`start` (at least 1 ns)."""
        return max(time.monotonic() - self.wall0, 1e-9)


class JointStreamer:
    """Streams a joint trajectory to a robot from its own thread, every ``1 / stream_hz`` s, and keeps its watchdog fed.

    The trajectory is a list of ``(wall time, joint targets)`` samples (:meth:`add`); each command is the trajectory
    at the current time plus ``lead_s``, linearly interpolated (past the last sample: the last sample), stamped with
    the current time so the safety layer's rate limits see the trajectory's own velocity and not send jitter.

    Args:
        robot: a connected robot whose ``send_action`` takes ``sent_at`` (``RemoteRobot``, ``SafeRobot``).
        stream_hz: commands per second.
        lead_s: how far ahead of now the trajectory is sampled (the robot's servo lag).
    """

    def __init__(self, robot: Robot, stream_hz: float, lead_s: float = 0.0) -> None:
        self.robot, self.period, self.lead_s = robot, 1.0 / stream_hz, lead_s
        self._samples: collections.deque[tuple[float, np.ndarray]] = collections.deque()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._past_end = False
        self._error: BaseException | None = None
        self._tracking: list[float] = []
        self.n_sent = 0
        self.n_starved = 0  # commands sent past the trajectory's last sample (the twin was late: the robot held)

    def add(self, stamp: float, q: np.ndarray) -> None:
        """Plans the joint targets ``q`` (rad) for wall time ``stamp``, replacing any later plan; a sample equal to the
        previous one is skipped (the trajectory then ramps to the next change); samples older than 1 s are forgotten."""
        with self._lock:
            samples = self._samples
            while samples and samples[-1][0] >= stamp:
                samples.pop()
            if samples and np.array_equal(samples[-1][1], q):
                return
            samples.append((float(stamp), np.array(q, dtype=np.float64)))
            while len(samples) > 2 and samples[1][0] < stamp - 1.0:
                samples.popleft()

    def sample_at(self, stamp: float) -> np.ndarray:
        """The trajectory at wall time ``stamp`` (rad).

        Raises:
            RuntimeError: no sample was added yet.
        """
        with self._lock:
            if not self._samples:
                raise RuntimeError("JointStreamer has no trajectory sample yet: add() one before start()")
            times = [t for t, _ in self._samples]
            i = bisect.bisect_right(times, stamp)
            self._past_end = i == len(times)
            if i == 0 or i == len(times):
                return self._samples[0 if i == 0 else -1][1].copy()
            (t0, q0), (t1, q1) = self._samples[i - 1], self._samples[i]
        return q0 + (q1 - q0) * ((stamp - t0) / max(t1 - t0, 1e-9))

    def start(self) -> None:
        """Starts the streaming thread (and shortens the interpreter's GIL switch interval until :meth:`stop`)."""
        self._switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(GIL_SWITCH_S)
        self._thread = threading.Thread(target=self._run, name="joint-streamer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stops the thread (the caller then holds the robot)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)
            sys.setswitchinterval(self._switch_interval)
            self._thread = None

    def check(self) -> None:
        """Raises ConnectionError if streaming failed (the robot's server then holds it on its own)."""
        if self._error is not None:
            raise ConnectionError(f"streaming joint targets to {self.robot!r} failed: "
                                  f"{type(self._error).__name__}: {self._error}") from self._error

    def tracking_rms(self) -> float:
        """RMS over the commands of the robot's joints vs the target sent (rad); NaN before any."""
        return float(np.sqrt(np.mean(np.square(self._tracking)))) if self._tracking else float("nan")

    @property
    def last_tracking_error(self) -> float:
        """The latest command's RMS joint error (rad); 0 before any."""
        return self._tracking[-1] if self._tracking else 0.0

    def _run(self) -> None:
        next_time = time.monotonic()
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                q = self.sample_at(now + self.lead_s)
                self.robot.send_action({JOINT_POS: q}, sent_at=now)
                self.n_sent += 1
                self.n_starved += self._past_end
                self._tracking.append(float(np.sqrt(np.mean(np.square(measured_joints(self.robot) - q)))))
                next_time += self.period
                delay = next_time - time.monotonic()
                if delay > 0:
                    self._stop.wait(delay)
                else:
                    next_time = time.monotonic()
        except BaseException as exc:
            self._error = exc
            self._stop.set()


def measured_joints(robot: Robot) -> np.ndarray:
    """The robot's latest joint positions (rad): the state its last command returned, when it keeps one."""
    state = getattr(robot, "last_state", None)
    return np.array(state.positions if state is not None else robot.get_joint_state()[JOINT_POS])


def check_start(measured: np.ndarray, initial: np.ndarray, tolerance: float, seed: int, key: str) -> None:
    """Refuses to start when the robot is farther than ``tolerance`` (rad, config key ``key``) from the twin's initial
    joints for ``seed``.

    Raises:
        ValueError: naming the gap, the seed and the key.
    """
    gap = float(np.abs(np.asarray(measured) - np.asarray(initial)).max())
    if gap > tolerance:
        raise ValueError(f"the robot starts {gap:.3f} rad from the twin's initial joints (seed {seed}); {key} is "
                         f"{tolerance}: start reality from the same seed (the twin's block starts where the seed puts it)")


def episode_metrics(env: Any, steps: int, coverage_twin: float, peak_coverage_twin: float, sync: BlockSyncMeter,
                    streamer: JointStreamer, n_measurements: int, clock: TwinClock) -> dict[str, float]:
    """An episode's figures: ``steps``; the twin's final ``coverage_twin`` and ``success_twin`` (its coverage reached
    the success threshold, ``peak_coverage_twin``); the truth's final ``coverage_real``, its best ``peak_coverage_real``
    over every reading, its best ``judged_coverage_real`` at the instants the twin judges success
    (``sync.judged_coverage``) and ``success_real`` (that best reached the threshold: PushT's criterion at the twin's
    control steps, as the twin's offline episodes, which end at the first step that covers the goal);
    ``sync_rms_mm``/``sync_rms_deg`` (NaN without truth), ``tracking_rms_rad``, ``stream_hz`` (per wall second),
    ``starved_fraction`` (commands for which the twin had not computed the trajectory yet) and ``correction_hz`` (per
    second of the world's time)."""
    threshold = env.config.success_threshold
    truth = sync.truth
    real = float(env.coverage(truth.data)) if truth is not None else float("nan")
    judged = sync.judged_coverage()
    judged_real = float(judged.max()) if len(judged) else float("nan")
    sync_mm, sync_deg = sync.rms()
    elapsed = clock.elapsed()
    return {
        "steps": float(steps),
        "coverage_twin": float(coverage_twin),
        "success_twin": float(peak_coverage_twin >= threshold),
        "coverage_real": real,
        "peak_coverage_real": sync.peak_coverage,
        "judged_coverage_real": judged_real,
        "success_real": float(judged_real >= threshold) if np.isfinite(judged_real) else float("nan"),
        "sync_rms_mm": sync_mm,
        "sync_rms_deg": sync_deg,
        "tracking_rms_rad": streamer.tracking_rms(),
        "stream_hz": streamer.n_sent / elapsed,
        "starved_fraction": streamer.n_starved / max(streamer.n_sent, 1),
        "correction_hz": n_measurements / (elapsed * clock.time_scale),
    }
