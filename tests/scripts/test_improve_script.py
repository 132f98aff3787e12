"""scripts/improve.py as a user runs it: a trained checkpoint of the targets twin and a native reward model give one
iteration of the loop and the before/after figures; a missing reward model fails naming reward.path."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT
from tests.policies.test_rabc import _tiny_native, _trainer


@pytest.fixture(scope="module")
def start(tmp_path_factory):
    """A tiny flow-matching policy trained 3 steps on 2 demos of the targets twin (30-step episodes), and a tiny
    untrained native reward model."""
    root = tmp_path_factory.mktemp("improve_script")
    _trainer(root, ["eval.n_episodes=1", "eval.n_envs=1", "eval.n_videos=0", "eval.every=0",
                    f"output_dir={root / 'start'}"]).run()
    return root / "start", _tiny_native(root / "reward")


def _improve(*overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "GOMP_SPINCOUNT": "2000"}
    return subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "improve.py"), "logger.mode=disabled",
                           "iterations=1", "n_rollouts=2", "n_envs=1", "steps=2", "batch_size=8", "eval.n_episodes=2",
                           "eval.n_envs=1", "reward.k=5", "device=cpu", *overrides],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_one_iteration_prints_success_before_and_after(tmp_path, start):
    policy, reward = start
    proc = _improve(f"policy_path={policy}", f"reward.path={reward}", f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    printed = dict(line.split(": ", 1) for line in proc.stdout.splitlines() if ": " in line)
    stored = json.loads((tmp_path / "run" / "figures.json").read_text())
    assert printed["reward_source"] == "topreward" == stored["reward_source"]
    for name in ("before", "after"):
        assert float(printed[f"success_rate_{name}"]) == pytest.approx(stored[f"success_rate_{name}"])
        assert stored[f"success_ci_low_{name}"] <= stored[f"success_rate_{name}"] <= stored[f"success_ci_high_{name}"]
    assert stored["n_episodes"] == 2 and (tmp_path / "run" / "checkpoints" / "000001" / "pretrained_model").is_dir()


def test_a_missing_reward_model_is_named(tmp_path, start):
    policy, _ = start
    proc = _improve(f"policy_path={policy}", f"reward.path={tmp_path / 'none'}", f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode != 0 and "reward.path=" in proc.stderr and "train_reward.py" in proc.stderr
