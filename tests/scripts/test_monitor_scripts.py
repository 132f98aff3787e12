"""monitor=streaming as a user runs it: deploy.py into the emulated reality writes the monitor's record and prints its
agreement with reality's success; eval.py prints its progress VOC and success agreement beside the twin's truth; a
missing monitor.path fails at start naming the key."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from perception.streaming import EVENTS, save_streaming
from tests.conftest import REPO_ROOT
from tests.policies.stream_data import tiny_model


def _run(script: str, *overrides: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "GOMP_SPINCOUNT": "2000", "WANDB_SILENT": "true"}
    return subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / script), f"hydra.run.dir={tmp_path}",
                           *overrides], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)


def _figures(stdout: str) -> dict[str, float]:
    pairs = (line.split(": ", 1) for line in stdout.splitlines() if ": " in line)
    return {key: float(value) for key, value in pairs if key.replace("_", "").isalnum()
            and value.replace(".", "", 1).replace("-", "", 1).replace("nan", "0").isdigit()}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained tiny streaming model saved like scripts/train_streaming.py's."""
    return save_streaming(tiny_model(), tmp_path_factory.mktemp("streaming") / "model")


@pytest.mark.slow
def test_deploy_with_the_monitor_writes_its_record_and_prints_its_agreement(tiny_checkpoint, model_dir, tmp_path):
    proc = _run("deploy.py", f"policy_path={tiny_checkpoint}", "robot=emulated", "deploy.max_steps=5", "n_episodes=1",
                "logger.mode=disabled", "monitor=streaming", f"monitor.path={model_dir}", tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "episodes" / "episode_0.monitor.jsonl").read_text().splitlines()]
    assert 1 <= len(rows) <= 6  # the first frame and one per control step (a frame seen twice is skipped)
    assert set(rows[0]["events"]) == set(EVENTS) and 0 <= rows[-1]["success_prob"] <= 1
    figures = _figures(proc.stdout)
    assert figures["monitor_episodes"] == 1 and figures["monitor_success_agreement"] in (0.0, 1.0), proc.stdout
    assert (tmp_path / "episodes" / "episode_0.npz").is_file()  # the twin's log beside it, as before


@pytest.mark.slow
def test_eval_with_the_monitor_prints_its_progress_voc_and_success_agreement(tiny_checkpoint, model_dir, tmp_path):
    proc = _run("eval.py", f"policy_path={tiny_checkpoint}", "n_episodes=2", "n_envs=1", "n_videos=0",
                "monitor=streaming", f"monitor.path={model_dir}", tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures = _figures(proc.stdout)
    assert -1.0 <= figures["monitor_progress_voc"] <= 1.0, proc.stdout
    assert figures["monitor_success_agreement"] in (0.0, 0.5, 1.0), proc.stdout
    info = json.loads((tmp_path / "eval_info.json").read_text())
    assert all({"monitor_progress_voc", "monitor_success"} <= set(e["metrics"]) for e in info["episodes"])
    assert info["monitor_success_agreement"] == figures["monitor_success_agreement"]


@pytest.mark.parametrize("script", ["deploy.py", "eval.py", "collect.py"])
def test_a_missing_monitor_path_fails_at_start_naming_the_key(script, tmp_path):
    proc = _run(script, "policy_path=unused", "monitor=streaming", tmp_path=tmp_path) if script != "collect.py" else \
        _run(script, "monitor=streaming", tmp_path=tmp_path)
    assert proc.returncode != 0
    assert "monitor.path" in proc.stderr, proc.stderr[-3000:]


def test_a_monitor_path_without_a_model_is_named(tiny_checkpoint, tmp_path):
    proc = _run("eval.py", f"policy_path={tiny_checkpoint}", "n_episodes=1", "n_videos=0", "monitor=streaming",
                f"monitor.path={tmp_path / 'none'}", tmp_path=tmp_path)
    assert proc.returncode != 0
    assert "monitor.path" in proc.stderr and "no streaming model" in proc.stderr, proc.stderr[-3000:]
