"""Dataset layer: LeRobot v3.0 round trips, metadata, stats, resume, crash safety, windows, video."""

from __future__ import annotations

import inspect
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from gymnasium import spaces

from policies.datasets import (
    ChunkWindowDataset,
    DatasetError,
    DatasetFileNotFoundError,
    LeRobotDatasetReader,
    LeRobotDatasetWriter,
    VideoEncoding,
    features_from_spaces,
    read_video,
    write_video,
)
from policies.datasets.video import count_frames

REPO_ROOT = Path(__file__).resolve().parents[2]
FPS = 10
CAM = "observation.images.top"
FEATURES = {
    "observation.state": {"dtype": "float32", "shape": [2], "names": ["x", "y"]},
    CAM: {"dtype": "video", "shape": [32, 32, 3], "names": ["height", "width", "channels"]},
    "action": {"dtype": "float32", "shape": [2], "names": None},
}
MAX_VIDEO_MAE = 8.0  # mean abs error in uint8 levels allowed for the lossy codec


def episode_frames(e: int, n: int) -> dict[str, np.ndarray]:
    """Deterministic content of episode ``e`` with ``n`` frames (also run by the crash-test writers)."""
    t = np.arange(n, dtype=np.float32)
    state = np.stack([np.full(n, e, np.float32), t], 1) + 0.25
    action = np.stack([e * 100.0 + t, -t], 1).astype(np.float32)
    yy, xx = np.mgrid[0:32, 0:32]
    images = np.stack([
        np.stack([(xx * 6 + k * 5 + e * 40) % 256, (yy * 6 + e * 20) % 256, np.full_like(xx, (k * 7 + e * 30) % 256)],
                 -1)
        for k in range(n)
    ]).astype(np.uint8)
    return {"observation.state": state, "action": action, "observation.images.top": images}


LENGTHS = [7, 12, 5]
TASKS = ["push the T", "pull the T", "push the T"]


def write_dataset(root: Path, lengths=LENGTHS, tasks=TASKS, first_episode=0, **kwargs) -> LeRobotDatasetWriter:
    """Write one episode per length with :func:`episode_frames` content and return the closed writer."""
    with LeRobotDatasetWriter(root, fps=FPS, features=FEATURES, **kwargs) as writer:
        for e, (n, task) in enumerate(zip(lengths, tasks, strict=True), start=first_episode):
            frames = episode_frames(e, n)
            for t in range(n):
                writer.add_frame({k: v[t] for k, v in frames.items()}, task=task)
            assert writer.save_episode() == e
    return writer


def expected(lengths=LENGTHS) -> dict[str, np.ndarray]:
    episodes = [episode_frames(e, n) for e, n in enumerate(lengths)]
    return {k: np.concatenate([ep[k] for ep in episodes]) for k in episodes[0]}


def assert_lerobot_consistent(root: Path, num_frames: int, num_episodes: int) -> None:
    """What LeRobot's glob-based loader sees must match the metadata exactly: no orphan rows or files."""
    data_rows = sum(pq.read_metadata(p).num_rows for p in sorted(root.glob("data/*/*.parquet")))
    episode_rows = sum(pq.read_metadata(p).num_rows for p in sorted(root.glob("meta/episodes/*/*.parquet")))
    video_frames = sum(count_frames(p) for p in sorted(root.glob(f"videos/{CAM}/*/*.mp4")))
    assert (data_rows, episode_rows, video_frames) == (num_frames, num_episodes, num_frames)
    assert not [p for p in root.rglob("*") if ".tmp-" in p.name]


