"""scripts/view.py: a few steps of a twin run logged to an .rrd file that Rerun reads back, with the twin, reality,
the cameras and the sync error in it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from real.modes.viewer import ViewConfig, run_view
from sim.twin import TwinConfig
from tests.conftest import REPO_ROOT


def _entities(path: Path) -> str:
    rerun = Path(sys.executable).parent / "rerun"
    done = subprocess.run([str(rerun), "rrd", "print", str(path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_view_writes_a_readable_recording_of_twin_and_reality(tmp_path):
    path = run_view(ViewConfig(out=str(tmp_path / "twin.rrd"), n_steps=4, image_size=[48, 48],
                               twin=TwinConfig(rate_hz=20.0)))
    assert path == tmp_path / "twin.rrd" and path.stat().st_size > 1000
    printed = _entities(path)
    for entity in ("world/twin/block", "world/reality/block", "world/cameras/side/rgb", "world/cameras/side/depth",
                   "sync/position_mm"):
        assert entity in printed, entity


def test_view_script_runs_from_the_command_line(tmp_path):
    out = tmp_path / "cli.rrd"
    done = subprocess.run([sys.executable, "scripts/view.py", f"out={out}", "n_steps=2", "image_size=[32,32]"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert out.stat().st_size > 0 and "rerun recording" in done.stdout


def test_view_config_errors_name_the_field():
    with pytest.raises(ValueError, match="view.n_steps"):
        ViewConfig(n_steps=0)
    with pytest.raises(ValueError, match="twin.recon_model"):
        run_view(ViewConfig(n_steps=1, twin=TwinConfig(correction="recon")))
