"""Sync error of a twin's block against an emulator's ground truth, compared at the truth's capture instant.

The twin's block pose is recorded against the wall clock as the twin advances; every new ``truth.block_pose``
reading (tests and emulators only: the twin never reads it) is compared with the twin's pose at its capture stamp,
interpolated between the recorded poses on either side (the nearest one at the ends). Used by
``real.modes.deploy.Deployer`` and ``real.modes.collect.Collector``; both stamp each pose with the wall time the twin's
state stands for, by their pacing (not the time it was computed).

The meter also keeps the goal coverage of every truth reading, so an episode is judged a real success the way the
twin's offline episodes are: at the instants the twin judges its own success (its control steps, marked with
:meth:`BlockSyncMeter.judge_at`), the real block covered the goal at one of them (offline episodes end at the first
such instant). The best coverage of any reading is kept too (:attr:`BlockSyncMeter.peak_coverage`): read at the
camera rate, it also counts passes over the goal between control steps, which the twin's judgement never sees.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable

import numpy as np

from real.sensors import SensorReading
from sim.pusht_geometry import wrap_angle


class BlockSyncMeter:
    """Records the twin's block poses and compares them with truth readings.

    Args:
        history_s: seconds of recorded twin poses kept (older ones are dropped when truth arrives).
        max_gap_s: a truth reading is compared only with a twin pose recorded within this many seconds of its stamp.
        coverage: ``coverage(pose)`` -> the goal coverage (0-1) of a true block pose (:attr:`peak_coverage`,
            :meth:`judged_coverage`).
        max_judge_gap_s: a judged instant takes the coverage of the truth reading nearest it, if within this many s.

    Raises:
        ValueError: non-positive ``history_s`` or ``max_gap_s``.
    """

    def __init__(self, history_s: float = 2.0, max_gap_s: float = 0.02,
                 coverage: Callable[[np.ndarray], float] | None = None, max_judge_gap_s: float = 0.1) -> None:
        if min(history_s, max_gap_s, max_judge_gap_s) <= 0:
            raise ValueError(f"BlockSyncMeter needs history_s, max_gap_s and max_judge_gap_s > 0, got {history_s}, "
                             f"{max_gap_s} and {max_judge_gap_s}")
        self.history_s, self.max_gap_s, self.max_judge_gap_s = history_s, max_gap_s, max_judge_gap_s
        self._times: list[float] = []
        self._poses: list[np.ndarray] = []
        self._errors: list[tuple[float, float]] = []
        self._pending: list[SensorReading] = []  # truth newer than the latest recorded pose, compared once it is
        self._last_stamp = -np.inf
        self.truth: SensorReading | None = None  # the newest truth reading seen
        self._coverage = coverage
        self.peak_coverage = float("nan")  # the best goal coverage of any truth reading (NaN: none, or no coverage)
        self._coverage_stamps: list[float] = []  # every truth reading's capture stamp and goal coverage
        self._coverages: list[float] = []
        self._judged: list[float] = []  # wall stamps at which success is judged

    def record(self, stamp: float, pose: np.ndarray) -> None:
        """The twin's block pose ``(x, y, theta)`` (m, rad) at wall-clock ``stamp`` (s, ``time.monotonic()``)."""
        self._times.append(float(stamp))
        self._poses.append(np.asarray(pose, dtype=float).copy())
        while self._pending and self._pending[0].timestamp <= stamp:
            self._compare(self._pending.pop(0))

    def compare(self, truth: SensorReading | None) -> None:
        """Compares a ``truth.block_pose`` reading with the twin's pose at its capture time (interpolated, once a pose
        that late is recorded); ignores ``None``, a reading already seen, and one with no recorded pose within ``max_gap_s``."""
        if truth is None or truth.timestamp <= self._last_stamp:
            return
        self._last_stamp, self.truth = truth.timestamp, truth
        if self._coverage is not None:
            coverage = float(self._coverage(np.asarray(truth.data, dtype=float)))
            self.peak_coverage = float(np.fmax(self.peak_coverage, coverage))
            self._coverage_stamps.append(truth.timestamp)
            self._coverages.append(coverage)
        if not self._times or truth.timestamp > self._times[-1]:
            self._pending.append(truth)
            return
        self._compare(truth)

    def judge_at(self, stamp: float) -> None:
        """Marks wall-clock ``stamp`` (s) as an instant at which the episode's success is judged (a twin control step)."""
        self._judged.append(float(stamp))

    def judged_coverage(self) -> np.ndarray:
        """The truth's goal coverage at every judged instant (the reading nearest it), for the instants with a reading
        within ``max_judge_gap_s``; empty without any."""
        stamps = np.asarray(self._coverage_stamps)
        out = []
        for stamp in self._judged:
            i = int(np.searchsorted(stamps, stamp))
            near = [j for j in (i - 1, i) if 0 <= j < len(stamps)]
            if near:
                j = min(near, key=lambda k: abs(stamps[k] - stamp))
                if abs(stamps[j] - stamp) <= self.max_judge_gap_s:
                    out.append(self._coverages[j])
        return np.array(out, dtype=float)

    def _compare(self, truth: SensorReading) -> None:
        times = self._times
        cut = bisect.bisect_left(times, times[-1] - self.history_s) if times else 0
        del times[:cut], self._poses[:cut]
        stamp = truth.timestamp
        i = bisect.bisect_left(times, stamp)
        if not times or i >= len(times):
            return
        if i > 0 and stamp - times[i - 1] < times[i] - stamp:
            i -= 1
        if abs(times[i] - stamp) > self.max_gap_s:
            return
        pose = self._poses[i]
        j = i + 1 if times[i] < stamp else i - 1  # the recorded pose on the stamp's other side, if any
        if 0 <= j < len(times) and times[j] != times[i] and abs(times[j] - stamp) <= self.max_gap_s:
            pose = _interpolated(times[i], self._poses[i], times[j], self._poses[j], stamp)
        error = pose - np.asarray(truth.data, dtype=float)
        self._errors.append((float(np.linalg.norm(error[:2])), float(abs(wrap_angle(error[2])))))

    @property
    def errors(self) -> np.ndarray:
        """(N, 2): distance (m) and absolute angle (rad) between the twin's block and the truth, per comparison."""
        return np.array(self._errors, dtype=float).reshape(-1, 2)

    def rms(self) -> tuple[float, float]:
        """RMS distance (mm) and angle (deg) over all comparisons; NaN without any."""
        errors = self.errors
        if not len(errors):
            return float("nan"), float("nan")
        return float(1e3 * np.sqrt(np.mean(errors[:, 0] ** 2))), float(np.degrees(np.sqrt(np.mean(errors[:, 1] ** 2))))


def _interpolated(t0: float, pose0: np.ndarray, t1: float, pose1: np.ndarray, t: float) -> np.ndarray:
    """The planar pose at ``t`` on the line between ``pose0`` at ``t0`` and ``pose1`` at ``t1`` (angle the short way)."""
    w = (t - t0) / (t1 - t0)
    step = pose1 - pose0
    step[2] = wrap_angle(step[2])
    return pose0 + w * step
