"""BlockSyncMeter: truth compared with the twin's pose at its capture time, and the truth's best goal coverage."""

from __future__ import annotations

import numpy as np
import pytest

from real.modes.block_sync import BlockSyncMeter
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


def test_truth_between_two_recorded_poses_is_compared_with_the_pose_interpolated_to_its_stamp():
    meter = BlockSyncMeter(history_s=1.0, max_gap_s=0.02)
    meter.record(0.00, np.array([0.00, 0.0, np.pi - 0.01]))
    meter.record(0.01, np.array([0.01, 0.0, -np.pi + 0.01]))  # 1 cm and 0.02 rad (across the wrap) per 10 ms
    meter.compare(SensorReading(np.array([0.003, 0.0, np.pi - 0.004]), timestamp=0.003))
    np.testing.assert_allclose(meter.errors, [[0.0, 0.0]], atol=1e-9)
    meter.compare(SensorReading(np.array([0.008, 0.0, -np.pi + 0.006]), timestamp=0.008))
    np.testing.assert_allclose(meter.errors[-1], [0.0, 0.0], atol=1e-9)


def test_peak_coverage_is_the_best_truth_reading_not_the_last():
    shape = TShape(centers=np.array([[0.0, 0.0], [0.0, -0.06]]), half_sizes=np.array([[0.06, 0.015], [0.015, 0.045]]))
    goal = np.array([0.0, 0.0, 0.0])
    meter = BlockSyncMeter(coverage=lambda pose: shape.coverage(pose, goal))
    assert np.isnan(meter.peak_coverage)
    for t, x in enumerate([0.05, 0.001, 0.03]):  # far, on the goal, off again
        meter.compare(SensorReading(np.array([x, 0.0, 0.0]), timestamp=float(t)))
    assert meter.peak_coverage == pytest.approx(shape.coverage(np.array([0.001, 0.0, 0.0]), goal))
    assert meter.peak_coverage > 0.95 > shape.coverage(meter.truth.data, goal)


def test_success_is_judged_on_the_truth_nearest_each_judged_instant():
    shape = TShape(centers=np.array([[0.0, 0.0], [0.0, -0.06]]), half_sizes=np.array([[0.06, 0.015], [0.015, 0.045]]))
    goal = np.array([0.0, 0.0, 0.0])
    meter = BlockSyncMeter(coverage=lambda pose: shape.coverage(pose, goal), max_judge_gap_s=0.1)
    assert len(meter.judged_coverage()) == 0
    # truth at 45 Hz passes over the goal between two control steps (0.1 s apart) and leaves again
    xs = [0.03, 0.02, 0.01, 0.001, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06]
    for i, x in enumerate(xs):
        meter.compare(SensorReading(np.array([x, 0.0, 0.0]), timestamp=i / 45))
    for stamp in (0.0, 0.09, 0.2, 0.5):  # the last has no reading within 0.1 s
        meter.judge_at(stamp)
    expected = [shape.coverage(np.array([xs[j], 0.0, 0.0]), goal) for j in (0, 4, 9)]  # nearest readings
    np.testing.assert_allclose(meter.judged_coverage(), expected)
    assert meter.peak_coverage > 0.95 > meter.judged_coverage().max()


def test_a_non_positive_judge_gap_is_refused():
    with pytest.raises(ValueError, match="max_judge_gap_s"):
        BlockSyncMeter(max_judge_gap_s=0.0)
