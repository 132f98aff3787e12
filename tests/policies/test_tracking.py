"""Tracker over W&B: offline runs are read back from their ``.wandb`` transaction log; disabled writes nothing."""

from __future__ import annotations

import json
import struct
import subprocess
import sys

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from wandb.proto import wandb_internal_pb2

from policies.datasets import write_video
from policies.tracking import Tracker, _has_wandb_credentials

BLOCK = 32768  # the .wandb file is a LevelDB-style log: 7-byte file header, 32 KiB blocks, 7-byte record headers


def read_records(path) -> list[wandb_internal_pb2.Record]:
    """Parse a ``run-<id>.wandb`` file (wandb 0.31 has no Python reader left) into protobuf records."""
    data = path.read_bytes()
    assert data[:4] == b":W&B" and data[4:6] == b"\xe1\xbe"  # ident + magic 0xBEE1
    records, pos, payload = [], 7, b""
    while pos + 7 <= len(data):
        if BLOCK - pos % BLOCK < 7:  # block tail too short for a header is zero padding
            pos += BLOCK - pos % BLOCK
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0:
            break
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        payload = chunk if kind in (1, 2) else payload + chunk  # FULL, FIRST | MIDDLE, LAST
        if kind in (1, 4):
            records.append(wandb_internal_pb2.Record.FromString(payload))
    return records


def history(records) -> list[dict]:
    """The logged rows, values JSON-decoded, W&B's own ``_timestamp``/``_runtime`` dropped."""
    rows = []
    for record in records:
        if record.WhichOneof("record_type") == "history":
            row = {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
            rows.append({k: v for k, v in row.items() if k not in ("_timestamp", "_runtime")})
    return rows


def run_record(records):
    """The run record (id, project, config, name, group, tags)."""
    return next(r.run for r in records if r.WhichOneof("record_type") == "run")


@pytest.fixture(autouse=True)
def quiet_wandb(tmp_path, monkeypatch):
    """Keep W&B silent and out of the home folder; no credentials unless a test adds them."""
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb_dir"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb_config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb_cache"))
    monkeypatch.setenv("NETRC", str(tmp_path / "no_netrc"))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)


def test_offline_run_holds_config_history_and_video(tmp_path):
    config = OmegaConf.create({"policy": {"lr": 1e-4, "lr_copy": "${policy.lr}"}, "seed": 3})
    video = write_video(tmp_path / "episode_7.mp4", np.zeros((4, 16, 16, 3), np.uint8), fps=10)
    with Tracker("realsim-test", mode="offline", run_dir=tmp_path / "run", config=config, name="bc",
                 group="pusht", tags=("unit",)) as tracker:
        for step in range(3):
            tracker.log({"train/loss": 1.0 / (step + 1), "train/lr": torch.tensor(1e-4), "n": np.int64(step)}, step)
        tracker.log_video("eval/video", video, step=3)
    run_dir = tracker.run_dir
    assert run_dir.parent == tmp_path / "run" / "wandb" and run_dir.name.startswith("offline-run-")
    assert run_dir.name.endswith(tracker.run_id) and tracker.run_path.endswith(f"realsim-test/{tracker.run_id}")
    records = read_records(run_dir / f"run-{tracker.run_id}.wandb")
    run = run_record(records)
    assert (run.run_id, run.project, run.display_name, run.run_group, list(run.tags)) == (
        tracker.run_id, "realsim-test", "bc", "pusht", ["unit"])
    logged_config = {u.key: json.loads(u.value_json) for u in run.config.update if u.key != "_wandb"}
    assert logged_config == {"policy": {"lr": 1e-4, "lr_copy": 1e-4}, "seed": 3}  # resolved
    rows = history(records)
    assert [{k: v for k, v in r.items() if not k.startswith("eval/video/")} for r in rows] == [
        {"train/loss": 1.0, "train/lr": pytest.approx(1e-4), "n": 0, "_step": 0},
        {"train/loss": 0.5, "train/lr": pytest.approx(1e-4), "n": 1, "_step": 1},
        {"train/loss": pytest.approx(1 / 3), "train/lr": pytest.approx(1e-4), "n": 2, "_step": 2},
        {"_step": 3},
    ]
    assert rows[3]["eval/video/_type"] == "video-file"  # nested keys are stored as a key path
    stored = run_dir / "files" / rows[3]["eval/video/path"]
    assert stored.read_bytes() == video.read_bytes()


def test_resume_continues_the_same_run(tmp_path):
    first = Tracker("realsim-test", run_dir=tmp_path, config={"a": 1}, run_id="resume01")
    first.log({"loss": 2.0}, step=0)
    first.finish()
    second = Tracker("realsim-test", run_dir=tmp_path, config={"a": 1}, run_id="resume01")
    second.log({"loss": 1.0}, step=1)
    second.finish()
    assert first.run_id == second.run_id == "resume01" and first.run_dir != second.run_dir
    assert [r["loss"] for r in history(read_records(second.run_dir / "run-resume01.wandb"))] == [1.0]


def test_disabled_mode_writes_nothing_but_checks_inputs(tmp_path):
    tracker = Tracker("realsim-test", mode="disabled", run_dir=tmp_path / "run", config={"a": 1}, run_id="x1")
    tracker.log({"loss": 1.0}, step=0)
    video = write_video(tmp_path / "v.mp4", np.zeros((2, 16, 16, 3), np.uint8), fps=10)
    tracker.log_video("eval/video", video, step=1)
    with pytest.raises(TypeError, match="'loss'"):
        tracker.log({"loss": "low"}, step=2)
    with pytest.raises(ValueError, match="step"):
        tracker.log({"loss": 1.0}, step=-1)
    with pytest.raises(FileNotFoundError, match="missing.mp4"):
        tracker.log_video("eval/video", tmp_path / "missing.mp4", step=3)
    tracker.finish()
    with pytest.raises(RuntimeError, match="finished"):
        tracker.log({"loss": 1.0}, step=4)
    assert (tracker.run_id, tracker.run_dir, tracker.run_path) == ("x1", None, None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.mp4"]  # no run folder, no WANDB_DIR


def test_bad_mode_names_the_setting(tmp_path):
    with pytest.raises(ValueError, match="logger.mode"):
        Tracker("realsim-test", mode="offlien", run_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_online_without_credentials_is_a_clear_error(tmp_path, monkeypatch):
    assert not _has_wandb_credentials()
    with pytest.raises(RuntimeError, match="WANDB_API_KEY"):
        Tracker("realsim-test", mode="online", run_dir=tmp_path)
    netrc = tmp_path / "netrc"
    netrc.write_text(f"machine api.wandb.ai\n  login user\n  password {'a' * 40}\n")
    monkeypatch.setenv("NETRC", str(netrc))
    # `wandb login` leaves a netrc entry: that counts as logged in. A subprocess, because finding credentials
    # stores them in W&B's process-wide session, which would leak into later tests.
    check = "from policies.tracking import _has_wandb_credentials as f; print(f())"
    out = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip().splitlines()[-1] == "True"
