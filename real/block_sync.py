"""Sync error of a twin's block against an emulator's ground truth, compared at the truth's capture instant.

The twin's block pose is recorded against the wall clock as the twin advances; every new ``truth.block_pose``
reading (tests and emulators only: the twin never reads it) is compared with the recorded pose nearest its capture
stamp. Used by ``real.deployment.Deployer`` and ``real.collection.Collector``; both stamp each pose with the wall time the
twin's state stands for, by their pacing (not the time it was computed). The meter also keeps the best goal coverage
of any truth reading, so an episode is judged a real success the way the twin's offline episodes are (the block
covered the goal at some instant; they end at the first such instant).
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
        coverage: ``coverage(pose)`` -> the goal coverage (0-1) of a true block pose; kept as :attr:`peak_coverage`.

    Raises:
        ValueError: non-positive ``history_s`` or ``max_gap_s``.
    """

    def __init__(self, history_s: float = 2.0, max_gap_s: float = 0.02,
                 coverage: Callable[[np.ndarray], float] | None = None) -> None:
        if history_s <= 0 or max_gap_s <= 0:
            raise ValueError(f"BlockSyncMeter needs history_s > 0 and max_gap_s > 0, got {history_s}, {max_gap_s}")
        self.history_s, self.max_gap_s = history_s, max_gap_s
        self._times: list[float] = []
        self._poses: list[np.ndarray] = []
        self._errors: list[tuple[float, float]] = []
        self._pending: list[SensorReading] = []  # truth newer than the latest recorded pose, compared once it is
        self._last_stamp = -np.inf
        self.truth: SensorReading | None = None  # the newest truth reading seen
        self._coverage = coverage
        self.peak_coverage = float("nan")  # the best goal coverage of any truth reading (NaN: none, or no coverage)

    def record(self, stamp: float, pose: np.ndarray) -> None:
        """The twin's block pose ``(x, y, theta)`` (m, rad) at wall-clock ``stamp`` (s, ``time.monotonic()``)."""
        self._times.append(float(stamp))
        self._poses.append(np.asarray(pose, dtype=float).copy())
        while self._pending and self._pending[0].timestamp <= stamp:
            self._compare(self._pending.pop(0))

    def compare(self, truth: SensorReading | None) -> None:
        """Compares a ``truth.block_pose`` reading with the twin's pose at its capture time (once a pose that late is
        recorded); ignores ``None``, a reading already seen, and one with no recorded pose within ``max_gap_s``."""
        if truth is None or truth.timestamp <= self._last_stamp:
            return
        self._last_stamp, self.truth = truth.timestamp, truth
        if self._coverage is not None:
            self.peak_coverage = float(np.fmax(self.peak_coverage, self._coverage(np.asarray(truth.data, dtype=float))))
        if not self._times or truth.timestamp > self._times[-1]:
            self._pending.append(truth)
            return
        self._compare(truth)

    def _compare(self, truth: SensorReading) -> None:
        times = self._times
        cut = bisect.bisect_left(times, times[-1] - self.history_s) if times else 0
        del times[:cut], self._poses[:cut]
        i = bisect.bisect_left(times, truth.timestamp)
        if not times or i >= len(times):
            return
        if i > 0 and truth.timestamp - times[i - 1] < times[i] - truth.timestamp:
            i -= 1
        if abs(times[i] - truth.timestamp) > self.max_gap_s:
            return
        error = self._poses[i] - np.asarray(truth.data, dtype=float)
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
