"""scripts/eval_sim2real.py as a user runs it: a checkpoint evaluated offline in the twin, deployed through the twin
into the emulated reality (its own process) and on raw observations; the results file resumes and refuses a rerun
with other settings, naming them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sim.lockstep import SyntheticReality, lockstep_episode
from tests.conftest import REPO_ROOT


def _eval_sim2real(*overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "GOMP_SPINCOUNT": "2000"}
    return subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "eval_sim2real.py"), "logger.mode=disabled",
                           *overrides], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_one_checkpoint_measured_in_twin_reality_and_raw_then_resumed(tiny_checkpoint: Path, tmp_path: Path):
    # an 8-step untrained deployment never moves the block: the calibration identifies from lock-step logs instead
    logs = tmp_path / "reality_logs"
    for seed in range(2):
        lockstep_episode(SyntheticReality(friction_scale=0.6, push_interval=(1.0, 2.0)), seed, 100,
                         logs / f"episode_{seed}.npz")
    out = tmp_path / "run"
    args = (f"checkpoints=[{tiny_checkpoint}]", "n_episodes=1", "twin_episodes=3", "deploy.max_steps=8",
            "raw_baseline=last", f"calibration.run_dir={logs}", f"hydra.run.dir={out}")
    proc = _eval_sim2real(*args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    stored = json.loads((out / "sim2real.json").read_text())
    assert stored["settings"]["twin_episodes"] == 3 and stored["settings"]["n_episodes"] == 1
    [row] = stored["rows"]
    assert row["checkpoint"] == str(tiny_checkpoint) and row["step"] == int(tiny_checkpoint.name)
    assert 0.0 <= row["twin_success"] <= 1.0 and 0.0 < row["twin_coverage"] <= 1.0
    for column in ("real", "raw"):
        [episode] = row["episodes"][column]
        assert episode["steps"] == 8 and 0.0 <= episode["peak_coverage_real"] <= 1.0
        assert row[f"{column}_success"] == episode["success_real"]
    assert row["sync_rms_mm"] < 50.0  # the twin's block was corrected from the depth cameras
    # the deployment through the twin logged its episode; the calibrated column ran in the identified physics
    assert (out / "episodes" / tiny_checkpoint.name / "episode_0.npz").is_file()
    assert stored["calibration"]["logs"] == [str(logs / f"episode_{i}.npz") for i in range(2)]
    assert 0.0 <= row["calibrated_success"] <= 1.0 and (out / "identified_env.yaml").is_file()
    figures = dict(line.split(": ", 1) for line in proc.stdout.splitlines() if ": " in line)
    assert float(figures["n_checkpoints"]) == 1.0
    assert figures["pearson_r"] == "nan" and figures["pearson_r_calibrated"] == "nan"  # one checkpoint
    assert float(figures["calibrated_mae"]) == pytest.approx(abs(row["calibrated_success"] - row["real_success"]),
                                                             abs=1e-4)
    assert float(figures["uncalibrated_mae"]) == pytest.approx(abs(row["twin_success"] - row["real_success"]),
                                                               abs=1e-4)
    assert float(figures["offline_speedup"]) > 1.0  # a deployed episode (process, half speed) vs an offline one
    assert "|calib-real|" in proc.stdout

    again = _eval_sim2real(*args)
    assert again.returncode == 0 and "already measured" in again.stdout, again.stderr[-3000:]
    assert "identified from" not in again.stdout  # the stored identification is reused
    assert json.loads((out / "sim2real.json").read_text()) == stored

    other = _eval_sim2real(*args, "twin_episodes=5")
    assert other.returncode != 0 and "other settings (twin_episodes)" in other.stderr, other.stderr[-3000:]
