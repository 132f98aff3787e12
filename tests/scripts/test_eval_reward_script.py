"""scripts/eval_reward.py as a user runs it: a saved native model on rollouts in a folder prints the figures and
writes figures.json and progress.png; a missing model fails naming reward.path."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT
from tests.policies.reward_data import save_tiny_native, write_rollouts


def _eval_reward(*overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "GOMP_SPINCOUNT": "2000"}
    return subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "eval_reward.py"), "logger.mode=disabled",
                           *overrides], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_a_saved_native_model_prints_the_figures(tmp_path):
    rollouts, model = write_rollouts(tmp_path / "rollouts"), save_tiny_native(tmp_path / "model")
    proc = _eval_reward(f"reward.path={model}", f"data_root={rollouts}", "eval.n_rollouts=4", "eval.n_fit=4",
                        f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    printed = dict(line.split(": ", 1) for line in proc.stdout.splitlines() if ": " in line)
    stored = json.loads((tmp_path / "run" / "figures.json").read_text())
    for name in ("voc", "static_voc", "success_auc", "voc_heldout_instructions", "success_auc_heldout_instructions"):
        assert math.isfinite(stored[name]) and float(printed[name]) == pytest.approx(stored[name], abs=1e-4)
    assert (tmp_path / "run" / "progress.png").stat().st_size > 0


def test_a_missing_model_is_named(tmp_path):
    proc = _eval_reward(f"reward.path={tmp_path / 'none'}", f"data_root={tmp_path}", f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode != 0 and "reward.path=" in proc.stderr and "train_reward.py" in proc.stderr