# ---------------------------------------------------------------------------------------- round trip
def test_round_trip_lowdim_exact_and_video_within_codec_tolerance(tmp_path):
    write_dataset(tmp_path / "ds")
    ds = LeRobotDatasetReader(tmp_path / "ds")
    want = expected()
    assert (ds.num_episodes, ds.num_frames, ds.fps) == (3, 24, FPS)
    assert ds.tasks == ["push the T", "pull the T"]
    np.testing.assert_array_equal(ds.episode_lengths, LENGTHS)
    np.testing.assert_array_equal(ds.episode_starts, [0, 7, 19])
    np.testing.assert_array_equal(ds.array("observation.state"), want["observation.state"])
    np.testing.assert_array_equal(ds.array("action"), want["action"])
    np.testing.assert_array_equal(ds.array("index"), np.arange(24))
    np.testing.assert_array_equal(ds.array("episode_index"), np.repeat([0, 1, 2], LENGTHS))
    np.testing.assert_array_equal(ds.array("frame_index"), np.concatenate([np.arange(n) for n in LENGTHS]))
    np.testing.assert_allclose(ds.array("timestamp"), ds.array("frame_index") / FPS, atol=1e-6)
    np.testing.assert_array_equal(ds.array("task_index"), np.repeat([0, 1, 0], LENGTHS))
    frames = ds.array(CAM)
    assert frames.shape == (24, 32, 32, 3) and frames.dtype == np.uint8
    assert np.abs(frames.astype(float) - want[CAM]).mean() < MAX_VIDEO_MAE
    per_frame = np.abs(frames.astype(float) - want[CAM]).mean(axis=(1, 2, 3))
    assert per_frame.max() < 2 * MAX_VIDEO_MAE  # every frame is at its own place, not shifted
    assert ds.frame_task(8) == "pull the T" and ds.episode_tasks(2) == ("push the T",)
    np.testing.assert_array_equal(ds.episode(1)["action"], episode_frames(1, 12)["action"])


