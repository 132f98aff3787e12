"""The bridge benchmark runs end to end and reports every figure the bench script prints."""

from __future__ import annotations

import math

from real.bridge.bench import run_bridge_benchmarks, trajectory


def test_bridge_benchmark_reports_every_figure():
    lines = []
    figures = run_bridge_benchmarks(rate_hz=200.0, duration_s=0.3, trials=1, realtime_priority=0, log=lines.append)
    expected = {"p50_latency_ms", "p99_latency_ms", "max_latency_ms", "achieved_rate_hz", "n_commands", "late_fraction",
                "watchdog_timeout_ms", "realtime", "hold_ms_after_kill", "stop_ms_after_kill", "hold_ms_after_stall",
                "stop_ms_after_stall"}
    assert set(figures) == expected
    assert all(isinstance(v, float) and math.isfinite(v) for v in figures.values()), figures
    assert figures["n_commands"] > 10 and figures["realtime"] == 0.0 and figures["watchdog_timeout_ms"] == 25.0
    assert 0 < figures["p50_latency_ms"] <= figures["p99_latency_ms"] <= figures["max_latency_ms"]
    assert figures["hold_ms_after_kill"] <= figures["stop_ms_after_kill"]
    assert any(line.startswith("kill:") for line in lines) and any(line.startswith("stall:") for line in lines)


def test_benchmark_trajectory_starts_at_rest_and_stays_small():
    import numpy as np

    q0 = np.zeros(7)
    assert np.array_equal(trajectory(q0, 0.0), q0)
    samples = np.array([trajectory(q0, t) for t in np.linspace(0, 10, 1001)])
    assert samples.max() <= 0.1 + 1e-12 and samples.min() >= 0.0
