"""The entry points as a user runs them: a tiny training run, then eval.py reproducing its figure; bad input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT


def _run(script: str, *overrides: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "0"}
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / script), *overrides],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{script} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def _figures(stdout: str) -> dict[str, str]:
    return dict(line.split(": ", 1) for line in stdout.splitlines() if ": " in line and not line.startswith(" "))


@pytest.mark.slow
def test_tiny_training_run_then_eval_reproduces_its_figures(tmp_path):
    run_dir = tmp_path / "run"
    _run(
        "train.py",
        f"hydra.run.dir={run_dir}",
        f"dataset.root={tmp_path / 'demos'}",
        "dataset.n_episodes=3",
        "optim.steps=60",
        "optim.batch_size=32",
        "policy.mlp_hidden_dim=64",
        "eval.n_episodes=2",
        "eval.every=30",
        "eval.n_episodes_during_training=1",
        "eval.n_videos=1",
        "save_every=30",
    )
    results = json.loads((run_dir / "results.json").read_text())
    assert 0.0 <= results["success_rate"] <= 1.0 and results["n_episodes"] == 2
    assert (run_dir / "checkpoints" / "000060" / "pretrained_model" / "model.safetensors").is_file()
    assert (run_dir / "eval" / "final" / "videos" / "episode_100000.mp4").stat().st_size > 0
    assert list((run_dir / "wandb").glob("offline-run-*/run-*.wandb")), "an offline W&B run is written"
    info = json.loads((tmp_path / "demos" / "meta" / "info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["total_episodes"] == 3

    proc = _run("eval.py", f"policy_path={run_dir}", "n_episodes=2", "n_videos=0", f"hydra.run.dir={tmp_path / 'eval'}")
    figures = _figures(proc.stdout)
    assert float(figures["success_rate"]) == pytest.approx(results["success_rate"])
    assert float(figures["mean_coverage"]) == pytest.approx(results["mean_coverage"], abs=1e-4)

    # pretrained_model/ copied alone elsewhere is the evaluated policy: the same episodes, step for step
    shipped = shutil.copytree(run_dir / "checkpoints" / "000060" / "pretrained_model", tmp_path / "elsewhere" / "policy")
    _run("eval.py", f"policy_path={shipped}", "n_episodes=2", "n_videos=0", f"hydra.run.dir={tmp_path / 'eval_copy'}")
    on_run = json.loads((tmp_path / "eval" / "eval_info.json").read_text())["episodes"]
    on_copy = json.loads((tmp_path / "eval_copy" / "eval_info.json").read_text())["episodes"]
    assert on_copy == on_run and len(on_run) == 2

    # resume restores the run's own config (optim.steps=60, its dataset) and refuses overrides that change it
    refused = _run("train.py", "resume=true", f"hydra.run.dir={run_dir}", "optim.steps=80", "dataset.n_episodes=4",
                   check=False)
    assert refused.returncode != 0
    assert "optim.steps (saved 60, given 80)" in refused.stderr and "dataset.n_episodes (saved 3" in refused.stderr
    resumed = _run("train.py", "resume=true", f"hydra.run.dir={run_dir}")
    assert "resumed from" in resumed.stdout and "collected" not in resumed.stdout
    assert json.loads((run_dir / "results.json").read_text())["success_rate"] == results["success_rate"]
    assert json.loads((tmp_path / "demos" / "meta" / "info.json").read_text())["total_episodes"] == 3


def test_more_videos_than_episodes_fails_at_start_naming_both_keys(tmp_path, tiny_checkpoint):
    proc = _run("train.py", "eval.n_episodes=1", f"dataset.root={tmp_path / 'demos'}", "dataset.n_episodes=1",
                "optim.steps=2", f"hydra.run.dir={tmp_path / 'run'}", check=False)
    assert proc.returncode != 0 and "eval.n_videos (2) must be <= eval.n_episodes (1)" in proc.stderr
    assert not (tmp_path / "demos").exists()  # refused before collecting or training anything
    proc = _run("eval.py", f"policy_path={tiny_checkpoint}", "n_episodes=1", f"hydra.run.dir={tmp_path / 'eval'}",
                check=False)
    assert proc.returncode != 0 and "n_videos (2) must be <= n_episodes (1)" in proc.stderr
    assert not (tmp_path / "eval" / "eval_info.json").exists()


def test_unknown_config_key_fails_at_start_naming_it(tmp_path):
    proc = _run("train.py", "optim.learning_rate=0.1", f"hydra.run.dir={tmp_path}", check=False)
    assert proc.returncode != 0
    assert "learning_rate" in proc.stderr


def test_eval_of_a_missing_checkpoint_names_the_path(tmp_path):
    missing = tmp_path / "no_such_run"
    proc = _run("eval.py", f"policy_path={missing}", f"hydra.run.dir={tmp_path / 'eval'}", check=False)
    assert proc.returncode != 0
    assert str(missing) in proc.stderr
