"""Unmodelled pushes on the block: a random schedule of short planar forces.

The emulated reality pushes its block with one (the pushes the twin does not know about); the twin's offline
evaluation and demonstration collection can push theirs with another (a disturbance model, configured in
``DomainRandomizationConfig``) so that policies learn to recover and offline success reflects a disturbed world.
"""

from __future__ import annotations

import numpy as np


class PushSchedule:
    """Every ``interval`` s (drawn uniformly from the range) a force of ``force`` N in a uniformly random planar
    direction acts for ``duration`` s. Deterministic in ``rng``; time in s from the episode start.

    Raises:
        ValueError: a negative force or duration, or an interval range that is not ``0 <= low <= high``.
    """

    def __init__(self, rng: np.random.Generator, interval: tuple[float, float], force: float, duration: float) -> None:
        low, high = (float(v) for v in interval)
        if not 0 <= low <= high or force < 0 or duration < 0:
            raise ValueError(f"push schedule needs 0 <= interval low <= high, force >= 0 and duration >= 0; got "
                             f"interval {interval!r}, force {force}, duration {duration}")
        self._rng, self._interval, self._force, self._duration = rng, (low, high), float(force), float(duration)
        self._next = rng.uniform(low, high)
        self._end = -1.0
        self._current = np.zeros(2)
        self.n_pushes = 0

    @property
    def force(self) -> float:
        """The size of every push of this schedule (N)."""
        return self._force

    def force_at(self, t: float) -> np.ndarray:
        """The planar force (N, x and y) at time ``t``; call with non-decreasing ``t``."""
        if t >= self._next:
            angle = self._rng.uniform(-np.pi, np.pi)
            self._current = self._force * np.array([np.cos(angle), np.sin(angle)])
            self._end, self._next = t + self._duration, t + self._rng.uniform(*self._interval)
            self.n_pushes += 1
        return self._current if t < self._end else np.zeros(2)
