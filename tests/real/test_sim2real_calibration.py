"""The calibrated column of the Real-is-Sim evaluation, wired end to end in one process: the deploy step (here a
lock-step synthetic reality in place of the emulated robot, so the logs hold free slides and pushes of known
physics) writes each checkpoint's episode logs, reality's physics are identified from the first checkpoint's logs,
and every checkpoint is evaluated offline again in its env randomised around them; a resumed run identifies nothing
again."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from omegaconf import OmegaConf

import real.modes.deploy_run as deploy_run
import real.sim2real.calibration as calibration
from real.modes.deploy import DeployConfig
from real.sim2real.calibration import IDENTIFIED_ENV, CalibrationConfig
from real.sim2real.evaluation import RESULTS_FILE, Sim2RealRunConfig, episodes_dir, evaluate_sim2real, report
from sim.episode_log import EpisodeLogError
from sim.lockstep import SyntheticReality, lockstep_episode
from tests.scripts import conftest as scripts_conftest

tiny_checkpoint = scripts_conftest.tiny_checkpoint  # the untrained policy checkpoint of the script tests
TRUTH = SyntheticReality(friction_scale=0.6, block_mass_scale=1.2, push_force=1.5, push_interval=(1.0, 2.0))
LOG_STEPS = 100  # control steps of a lock-step episode (10 s)


@pytest.fixture()
def fake_reality(monkeypatch):
    """``deploy_episodes`` replaced by lock-step episodes of ``TRUTH``, logged where it is asked to; records calls."""
    calls, silent = [], set()  # silent: checkpoint names whose deployment leaves no logs (a policy that never moved)

    def deploy_episodes(run, env_kwargs, policy, tracker=None, stop_requested=None, log_dir=None):
        calls.append((run.policy_path, run.deploy.observation, log_dir))
        episodes = []
        for i in range(run.n_episodes):
            if log_dir is not None and Path(run.policy_path).name not in silent:
                lockstep_episode(TRUTH, run.deploy.seed + i, LOG_STEPS, Path(log_dir) / f"episode_{i}.npz")
            episodes.append({"success_real": float(i % 2), "coverage_real": 0.5, "sync_rms_mm": 2.0,
                             "sync_rms_deg": 1.0})
        return episodes

    monkeypatch.setattr(deploy_run, "deploy_episodes", deploy_episodes)
    return calls, silent


def _checkpoints(tiny_checkpoint: Path, root: Path, steps: tuple[int, ...]) -> list[str]:
    paths = []
    for step in steps:
        path = root / "checkpoints" / f"{step:06d}"
        if not path.exists():
            shutil.copytree(tiny_checkpoint, path)
        paths.append(str(path))
    return paths


def _run(checkpoints: list[str], output_dir: Path) -> Sim2RealRunConfig:
    return Sim2RealRunConfig(checkpoints=checkpoints, n_episodes=3, twin_episodes=2, n_envs=1, raw_baseline="none",
                             deploy=DeployConfig(max_steps=8), calibration=CalibrationConfig(max_episodes=2),
                             output_dir=str(output_dir), robot="emulated")


@pytest.mark.slow
def test_calibrated_column_from_the_deployed_logs_and_resume_without_identifying(tiny_checkpoint, tmp_path,
                                                                                  fake_reality, monkeypatch):
    fake_reality, _ = fake_reality
    first = _checkpoints(tiny_checkpoint, tmp_path, (1000, 2000))
    out = tmp_path / "sim2real"
    lines = []
    results = evaluate_sim2real(_run(first, out), "cpu", echo=lines.append)
    # the deploy step logged each checkpoint's episodes into its own folder
    assert [(Path(p).name, obs, Path(d)) for p, obs, d in fake_reality] == [
        (Path(c).name, "twin", episodes_dir(out, Path(c))) for c in first]
    assert sorted(p.name for p in episodes_dir(out, Path(first[1])).iterdir()) == [f"episode_{i}.npz" for i in range(3)]
    # identified once, from max_episodes of the first checkpoint's logs, close to the reality's truth
    record = results.calibration
    assert record["logs"] == [str(episodes_dir(out, Path(first[0])) / f"episode_{i}.npz") for i in range(2)]
    assert record["identification"]["friction_scale"] == pytest.approx(TRUTH.friction_scale, rel=0.2)
    assert record["identification"]["n_pushes"] > 0 and record["identification"]["n_episodes"] == 2
    assert sum(line.startswith("identified from 2 episode logs") for line in lines) == 1
    dr = OmegaConf.load(out / IDENTIFIED_ENV).kwargs.randomization
    assert dr.friction_scale_mean == pytest.approx(record["identification"]["friction_scale"])
    stored = json.loads((out / RESULTS_FILE).read_text())
    assert stored["calibration"] == record
    for row in stored["rows"]:
        assert 0.0 <= row["calibrated_success"] <= 1.0 and 0.0 < row["calibrated_coverage"] <= 1.0
        assert row["calibrated_s_per_episode"] > 0 and row["real_s_per_episode"] > 0
        assert row["real_success"] == pytest.approx(1 / 3)
    _, figures = report(results)
    assert {"uncalibrated_mae", "calibrated_mae", "pearson_r", "pearson_r_calibrated", "offline_speedup"} <= set(figures)
    assert figures["identified_friction_scale"] == record["identification"]["friction_scale"]

    # resumed with a third checkpoint: only it is deployed and calibrated, with the stored identification
    def never(*_args, **_kwargs):
        raise AssertionError("identified again")

    monkeypatch.setattr(calibration, "identify_logs", never)
    fake_reality.clear()
    lines.clear()
    more = _checkpoints(tiny_checkpoint, tmp_path, (1000, 2000, 3000))
    results = evaluate_sim2real(_run(more, out), "cpu", echo=lines.append)
    assert [Path(p).name for p, *_ in fake_reality] == ["003000"]
    assert sum("already measured" in line for line in lines) == 2
    assert results.calibration == record and results.row(more[2])["calibrated_success"] is not None


def test_checkpoints_deployed_before_logs_identify_are_calibrated_at_the_end(tiny_checkpoint, tmp_path, fake_reality):
    _, silent = fake_reality
    silent.add("001000")
    checkpoints = _checkpoints(tiny_checkpoint, tmp_path, (1000, 2000))
    out = tmp_path / "sim2real"
    lines = []
    results = evaluate_sim2real(_run(checkpoints, out), "cpu", echo=lines.append)
    assert f"{checkpoints[0]}: not calibrated yet (no deployed logs with free slides of the block so far)" in lines
    assert results.calibration["source"] == str(episodes_dir(out, Path(checkpoints[1])))
    assert [line.split(":")[0] for line in lines if "calibrated 0" in line or "calibrated 1" in line] == [
        checkpoints[1], checkpoints[0]]
    assert all(row["calibrated_success"] is not None for row in results.rows)


def test_no_identifiable_logs_fail_after_measuring_naming_the_fix(tiny_checkpoint, tmp_path, fake_reality):
    _, silent = fake_reality
    silent.add("001000")
    checkpoints = _checkpoints(tiny_checkpoint, tmp_path, (1000,))
    with pytest.raises(EpisodeLogError, match="set calibration.run_dir.*no episode logs"):
        evaluate_sim2real(_run(checkpoints, tmp_path / "sim2real"), "cpu", echo=lambda _: None)
    stored = json.loads((tmp_path / "sim2real" / RESULTS_FILE).read_text())
    assert len(stored["rows"]) == 1 and "calibration" not in stored  # the measured row is kept for a resume
