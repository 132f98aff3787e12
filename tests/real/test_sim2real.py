"""The pieces of the Real-is-Sim evaluation: checkpoint listing, Pearson r against SciPy, the resumable results file."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats

from policies.checkpoint import CheckpointError
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