def test_info_and_episode_metadata_are_complete_and_consistent(tmp_path):
    write_dataset(tmp_path / "ds")
    root = tmp_path / "ds"
    info = json.loads((root / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0"
    assert (info["total_episodes"], info["total_frames"], info["total_tasks"]) == (3, 24, 2)
    assert info["splits"] == {"train": "0:3"} and info["fps"] == FPS and info["robot_type"] == "franka_panda"
    assert info["data_path"] == "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
    assert info["video_path"] == "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
    for key in ("chunks_size", "data_files_size_in_mb", "video_files_size_in_mb"):
        assert info[key] > 0
    for key in ("timestamp", "frame_index", "episode_index", "index", "task_index"):
        assert info["features"][key]["shape"] == [1]
    assert info["features"][CAM]["info"]["video.codec"] in ("h264", "mpeg4")
    assert info["features"][CAM]["info"]["video.fps"] == FPS

    episodes = pq.read_table(root / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    assert [ep["episode_index"] for ep in episodes] == [0, 1, 2]
    assert [ep["length"] for ep in episodes] == LENGTHS
    assert [ep["tasks"] for ep in episodes] == [["push the T"], ["pull the T"], ["push the T"]]
    bounds = np.cumsum([0, *LENGTHS])
    assert [ep["dataset_from_index"] for ep in episodes] == bounds[:-1].tolist()
    assert [ep["dataset_to_index"] for ep in episodes] == bounds[1:].tolist()
    np.testing.assert_allclose([ep[f"videos/{CAM}/from_timestamp"] for ep in episodes], bounds[:-1] / FPS)
    np.testing.assert_allclose([ep[f"videos/{CAM}/to_timestamp"] for ep in episodes], bounds[1:] / FPS)
    assert {(ep["data/chunk_index"], ep["data/file_index"]) for ep in episodes} == {(0, 0)}
    assert "stats/observation.state/mean" in episodes[0] and "stats/index/count" in episodes[0]

    tasks = pq.read_table(root / "meta/tasks.parquet")
    assert tasks.column("task").to_pylist() == ["push the T", "pull the T"]
    assert tasks.column("task_index").to_pylist() == [0, 1]
    assert json.loads(tasks.schema.metadata[b"pandas"])["index_columns"] == ["task"]
    data = pq.read_table(root / "data/chunk-000/file-000.parquet")
    assert CAM not in data.column_names and data.num_rows == 24
    assert data.schema.field("observation.state").type == pa.list_(pa.float32(), 2)
    assert_lerobot_consistent(root, 24, 3)


def test_stats_match_numpy(tmp_path):
    write_dataset(tmp_path / "ds")
    ds = LeRobotDatasetReader(tmp_path / "ds")
    want = expected()
    state = want["observation.state"].astype(np.float64)
    s = ds.stats["observation.state"]
    np.testing.assert_allclose(s["mean"], state.mean(0), rtol=1e-9)
    np.testing.assert_allclose(s["std"], state.std(0), rtol=1e-9)
    np.testing.assert_array_equal(s["min"], state.min(0))
    np.testing.assert_array_equal(s["max"], state.max(0))
    assert s["count"].tolist() == [24]
    pixels = want[CAM].reshape(-1, 3).astype(np.float64) / 255.0  # stats of the frames given, per channel
    img = ds.stats[CAM]
    assert img["mean"].shape == (3, 1, 1)
    np.testing.assert_allclose(img["mean"].ravel(), pixels.mean(0), rtol=1e-9)
    np.testing.assert_allclose(img["std"].ravel(), pixels.std(0), rtol=1e-9)
    np.testing.assert_allclose(img["max"].ravel(), pixels.max(0))
    np.testing.assert_allclose(ds.stats["index"]["mean"], [11.5])
    episodes = pq.read_table(tmp_path / "ds/meta/episodes/chunk-000/file-000.parquet").to_pylist()
    first = episode_frames(0, LENGTHS[0])["action"].astype(np.float64)
    np.testing.assert_allclose(episodes[0]["stats/action/std"], first.std(0), rtol=1e-9)
    np.testing.assert_allclose(episodes[0]["stats/action/q01"], np.quantile(first, 0.01, axis=0), rtol=1e-9)


# -------------------------------------------------------------------------------- resume and sharding
def test_append_after_reopen_continues_the_same_shards(tmp_path):
    root = tmp_path / "ds"
    write_dataset(root, lengths=LENGTHS[:2], tasks=TASKS[:2])
    with LeRobotDatasetWriter(root) as writer:  # fps and features come from the dataset
        assert (writer.num_episodes, writer.num_frames, writer.fps) == (2, 19, FPS)
        frames = episode_frames(2, LENGTHS[2])
        for t in range(LENGTHS[2]):
            writer.add_frame({k: v[t] for k, v in frames.items()}, task=TASKS[2])
        assert writer.save_episode() == 2
    ds = LeRobotDatasetReader(root)
    np.testing.assert_array_equal(ds.array("action"), expected()["action"])
    assert np.abs(ds.array(CAM).astype(float) - expected()[CAM]).mean() < MAX_VIDEO_MAE
    assert ds.tasks == ["push the T", "pull the T"]
    assert len(list(root.glob("data/*/*.parquet"))) == 1 and len(list(root.glob("videos/*/*/*.mp4"))) == 1
    assert_lerobot_consistent(root, 24, 3)


def test_reopen_with_other_fps_or_features_is_refused(tmp_path):
    root = tmp_path / "ds"
    write_dataset(root, lengths=[3], tasks=["a"])
    with pytest.raises(DatasetError, match="fps"):
        LeRobotDatasetWriter(root, fps=30).open()
    other = {**FEATURES, "action": {"dtype": "float32", "shape": [3], "names": None}}
    with pytest.raises(DatasetError, match="action"):
        LeRobotDatasetWriter(root, fps=FPS, features=other).open()


def test_small_file_limits_roll_over_to_new_files(tmp_path):
    root = tmp_path / "ds"
    write_dataset(root, data_files_size_in_mb=0.0001, video_files_size_in_mb=0.0001)
    assert len(list(root.glob("data/chunk-000/*.parquet"))) == 3
    assert len(list(root.glob(f"videos/{CAM}/chunk-000/*.mp4"))) == 3
    assert len(list(root.glob("meta/episodes/chunk-000/*.parquet"))) == 3
    ds = LeRobotDatasetReader(root)
    np.testing.assert_array_equal(ds.array("observation.state"), expected()["observation.state"])
    assert np.abs(ds.array(CAM).astype(float) - expected()[CAM]).mean() < MAX_VIDEO_MAE
    write_dataset(root, lengths=[4], tasks=["push the T"], first_episode=3)  # resume keeps the limits
    assert len(list(root.glob("data/chunk-000/*.parquet"))) == 4
    assert LeRobotDatasetReader(root).num_frames == 28


def test_second_writer_on_the_same_dataset_is_refused(tmp_path):
    root = tmp_path / "ds"
    with LeRobotDatasetWriter(root, fps=FPS, features=FEATURES), pytest.raises(DatasetError, match="another"):
        LeRobotDatasetWriter(root).open()


def test_add_frame_rejects_bad_input_naming_the_key(tmp_path):
    frame = {k: v[0] for k, v in episode_frames(0, 1).items()}
    with LeRobotDatasetWriter(tmp_path / "ds", fps=FPS, features=FEATURES) as writer:
        with pytest.raises(ValueError, match="missing"):
            writer.add_frame({k: v for k, v in frame.items() if k != "action"}, task="t")
        with pytest.raises(ValueError, match="action"):
            writer.add_frame({**frame, "action": np.zeros(3, np.float32)}, task="t")
        with pytest.raises(ValueError, match="observation.state"):
            writer.add_frame({**frame, "observation.state": np.array([np.nan, 0.0])}, task="t")
        with pytest.raises(ValueError, match=CAM):
            writer.add_frame({**frame, CAM: frame[CAM].astype(np.float32)}, task="t")
        with pytest.raises(ValueError, match="task"):
            writer.add_frame(frame, task="")
        with pytest.raises(ValueError, match="no frame"):
            writer.save_episode()
        assert writer.num_buffered_frames == 0


def test_dataset_with_no_saved_episode_reads_as_empty(tmp_path):
    writer = LeRobotDatasetWriter(tmp_path / "ds", fps=FPS, features=FEATURES)
    writer.add_frame({k: v[0] for k, v in episode_frames(0, 1).items()}, task="never saved")
    writer.close()
    with pytest.raises(RuntimeError, match="not open"):
        _ = writer.num_episodes
    ds = LeRobotDatasetReader(tmp_path / "ds")
    assert (ds.num_episodes, ds.num_frames, ds.tasks) == (0, 0, [])
    assert ds.array("action").shape == (0, 2) and ds.array(CAM).shape == (0, 32, 32, 3)


def test_image_and_multidim_features_round_trip_exactly(tmp_path):
    features = {
        "observation.images.wrist": {"dtype": "image", "shape": [6, 4, 3], "names": ["height", "width", "channels"]},
        "observation.depth.top": {"dtype": "float32", "shape": [3, 5], "names": None},
        "action": {"dtype": "float32", "shape": [1], "names": None},
    }
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (9, 6, 4, 3), dtype=np.uint8)
    depth = rng.uniform(0.1, 2.0, (9, 3, 5)).astype(np.float32)
    action = rng.normal(size=9).astype(np.float32)
    with LeRobotDatasetWriter(tmp_path / "ds", fps=FPS, features=features) as writer:
        for n0, n1 in ((0, 4), (4, 9)):
            for t in range(n0, n1):
                writer.add_frame({"observation.images.wrist": images[t], "observation.depth.top": depth[t],
                                  "action": action[t]}, task="look")
            writer.save_episode()
    ds = LeRobotDatasetReader(tmp_path / "ds")
    np.testing.assert_array_equal(ds.array("observation.images.wrist"), images)  # PNG is lossless
    np.testing.assert_array_equal(ds.array("observation.depth.top"), depth)
    np.testing.assert_array_equal(ds.array("action"), action)
    assert ds.stats["observation.images.wrist"]["mean"].shape == (3, 1, 1)
    assert ds.stats["observation.depth.top"]["mean"].shape == (3, 5)


# ------------------------------------------------------------------------------------- crash safety
CHILD_SRC = "import numpy as np\n" + inspect.getsource(episode_frames) + textwrap.dedent(
    """
    import os, signal, sys, time
    from policies.datasets.writer import LeRobotDatasetWriter

    root, n_episodes, length, kill_episode, kill_call, kill_after, pause = sys.argv[1:]
    n_episodes, length, kill_episode, kill_call = int(n_episodes), int(length), int(kill_episode), int(kill_call)
    features = {FEATURES}
    real_replace, calls = os.replace, [0]

    def replace(src, dst):  # SIGKILL this process at the kill_call-th file commit of episode kill_episode
        calls[0] += armed[0]
        if armed[0] and calls[0] == kill_call and kill_after == "0":
            os.kill(os.getpid(), signal.SIGKILL)
        real_replace(src, dst)
        if armed[0] and calls[0] == kill_call and kill_after == "1":
            os.kill(os.getpid(), signal.SIGKILL)

    os.replace, armed = replace, [False]
    with LeRobotDatasetWriter(root, fps=10, features=features) as writer:
        for e in range(writer.num_episodes, writer.num_episodes + n_episodes):
            frames = episode_frames(e, length)
            for t in range(length):
                writer.add_frame({k: v[t] for k, v in frames.items()}, task=f"task {e}")
                time.sleep(float(pause))
            armed[0] = e == kill_episode
            writer.save_episode()
            print("saved", e, flush=True)
    """
).replace("{FEATURES}", repr(FEATURES))


def run_writer(root: Path, n_episodes: int, length: int, kill_episode=-1, kill_call=0, kill_after=False,
               pause=0.0) -> subprocess.Popen:
    args = [str(root), str(n_episodes), str(length), str(kill_episode), str(kill_call), str(int(kill_after)),
            str(pause)]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.Popen([sys.executable, "-c", CHILD_SRC, *args], stdout=subprocess.PIPE, text=True,
                            cwd=REPO_ROOT, env=env)


def check_episodes(root: Path, num_episodes: int, length: int) -> LeRobotDatasetReader:
    ds = LeRobotDatasetReader(root)
    assert ds.num_episodes == num_episodes and ds.num_frames == num_episodes * length
    if num_episodes:
        want = [episode_frames(e, length) for e in range(num_episodes)]
        np.testing.assert_array_equal(ds.array("action"), np.concatenate([w["action"] for w in want]))
        video = np.concatenate([w[CAM] for w in want]).astype(float)
        assert np.abs(ds.array(CAM).astype(float) - video).mean() < MAX_VIDEO_MAE
    return ds


# A save commits 6 files: video shard, data shard, tasks (each episode has a new task), episodes, stats,
# info (the commit point).
@pytest.mark.parametrize(("kill_call", "kill_after", "committed"), [
    (1, False, 2), (1, True, 2), (2, True, 2), (3, True, 2), (4, True, 2), (5, True, 2), (6, False, 2),
    (6, True, 3),
])
def test_kill_inside_save_episode_keeps_exactly_the_committed_episodes(tmp_path, kill_call, kill_after, committed):
    root = tmp_path / "ds"
    proc = run_writer(root, n_episodes=3, length=6, kill_episode=2, kill_call=kill_call, kill_after=kill_after)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL and out.split() == ["saved", "0", "saved", "1"]
    check_episodes(root, committed, 6)
    leftover_rows = sum(pq.read_metadata(p).num_rows for p in root.glob("data/*/*.parquet")) - 6 * committed
    assert leftover_rows == (6 if kill_call >= 2 and committed == 2 else 0)  # ignored by the reader
    # resume: the lost episode's leftovers are removed and recording continues after the committed ones
    resumed = run_writer(root, n_episodes=1, length=6)
    assert resumed.communicate(timeout=60)[0].split() == ["saved", str(committed)]
    ds = check_episodes(root, committed + 1, 6)
    assert ds.tasks == [f"task {e}" for e in range(committed + 1)]
    np.testing.assert_array_equal(ds.array("task_index"), ds.array("episode_index"))
    assert_lerobot_consistent(root, ds.num_frames, ds.num_episodes)


def test_kill_at_random_times_loses_at_most_the_episode_in_flight(tmp_path):
    rng = random.Random(7)
    for trial in range(3):
        root = tmp_path / f"ds{trial}"
        proc = run_writer(root, n_episodes=20, length=5, pause=0.01)
        saved = 0
        while saved < 2:  # let it commit two episodes, then kill it somewhere later
            line = proc.stdout.readline()
            assert line, "writer exited early"
            saved += line.startswith("saved")
        time.sleep(rng.uniform(0.0, 0.4))
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate(timeout=30)
        printed = saved + out.count("saved")
        ds = LeRobotDatasetReader(root)
        assert ds.num_episodes in (printed, printed + 1)  # +1: committed, killed before printing
        check_episodes(root, ds.num_episodes, 5)


# ----------------------------------------------------------------------------------- broken datasets
@pytest.mark.parametrize(("damage", "error", "named"), [
    ("rm meta/info.json", DatasetFileNotFoundError, "info.json"),
    ("rm data/chunk-000/file-000.parquet", DatasetFileNotFoundError, "file-000.parquet"),
    ("truncate data/chunk-000/file-000.parquet", DatasetError, "file-000.parquet"),
    ("truncate meta/episodes/chunk-000/file-000.parquet", DatasetError, "episodes"),
    ("truncate meta/tasks.parquet", DatasetError, "tasks.parquet"),
    ("garble meta/stats.json", DatasetError, "stats.json"),
    ("garble meta/info.json", DatasetError, "info.json"),
    (f"rm videos/{CAM}/chunk-000/file-000.mp4", DatasetFileNotFoundError, "file-000.mp4"),
    (f"truncate videos/{CAM}/chunk-000/file-000.mp4", DatasetError, "file-000.mp4"),
])
def test_missing_or_corrupt_files_raise_errors_naming_them(tmp_path, damage, error, named):
    root = tmp_path / "ds"
    write_dataset(root)
    action, rel = damage.split(" ", 1)
    path = root / rel
    if action == "rm":
        path.unlink()
    elif action == "truncate":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        path.write_text("{not json")
    with pytest.raises(error, match=named.replace(".", r"\.")):
        LeRobotDatasetReader(root).array(CAM)


def test_info_with_old_version_is_refused(tmp_path):
    root = tmp_path / "ds"
    write_dataset(root, lengths=[2], tasks=["a"])
    info = json.loads((root / "meta/info.json").read_text())
    (root / "meta/info.json").write_text(json.dumps({**info, "codebase_version": "v2.1"}))
    with pytest.raises(DatasetError, match="v2.1"):
        LeRobotDatasetReader(root)


def test_reads_a_dataset_laid_out_as_lerobot_writes_it(tmp_path):
    """LeRobot's own files: variable-size list columns, names as dicts, per-feature fps, episodes split
    over two metadata files without meta/episodes columns, tasks with a large_string index."""
    root = tmp_path / "lerobot"
    n = [3, 4]
    state = np.arange(14, dtype=np.float32).reshape(7, 2)
    features = {
        "observation.state": {"dtype": "float32", "shape": [2], "names": {"motors": ["a", "b"]}, "fps": 10.0},
        "timestamp": {"dtype": "float32", "shape": [1], "names": None, "fps": 10.0},
        "frame_index": {"dtype": "int64", "shape": [1], "names": None, "fps": 10.0},
        "episode_index": {"dtype": "int64", "shape": [1], "names": None, "fps": 10.0},
        "index": {"dtype": "int64", "shape": [1], "names": None, "fps": 10.0},
        "task_index": {"dtype": "int64", "shape": [1], "names": None, "fps": 10.0},
    }
    info = {"codebase_version": "v3.0", "robot_type": "so101", "total_episodes": 2, "total_frames": 7,
            "total_tasks": 1, "chunks_size": 1000, "data_files_size_in_mb": 100, "video_files_size_in_mb": 500,
            "fps": 10, "splits": {"train": "0:2"}, "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
            "video_path": None, "features": features}
    (root / "meta/episodes/chunk-000").mkdir(parents=True)
    (root / "data/chunk-000").mkdir(parents=True)
    (root / "meta/info.json").write_text(json.dumps(info))
    frame_index = np.concatenate([np.arange(k) for k in n])
    pq.write_table(pa.table({
        "observation.state": pa.array(state.tolist(), pa.list_(pa.float32())),
        "timestamp": pa.array(frame_index / 10.0, pa.float32()),
        "frame_index": frame_index, "episode_index": np.repeat([0, 1], n), "index": np.arange(7),
        "task_index": np.zeros(7, np.int64),
    }), root / "data/chunk-000/file-000.parquet")
    for e, (lo, hi) in enumerate([(0, 3), (3, 7)]):
        pq.write_table(pa.table({
            "episode_index": [e], "tasks": [["stack"]], "length": [hi - lo], "data/chunk_index": [0],
            "data/file_index": [0], "dataset_from_index": [lo], "dataset_to_index": [hi],
            "stats/observation.state/mean": [state[lo:hi].mean(0).tolist()],
        }), root / f"meta/episodes/chunk-000/file-00{e}.parquet")
    pq.write_table(pa.table({"task_index": [0], "task": pa.array(["stack"], pa.large_string())}),
                   root / "meta/tasks.parquet")
    stats = {"observation.state": {"mean": state.mean(0).tolist(), "count": [7]}, "index": {"count": [7]}}
    (root / "meta/stats.json").write_text(json.dumps(stats))
    ds = LeRobotDatasetReader(root)
    np.testing.assert_array_equal(ds.array("observation.state"), state)
    assert ds.tasks == ["stack"] and ds.robot_type == "so101"
    np.testing.assert_array_equal(ds.episode_lengths, n)


# ------------------------------------------------------------------------------------ training windows
def test_windows_shapes_padding_and_episode_boundaries(tmp_path):
    write_dataset(tmp_path / "ds")
    ds = LeRobotDatasetReader(tmp_path / "ds")
    windows = ChunkWindowDataset(ds, ["observation.state", CAM], n_obs_steps=2, horizon=4)
    assert len(windows) == 24
    item = windows[7]  # first frame of episode 1
    assert item["observation.state"].shape == (2, 2) and item["observation.state"].dtype == torch.float32
    assert item[CAM].shape == (2, 3, 32, 32) and item[CAM].dtype == torch.float32
    assert 0.0 <= float(item[CAM].min()) and float(item[CAM].max()) <= 1.0
    assert item["action"].shape == (4, 2) and item["action_is_pad"].dtype == torch.bool
    assert item["observation.state_is_pad"].tolist() == [True, False]
    assert item["task"] == "pull the T" and item["episode_index"] == 1
    # state = (episode, frame) + 0.25 and action = (100*episode + frame, -frame) identify every frame
    for t in range(len(windows)):
        item = windows[t]
        episode, frame = int(ds.array("episode_index")[t]), int(ds.array("frame_index")[t])
        length = LENGTHS[episode]
        assert item["observation.state"][:, 0].tolist() == [episode + 0.25] * 2
        assert item["observation.state"][:, 1].tolist() == [max(frame - 1, 0) + 0.25, frame + 0.25]
        steps = np.minimum(np.arange(frame, frame + 4), length - 1)
        assert item["action"][:, 0].tolist() == (100.0 * episode + steps).tolist()
        assert item["action_is_pad"].tolist() == (np.arange(frame, frame + 4) > length - 1).tolist()
        np.testing.assert_allclose(item[CAM][1].permute(1, 2, 0).numpy(), ds.array(CAM)[t] / 255.0, atol=1e-6)
    batch = next(iter(torch.utils.data.DataLoader(windows, batch_size=5)))
    assert batch[CAM].shape == (5, 2, 3, 32, 32) and len(batch["task"]) == 5


def test_windows_reject_unknown_keys_and_bad_sizes(tmp_path):
    write_dataset(tmp_path / "ds", lengths=[3], tasks=["a"])
    ds = LeRobotDatasetReader(tmp_path / "ds")
    with pytest.raises(KeyError, match="observation.nope"):
        ChunkWindowDataset(ds, ["observation.nope"], n_obs_steps=1, horizon=1)
    with pytest.raises(ValueError, match="horizon"):
        ChunkWindowDataset(ds, ["observation.state"], n_obs_steps=1, horizon=0)


# ------------------------------------------------------------------------------- features and video
def test_features_from_spaces_follows_lerobot_conventions():
    observation_space = spaces.Dict({
        "observation.state": spaces.Box(-1, 1, (2,), np.float32),
        "observation.environment_state": spaces.Box(-np.inf, np.inf, (4,), np.float64),
        CAM: spaces.Box(0, 255, (96, 96, 3), np.uint8),
        "observation.depth.top": spaces.Box(0, np.inf, (96, 96), np.float32),
    })
    features = features_from_spaces(observation_space, spaces.Box(-1, 1, (2,), np.float32))
    assert features[CAM] == {"dtype": "video", "shape": [96, 96, 3], "names": ["height", "width", "channels"]}
    assert features["observation.environment_state"] == {"dtype": "float32", "shape": [4], "names": None}
    assert features["observation.depth.top"]["shape"] == [96, 96]
    assert features["action"] == {"dtype": "float32", "shape": [2], "names": None}
    with_task = spaces.Dict({**observation_space.spaces, "task": spaces.Text(64)})
    # the instruction is LeRobot's per-frame task (meta/tasks.parquet), not a feature
    assert features_from_spaces(with_task, spaces.Box(-1, 1, (2,), np.float32)) == features
    with pytest.raises(ValueError, match="observation.weird"):
        features_from_spaces(spaces.Dict({"observation.weird": spaces.Graph(spaces.Box(0, 1, (1,)), None)}),
                             spaces.Box(-1, 1, (2,)))


@pytest.mark.parametrize("codec", ["auto", "mpeg4"])
def test_write_and_read_video_round_trip(tmp_path, codec):
    frames = episode_frames(3, 15)[CAM]
    path = write_video(tmp_path / "clips" / "rollout.mp4", frames, fps=FPS, encoding=VideoEncoding(codec=codec))
    assert path.is_file() and [p.name for p in path.parent.iterdir()] == ["rollout.mp4"]
    decoded = read_video(path)
    assert decoded.shape == frames.shape and decoded.dtype == np.uint8
    assert np.abs(decoded.astype(float) - frames).mean() < MAX_VIDEO_MAE
    with pytest.raises(ValueError, match="uint8"):
        write_video(tmp_path / "bad.mp4", frames.astype(np.float32), fps=FPS)
    with pytest.raises(ValueError, match="even"):
        write_video(tmp_path / "odd.mp4", frames[:, :31], fps=FPS)
    with pytest.raises(DatasetFileNotFoundError, match="missing.mp4"):
        read_video(tmp_path / "missing.mp4")


def test_get_batch_equals_collated_items(tmp_path):
    """The trainer's vectorised batch gather returns exactly what per-item indexing returns."""
    from torch.utils.data import default_collate

    root = tmp_path / "ds"
    features = {
        "observation.state": {"dtype": "float32", "shape": [2], "names": None},
        "action": {"dtype": "float32", "shape": [2], "names": None},
    }
    rng = np.random.default_rng(0)
    with LeRobotDatasetWriter(root, fps=10, features=features) as writer:
        for length, task in zip((5, 9, 3), ("push the T", "pull the T", "push the T")):
            for _ in range(length):
                writer.add_frame({k: rng.normal(size=2).astype(np.float32) for k in features}, task=task)
            writer.save_episode()
    windows = ChunkWindowDataset(LeRobotDatasetReader(root), ["observation.state"], n_obs_steps=3, horizon=6)
    items = np.array([0, 4, 5, 13, 16, 7, 0])
    batch = windows.get_batch(items)
    expected = default_collate([windows[int(t)] for t in items])
    assert batch.keys() == expected.keys() - {"index", "episode_index"}
    for key, value in batch.items():
        if key != "task":
            assert torch.equal(value, expected[key]), key
    assert isinstance(batch["task"], list) and batch["task"] == expected["task"]
    assert batch["task"] == ["push the T", "push the T", "pull the T", "pull the T", "push the T", "pull the T",
                             "push the T"]
    moved = {key: value.to("cpu") for key, value in batch.items()}  # as a trainer moves a batch to its device
    assert moved["task"] == batch["task"]


def test_relative_action_stats_match_numpy(tmp_path):
    root = tmp_path / "ds"
    features = {
        "observation.state": {"dtype": "float32", "shape": [2], "names": None},
        "action": {"dtype": "float32", "shape": [2], "names": None},
    }
    rng = np.random.default_rng(1)
    episodes = [rng.normal(size=(n, 2, 2)).astype(np.float32) for n in (6, 4)]
    with LeRobotDatasetWriter(root, fps=10, features=features) as writer:
        for episode in episodes:
            for state, action in episode:
                writer.add_frame({"observation.state": state, "action": action}, task="t")
            writer.save_episode()
    windows = ChunkWindowDataset(LeRobotDatasetReader(root), ["observation.state"], n_obs_steps=1, horizon=3)
    stats = windows.relative_action_stats("observation.state")
    expected = []
    for episode in episodes:
        states, actions = episode[:, 0], episode[:, 1]
        for t in range(len(episode)):
            chunk = actions[np.minimum(np.arange(t, t + 3), len(episode) - 1)]
            expected.append(chunk - states[t])
    expected = np.stack(expected)
    np.testing.assert_allclose(stats["min"], expected.min(0), atol=1e-6)
    np.testing.assert_allclose(stats["max"], expected.max(0), atol=1e-6)
    np.testing.assert_allclose(stats["mean"], expected.mean(0), atol=1e-6)
    assert stats["min"].shape == (3, 2)
