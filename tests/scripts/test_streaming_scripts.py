"""scripts/eval_streaming.py as a user runs it: a saved model on streams in a folder prints the figures (sinks and
window) and writes figures.json; a missing model is named."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

from perception.streaming import save_streaming
from policies.streaming.data import save_stream
from tests.conftest import REPO_ROOT
from tests.policies.stream_data import synthetic_episode, tiny_model


def _eval(*overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "GOMP_SPINCOUNT": "2000"}
    return subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "eval_streaming.py"), *overrides],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_a_saved_model_prints_the_figures(tmp_path):
    for seed in range(2):
        save_stream(synthetic_episode(seed, n=70), tmp_path / "data" / "heldout" / f"episode_{seed:06d}.npz")
    save_streaming(tiny_model(), tmp_path / "model")
    proc = _eval(f"model={tmp_path / 'model'}", f"data_root={tmp_path / 'data'}", "eval.segment_frames=8",
                 f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    printed = dict(line.split(": ", 1) for line in proc.stdout.splitlines() if ": " in line)
    stored = json.loads((tmp_path / "run" / "figures.json").read_text())
    for name in ("pose_err_mm", "progress_voc", "success_auc", "frozen_detect_s", "window_progress_voc"):
        assert math.isfinite(stored[name]) and abs(float(printed[name]) - stored[name]) < 1e-4
    # no training streams to choose the event thresholds on: said, and the fixed threshold used
    assert "eval.calibration_split" in proc.stderr and stored["event_threshold_contact_lost"] == 0.5


def test_a_missing_model_is_named(tmp_path):
    proc = _eval(f"model={tmp_path / 'none'}", f"data_root={tmp_path}", f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode != 0 and "model=" in proc.stderr and "train_streaming.py" in proc.stderr
