"""BlockSyncMeter: truth compared with the twin's pose at its capture time, and the truth's best goal coverage."""

from __future__ import annotations

import numpy as np
import pytest

from real.block_sync import BlockSyncMeter
from real.sensors import SensorReading
from sim.pusht_geometry import TShape


def test_truth_is_compared_with_the_pose_recorded_at_its_capture_time():
    meter = BlockSyncMeter(history_s=1.0, max_gap_s=0.02)
    for i in range(10):  # the twin's block moves 1 cm per 10 ms along x
        meter.record(i * 0.01, np.array([0.01 * i, 0.0, 0.0]))
    meter.compare(SensorReading(np.array([0.052, 0.0, 0.1]), timestamp=0.05))
    meter.compare(SensorReading(np.array([0.0, 0.0, 0.0]), timestamp=0.05))  # the same reading again: ignored
    meter.compare(SensorReading(np.array([0.0, 0.0, 0.0]), timestamp=0.5))  # no pose near it yet: pending
    np.testing.assert_allclose(meter.errors, [[0.002, 0.1]], atol=1e-12)
    meter.record(0.5, np.array([0.0, 0.003, 0.0]))
    np.testing.assert_allclose(meter.errors[-1], [0.003, 0.0], atol=1e-12)


def test_peak_coverage_is_the_best_truth_reading_not_the_last():
    shape = TShape(centers=np.array([[0.0, 0.0], [0.0, -0.06]]), half_sizes=np.array([[0.06, 0.015], [0.015, 0.045]]))
    goal = np.array([0.0, 0.0, 0.0])
    meter = BlockSyncMeter(coverage=lambda pose: shape.coverage(pose, goal))
    assert np.isnan(meter.peak_coverage)
    for t, x in enumerate([0.05, 0.001, 0.03]):  # far, on the goal, off again
        meter.compare(SensorReading(np.array([x, 0.0, 0.0]), timestamp=float(t)))
    assert meter.peak_coverage == pytest.approx(shape.coverage(np.array([0.001, 0.0, 0.0]), goal))
    assert meter.peak_coverage > 0.95 > shape.coverage(meter.truth.data, goal)
