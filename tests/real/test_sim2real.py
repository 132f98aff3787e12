"""The pieces of the Real-is-Sim evaluation: checkpoint listing, Pearson r against SciPy, the resumable results file."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from scipy import stats

from policies.checkpoint import CheckpointError
from real.modes.deploy import DeployConfig
from real.sim2real.calibration import CalibrationConfig, mean_absolute_error, offline_speedup
from real.sim2real.evaluation import (
    CheckpointResult,
    ResultsFile,
    Sim2RealRunConfig,
    list_checkpoints,
    pearson_r,
    raw_checkpoints,
    report,
    summarize_deployments,
)


def test_pearson_r_matches_scipy_and_is_nan_for_a_constant_column():
    rng = np.random.default_rng(0)
    x = rng.random(9)
    y = 0.8 * x + 0.1 * rng.random(9)
    assert pearson_r(x, y) == pytest.approx(stats.pearsonr(x, y).statistic, abs=1e-12)
    assert np.isnan(pearson_r(x, np.full(9, 0.5)))
    with pytest.raises(ValueError, match="equal length"):
        pearson_r(x, y[:-1])


def test_checkpoints_are_listed_by_step_and_a_run_without_them_is_named(tmp_path):
    for step in ("010000", "002000", "last"):
        (tmp_path / "checkpoints" / step).mkdir(parents=True)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["002000", "010000"]
    with pytest.raises(CheckpointError, match="no checkpoints/ folder"):
        list_checkpoints(tmp_path / "missing")
    assert raw_checkpoints(list_checkpoints(tmp_path), "last") == {tmp_path / "checkpoints" / "010000"}
    with pytest.raises(ValueError, match="raw_baseline"):
        raw_checkpoints([], "some")


def _row(step: int, twin: float, real: float) -> CheckpointResult:
    return CheckpointResult(checkpoint=f"ckpt/{step:06d}", step=step, twin_success=twin, twin_coverage=twin,
                            real_success=real, real_coverage=real)


def test_results_file_resumes_and_refuses_other_settings(tmp_path):
    path = tmp_path / "sim2real.json"
    results = ResultsFile(path, {"n_episodes": 10})
    results.add(_row(1000, 0.1, 0.0))
    results.add(_row(2000, 0.6, 0.5))
    stored = json.loads(path.read_text())
    assert stored["rows"][0]["raw_success"] is None  # NaN is written as null
    again = ResultsFile(path, {"n_episodes": 10})
    assert again.done("ckpt/002000") and not again.done("ckpt/003000")
    again.add(_row(3000, 0.9, 0.8))
    table, figures = report(again)
    assert figures["n_checkpoints"] == 3 and figures["pearson_r"] == pytest.approx(
        stats.pearsonr([0.1, 0.6, 0.9], [0.0, 0.5, 0.8]).statistic)
    assert "3000" in table
    with pytest.raises(ValueError, match="n_episodes"):
        ResultsFile(path, {"n_episodes": 20})


def test_run_config_needs_checkpoints():
    with pytest.raises(ValueError, match="run_dir"):
        Sim2RealRunConfig()
    assert Sim2RealRunConfig(checkpoints=["a/001000"]).checkpoint_dirs()[0].name == "001000"
    assert Sim2RealRunConfig(checkpoints=["a/001000"], n_episodes=4).twin_episodes == 4  # unset: as many as deployed
    with pytest.raises(ValueError, match="twin_episodes"):
        Sim2RealRunConfig(checkpoints=["a/001000"], twin_episodes=0)


def test_deployments_average_success_and_take_the_median_sync():
    episodes = [{"success_real": s, "coverage_real": c, "sync_rms_mm": m, "sync_rms_deg": 1.0}
                for s, c, m in ((1.0, 0.97, 3.0), (0.0, 0.5, 4.0), (0.0, float("nan"), 6e8))]  # a block off the table
    summary = summarize_deployments(episodes)
    assert summary["success"] == pytest.approx(1 / 3) and summary["coverage"] == pytest.approx(0.735)
    assert summary["sync_rms_mm"] == 4.0


def test_mean_absolute_error_and_speedup_on_hand_made_numbers():
    assert mean_absolute_error([0.7, 0.9, 0.5], [0.25, 0.62, 0.5]) == pytest.approx((0.45 + 0.28 + 0.0) / 3)
    assert mean_absolute_error([0.7, float("nan")], [0.5, 0.1]) == pytest.approx(0.2)  # unmeasured pairs skipped
    assert np.isnan(mean_absolute_error([float("nan")], [0.5]))
    with pytest.raises(ValueError, match="equal length"):
        mean_absolute_error([0.1], [0.1, 0.2])
    assert offline_speedup([60.0, 64.0, float("nan")], [0.5, 0.74]) == pytest.approx(62.0 / 0.62)
    assert np.isnan(offline_speedup([60.0], [float("nan")]))


def test_report_prints_the_calibrated_column_its_errors_and_figures(tmp_path):
    results = ResultsFile(tmp_path / "sim2real.json", {"n_episodes": 15})
    for step, twin, calib, real in ((1000, 0.7, 0.3, 0.25), (2000, 0.9, 0.7, 0.62), (3000, 0.95, 0.85, 0.8)):
        results.add(dataclasses.replace(_row(step, twin, real), calibrated_success=calib, real_s_per_episode=60.0,
                                        calibrated_s_per_episode=0.5))
    results.set_calibration({"identification": {"friction_scale": 0.6, "block_mass": 0.1, "push_rate_hz": 0.7,
                                                "push_force_n": 1.4}})
    table, figures = report(results)
    assert figures["uncalibrated_mae"] == pytest.approx((0.45 + 0.28 + 0.15) / 3)
    assert figures["calibrated_mae"] == pytest.approx((0.05 + 0.08 + 0.05) / 3)
    assert figures["pearson_r_calibrated"] == pytest.approx(
        stats.pearsonr([0.3, 0.7, 0.85], [0.25, 0.62, 0.8]).statistic)
    assert figures["offline_speedup"] == pytest.approx(120.0) and figures["identified_friction_scale"] == 0.6
    header, first = table.splitlines()[:2]
    assert "calib" in header and "|calib-real|" in header
    assert first.split()[:4] == ["1000", "0.70", "0.30", "0.25"] and first.split()[5:7] == ["0.45", "0.05"]
    # the identification and the calibrated values survive a reload; a row is updated in place
    again = ResultsFile(tmp_path / "sim2real.json", {"n_episodes": 15})
    assert again.calibration["identification"]["push_rate_hz"] == 0.7
    again.update("ckpt/001000", {"calibrated_success": float("nan")})
    assert json.loads((tmp_path / "sim2real.json").read_text())["rows"][0]["calibrated_success"] is None
    with pytest.raises(KeyError, match="009000"):
        again.update("ckpt/009000", {"calibrated_success": 0.1})


def test_calibration_settings_are_checked():
    with pytest.raises(ValueError, match="calibration.max_episodes"):
        CalibrationConfig(max_episodes=11)
    with pytest.raises(ValueError, match="reference_push_force"):
        CalibrationConfig(reference_push_force=0.0)
    with pytest.raises(ValueError, match="episode_log"):
        Sim2RealRunConfig(checkpoints=["a/001000"], deploy=DeployConfig(episode_log=False))
    Sim2RealRunConfig(checkpoints=["a/001000"], deploy=DeployConfig(episode_log=False),
                      calibration=CalibrationConfig(enabled=False))
