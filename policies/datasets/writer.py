"""Crash-safe writer of LeRobotDataset v3.0 datasets (the layout LeRobot >= 0.4 reads).

Frames are buffered in memory; :meth:`LeRobotDatasetWriter.save_episode` then commits the episode
in this order, each file written to a temp file, fsynced and renamed over the old one:

1. ``videos/<key>/chunk-C/file-F.mp4``: the committed frames of the current shard plus the new
   episode, joined by packet copy (or a new shard when the size limit is reached);
2. ``data/chunk-C/file-F.parquet``: the committed rows of the current shard plus the new rows;
3. ``meta/tasks.parquet`` (only when the episode brings a new task);
4. ``meta/episodes/chunk-C/file-F.parquet`` with the new episode row;
5. ``meta/stats.json``;
6. ``meta/info.json``, whose ``total_episodes`` is the commit record.

A process killed at any moment therefore loses at most the episode in flight: readers trust only
the first ``total_episodes`` episodes and ignore rows or frames beyond them. Re-opening the dataset
(resume) trims such leftovers so that LeRobot, which globs all data files, sees them no more.
"""

from __future__ import annotations

import copy
import fcntl
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from policies.datasets.atomic import (
    atomic_write_json,
    commit_temp,
    is_temp_file,
    temp_path_for,
)
from policies.datasets.layout import (
    DATA_PATH,
    DEFAULT_CHUNK_SIZE,
    DEFAULT_DATA_FILE_SIZE_IN_MB,
    DEFAULT_FEATURES,
    DEFAULT_VIDEO_FILE_SIZE_IN_MB,
    EPISODES_PATH,
    INFO_PATH,
    STATS_PATH,
    TASKS_PATH,
    VIDEO_PATH,
    DatasetError,
    comparable_features,
    empty_info,
    next_chunk_file,
    validate_features,
    with_default_features,
)
from policies.datasets.metadata import (
    Episode,
    load_episodes,
    load_info,
    load_stats,
    load_tasks,
)
from policies.datasets.stats import aggregate_stats, feature_stats, stats_to_json
from policies.datasets.tables import (
    data_features,
    data_schema,
    episodes_table,
    read_parquet,
    tasks_table,
    to_arrow,
    write_parquet,
)
from policies.datasets.video import (
    VideoEncoding,
    concat_videos,
    count_frames,
    encode_frames,
    video_stream_info,
)

if TYPE_CHECKING:
    from typing import Self

log = logging.getLogger(__name__)
LOCK_NAME = ".writer.lock"
_MB = 1024**2
_CHUNK_FILE_RE = re.compile(r"chunk-(\d+)/file-(\d+)\.(parquet|mp4)$")


@dataclass(frozen=True)
class _Shard:
    """A data/video/episodes file being appended to and how many committed frames (rows) it holds."""

    chunk: int
    file: int
    frames: int


class LeRobotDatasetWriter:
    """Record episodes into a LeRobotDataset v3.0 directory, creating it or appending to it (resume).

    Usage::

        with LeRobotDatasetWriter(root, fps=10, features=features) as writer:
            for step in episode:
                writer.add_frame({"observation.state": s, "action": a, ...}, task="push the T")
            writer.save_episode()

    ``features`` is the info.json-style dict of the per-frame keys you pass to :meth:`add_frame`
    (``video`` features: HxWx3 uint8; LeRobot's timestamp/index features are added for you). When
    ``root`` already holds a dataset, ``fps`` and ``features`` may be omitted and must otherwise
    match it. The constructor does no I/O; :meth:`open` (or the first :meth:`add_frame`, or
    ``with``) creates/resumes the dataset and takes a lock so that one writer at a time appends;
    the ``fps``/``features``/``num_*`` properties raise RuntimeError on a writer that is not open.
    An episode buffered but not saved when the writer is closed or killed is lost.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        fps: int | None = None,
        features: Mapping[str, Mapping[str, Any]] | None = None,
        robot_type: str | None = "franka_panda",
        video: VideoEncoding | None = None,
        chunks_size: int = DEFAULT_CHUNK_SIZE,
        data_files_size_in_mb: int = DEFAULT_DATA_FILE_SIZE_IN_MB,
        video_files_size_in_mb: int = DEFAULT_VIDEO_FILE_SIZE_IN_MB,
    ) -> None:
        """Check the arguments (no I/O).

        Raises:
            ValueError: naming the argument, for fps <= 0, sizes <= 0 or an invalid feature spec.
        """
        if fps is not None and (isinstance(fps, bool) or int(fps) != fps or fps <= 0):
            raise ValueError(f"fps must be a positive integer, got {fps!r}")
        for name, value in (("chunks_size", chunks_size), ("data_files_size_in_mb", data_files_size_in_mb),
                            ("video_files_size_in_mb", video_files_size_in_mb)):
            if value <= 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        self.root = Path(root)
        self._fps = int(fps) if fps is not None else None
        self._user_features = validate_features(dict(features)) if features is not None else None
        self._robot_type = robot_type
        self._video = video or VideoEncoding()
        self._limits = (int(chunks_size), _number(data_files_size_in_mb), _number(video_files_size_in_mb))
        self._lock_fd: int | None = None
        self._buffer: dict[str, list[Any]] = {}
        self._buffer_tasks: list[str] = []
        self._meta_table: pa.Table | None = None  # the current meta/episodes file's table, kept to append to

    # ------------------------------------------------------------------ lifecycle
    def open(self) -> Self:
        """Create the dataset (info.json with no episode) or resume an existing one; idempotent.

        Raises:
            DatasetError: if ``root`` is locked by another writer, holds non-dataset files, or the
                existing dataset is invalid or does not match ``fps``/``features``.
            ValueError: if creating a new dataset without ``fps`` and ``features``.
        """
        if self._lock_fd is not None:
            return self
        self.root.mkdir(parents=True, exist_ok=True)
        self._acquire_lock()
        try:
            if (self.root / INFO_PATH).exists():
                self._resume()
            else:
                self._create()
        except BaseException:
            self._release_lock()
            raise
        return self

    def close(self) -> None:
        """Release the dataset; frames added since the last :meth:`save_episode` are discarded."""
        if self._buffer_tasks:
            log.warning("closing %s with %d unsaved frames: episode discarded", self.root, len(self._buffer_tasks))
        self.clear_episode()
        self._release_lock()

    def __enter__(self) -> Self:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ state
    @property
    def fps(self) -> int:
        """Frames per second of the dataset."""
        self._require_open()
        return self._info["fps"]

    @property
    def features(self) -> dict[str, dict[str, Any]]:
        """All features of the dataset (info.json ``features``, default features included)."""
        self._require_open()
        return copy.deepcopy(self._info["features"])

    @property
    def num_episodes(self) -> int:
        """Committed episodes."""
        self._require_open()
        return self._info["total_episodes"]

    @property
    def num_frames(self) -> int:
        """Committed frames."""
        self._require_open()
        return self._info["total_frames"]

    @property
    def num_buffered_frames(self) -> int:
        """Frames added to the episode in flight."""
        return len(self._buffer_tasks)

    # ------------------------------------------------------------------ recording
    def add_frame(self, frame: Mapping[str, Any], task: str) -> None:
        """Buffer one frame of the current episode (copied; nothing is written until save_episode).

        Raises:
            ValueError: naming the key, for a missing/extra key, a wrong shape or dtype, a non-finite
                float, or an empty ``task``.
        """
        self.open()
        if not isinstance(task, str) or not task:
            raise ValueError(f"task must be a non-empty string, got {task!r}")
        expected = self._frame_keys()
        missing, extra = expected - frame.keys(), frame.keys() - expected
        if missing or extra:
            raise ValueError(f"frame keys mismatch: missing {sorted(missing)}, unexpected {sorted(extra)}")
        values = {key: _coerce(key, frame[key], self._info["features"][key]) for key in expected}
        for key, value in values.items():
            self._buffer.setdefault(key, []).append(value)
        self._buffer_tasks.append(task)

    def clear_episode(self) -> None:
        """Discard the frames buffered for the current episode."""
        self._buffer.clear()
        self._buffer_tasks.clear()

    def save_episode(self) -> int:
        """Commit the buffered frames as a new episode and return its episode index.

        Raises:
            ValueError: if no frame was added.
            DatasetError / OSError: if writing fails; the dataset then still holds every earlier
                episode, and the buffered frames are kept so the call can be retried.
        """
        self.open()
        if not self._buffer_tasks:
            raise ValueError("save_episode: no frame was added since the last save")
        episode_index = self._info["total_episodes"]
        columns, tasks = self._episode_columns(episode_index)
        episode_stats = {k: feature_stats(columns[k], ft["dtype"]) for k, ft in self._info["features"].items()
                         if ft["dtype"] != "string"}
        row: dict[str, Any] = {
            "episode_index": episode_index,
            "tasks": list(dict.fromkeys(self._buffer_tasks)),
            "length": len(self._buffer_tasks),
        }
        videos = {key: self._save_video(key, columns[key]) for key in self._video_keys()}
        for _, video_meta in videos.values():
            row.update(video_meta)
        data_shard, data_table, data_meta = self._save_data(columns)
        row.update(data_meta)
        if len(tasks) > len(self._tasks):
            write_parquet(tasks_table(tasks), self.root / TASKS_PATH)
        row.update({f"stats/{k}/{name}": v for k, st in episode_stats.items() for name, v in st.items()})
        meta_shard, meta_rows = self._save_episode_row(row)
        stats = aggregate_stats([self._stats, episode_stats]) if self._stats else episode_stats
        atomic_write_json(self.root / STATS_PATH, stats_to_json(stats))
        video_shards = {key: shard for key, (shard, _) in videos.items()}
        info = self._next_info(len(self._buffer_tasks), len(tasks), video_shards)
        atomic_write_json(self.root / INFO_PATH, info)  # the commit point
        self._info, self._tasks, self._stats, self._videos = info, tasks, stats, video_shards
        self._data, self._data_table = data_shard, data_table
        self._meta, self._meta_rows = meta_shard, meta_rows
        self.clear_episode()
        return episode_index

    # ------------------------------------------------------------------ create / resume
    def _create(self) -> None:
        if self._fps is None or self._user_features is None:
            raise ValueError(f"fps and features are required to create a new dataset at {self.root}")
        leftovers = [p for p in self.root.rglob("*") if p.is_file() and not is_temp_file(p) and p.name != LOCK_NAME]
        if leftovers:
            raise DatasetError(f"{self.root} has no {INFO_PATH} but holds {leftovers[0]}; refusing to write there")
        features = with_default_features(self._user_features)
        chunks, data_mb, video_mb = self._limits
        info = empty_info(self._fps, features, self._robot_type, chunks, data_mb, video_mb)
        atomic_write_json(self.root / INFO_PATH, info)
        self._info, self._tasks, self._stats = info, [], {}
        self._data, self._data_table, self._videos = None, None, {}
        self._meta, self._meta_rows = None, []

    def _resume(self) -> None:
        info = load_info(self.root)
        if self._fps is not None and self._fps != info["fps"]:
            raise DatasetError(f"{self.root / INFO_PATH}: dataset fps is {info['fps']}, writer was given {self._fps}")
        if self._user_features is not None:
            want = comparable_features(with_default_features(self._user_features))
            have = comparable_features(info["features"])
            if want != have:
                bad = sorted(k for k in want.keys() | have.keys() if want.get(k) != have.get(k))
                raise DatasetError(f"{self.root / INFO_PATH}: features differ from the writer's at keys {bad}")
        episodes = load_episodes(self.root, info)
        self._limits = (  # the dataset's own file-size settings win over the constructor's defaults
            int(info.get("chunks_size", self._limits[0])),
            _number(info.get("data_files_size_in_mb", self._limits[1])),
            _number(info.get("video_files_size_in_mb", self._limits[2])),
        )
        self._info, self._tasks = info, load_tasks(self.root, info)
        self._stats = load_stats(self.root, info, episodes)
        self._videos, self._data, self._data_table = {}, None, None
        self._meta, self._meta_rows = None, []
        if episodes:
            last = episodes[-1]
            self._meta = _Shard(*last.meta_file, sum(ep.meta_file == last.meta_file for ep in episodes))
            self._meta_rows = [ep.row for ep in episodes if ep.meta_file == last.meta_file]
            self._load_data_shard([ep for ep in episodes if ep.data_file == last.data_file])
            for key, (chunk, file, _, to_s) in last.videos.items():
                self._videos[key] = _Shard(chunk, file, round(to_s * info["fps"]))
        self._repair()

    def _load_data_shard(self, episodes: list[Episode]) -> None:
        """Keep in memory the committed rows of the last data file (to append to it)."""
        chunk, file = episodes[-1].data_file
        path = self.root / DATA_PATH.format(chunk_index=chunk, file_index=file)
        table = read_parquet(path, ["index"])
        index = table.column("index").to_numpy()
        keep = (index >= episodes[0].from_index) & (index < episodes[-1].to_index)
        committed = table.filter(pa.array(keep))
        if committed.num_rows != sum(ep.length for ep in episodes):
            raise DatasetError(f"{path}: holds {committed.num_rows} committed rows, episodes metadata says otherwise")
        self._data = _Shard(chunk, file, committed.num_rows)
        schema = data_schema(self._info["features"])
        try:
            self._data_table = committed.select(schema.names).cast(schema)
        except (pa.ArrowException, KeyError, ValueError):
            self._data_table = None  # foreign column types: start a new data file on the next save
            log.info("%s: column types differ from ours; next episode starts a new data file", path)

    def _repair(self) -> None:
        """Make files agree with the committed metadata: drop what a crashed save left beyond it."""
        for path in self.root.rglob("*"):
            if path.is_file() and is_temp_file(path):
                path.unlink(missing_ok=True)
        self._drop_files_after(self.root / "data", self._data)
        for key in self._video_keys():
            shard = self._videos.get(key)
            self._drop_files_after(self.root / "videos" / key, shard)
            if shard is not None:
                path = self._video_path(key, shard.chunk, shard.file)
                if count_frames(path) > shard.frames:
                    concat_videos([(path, shard.frames)], path, self._info["fps"])
        self._drop_files_after(self.root / "meta" / "episodes", self._meta)
        if self._data is not None and self._data_table is not None:
            path = self.root / DATA_PATH.format(chunk_index=self._data.chunk, file_index=self._data.file)
            if read_parquet(path).num_rows != self._data.frames:
                write_parquet(self._data_table, path)
        if self._meta is not None:
            path = self.root / EPISODES_PATH.format(chunk_index=self._meta.chunk, file_index=self._meta.file)
            if read_parquet(path).num_rows != len(self._meta_rows):
                write_parquet(episodes_table(self._meta_rows), path)
        if (self.root / TASKS_PATH).exists() and len(self._tasks) != read_parquet(self.root / TASKS_PATH).num_rows:
            write_parquet(tasks_table(self._tasks), self.root / TASKS_PATH)
        if self._meta is None:
            (self.root / STATS_PATH).unlink(missing_ok=True)
        else:  # stats.json may include the lost episode; self._stats holds the committed ones
            atomic_write_json(self.root / STATS_PATH, stats_to_json(self._stats))

    def _drop_files_after(self, folder: Path, current: _Shard | None) -> None:
        """Delete chunk-*/file-* files in ``folder`` that come after ``current`` (all if None)."""
        for path in folder.glob("chunk-*/file-*.*"):
            match = _CHUNK_FILE_RE.search(path.as_posix())
            if match and (current is None or (int(match[1]), int(match[2])) > (current.chunk, current.file)):
                log.info("removing %s: written by a save that did not commit", path)
                path.unlink()

    # ------------------------------------------------------------------ save phases
    def _episode_columns(self, episode_index: int) -> tuple[dict[str, Any], list[str]]:
        """Stack buffered frames and add LeRobot's per-frame timestamp/index columns."""
        n = len(self._buffer_tasks)
        columns: dict[str, Any] = {key: np.stack(values) if self._info["features"][key]["dtype"] != "string"
                                   else list(values) for key, values in self._buffer.items()}
        frame_index = np.arange(n, dtype=np.int64)
        tasks = list(self._tasks)
        task_ids = {task: i for i, task in enumerate(tasks)}
        for task in self._buffer_tasks:
            if task not in task_ids:
                task_ids[task] = len(tasks)
                tasks.append(task)
        columns.update(
            timestamp=(frame_index / self._info["fps"]).astype(np.float32),
            frame_index=frame_index,
            episode_index=np.full(n, episode_index, dtype=np.int64),
            index=self._info["total_frames"] + frame_index,
            task_index=np.array([task_ids[t] for t in self._buffer_tasks], dtype=np.int64),
        )
        return columns, tasks

    def _save_video(self, key: str, frames: np.ndarray) -> tuple[_Shard, dict[str, Any]]:
        """Append the episode's frames to the key's current mp4 shard (or start a new one)."""
        fps, shard = self._info["fps"], self._videos.get(key)
        chunk, file = (shard.chunk, shard.file) if shard else (0, 0)
        shard_path = self._video_path(key, chunk, file)
        shard_path.parent.mkdir(parents=True, exist_ok=True)
        episode_tmp = temp_path_for(shard_path)
        try:
            encode_frames(episode_tmp, frames, fps, self._video)
            if shard is not None and self._can_join(shard_path, episode_tmp):
                start = shard.frames
                total = concat_videos([(shard_path, start), (episode_tmp, None)], shard_path, fps)
            else:
                if shard is not None:
                    chunk, file = next_chunk_file(chunk, file, self._limits[0])
                    shard_path = self._video_path(key, chunk, file)
                    shard_path.parent.mkdir(parents=True, exist_ok=True)
                start, total = 0, len(frames)
                commit_temp(episode_tmp, shard_path)
        finally:
            episode_tmp.unlink(missing_ok=True)
        if total != start + len(frames):
            raise DatasetError(f"{shard_path}: holds {total} frames after appending, expected {start + len(frames)}")
        return _Shard(chunk, file, total), {
            f"videos/{key}/chunk_index": chunk,
            f"videos/{key}/file_index": file,
            f"videos/{key}/from_timestamp": start / fps,
            f"videos/{key}/to_timestamp": total / fps,
        }

    def _can_join(self, shard_path: Path, episode_path: Path) -> bool:
        """Whether the episode fits the shard's size limit and has the same stream format."""
        if not shard_path.is_file():
            return False
        size_mb = (shard_path.stat().st_size + episode_path.stat().st_size) / _MB
        if size_mb >= self._limits[2]:
            return False
        fields = ("video.codec", "video.width", "video.height", "video.pix_fmt")
        old, new = video_stream_info(shard_path), video_stream_info(episode_path)
        return all(old[f] == new[f] for f in fields)

    def _save_data(self, columns: dict[str, Any]) -> tuple[_Shard, pa.Table, dict[str, int]]:
        """Rewrite the current data file with the new rows appended (or start the next file)."""
        feats = data_features(self._info["features"])
        schema = data_schema(self._info["features"])
        new = pa.Table.from_arrays([to_arrow(columns[k], ft) for k, ft in feats.items()], schema=schema)
        shard, old = self._data, self._data_table
        if shard is None:
            chunk, file, table = 0, 0, new
        elif old is not None and (old.nbytes + new.nbytes) / _MB < self._limits[1]:
            # one chunk: a table of one chunk per episode made every write slower than the last (~1 s at 1000)
            chunk, file, table = shard.chunk, shard.file, pa.concat_tables([old, new]).combine_chunks()
        else:
            (chunk, file), table = next_chunk_file(shard.chunk, shard.file, self._limits[0]), new
        write_parquet(table, self.root / DATA_PATH.format(chunk_index=chunk, file_index=file))
        start = self._info["total_frames"]
        meta = {"data/chunk_index": chunk, "data/file_index": file,
                "dataset_from_index": start, "dataset_to_index": start + new.num_rows}
        return _Shard(chunk, file, table.num_rows), table, meta

    def _save_episode_row(self, row: dict[str, Any]) -> tuple[_Shard, list[dict[str, Any]]]:
        """Rewrite the current meta/episodes file with the new row (or start the next file)."""
        shard, rows = self._meta, self._meta_rows
        chunk, file = (shard.chunk, shard.file) if shard else (0, 0)
        table = self._meta_table if self._meta_table is not None and self._meta_table.num_rows == len(rows) else None
        if rows and table is None:
            table = episodes_table(rows)
        if table is not None and table.nbytes / _MB >= self._limits[1]:
            (chunk, file), rows, table = next_chunk_file(chunk, file, self._limits[0]), [], None
        row = {**row, "meta/episodes/chunk_index": chunk, "meta/episodes/file_index": file}
        rows = [*rows, row]
        table = _append_row(table, row, rows)
        write_parquet(table, self.root / EPISODES_PATH.format(chunk_index=chunk, file_index=file))
        self._meta_table = table  # a cache, valid while its row count matches the committed rows
        return _Shard(chunk, file, len(rows)), rows

    def _next_info(self, num_frames: int, num_tasks: int, videos: dict[str, _Shard]) -> dict[str, Any]:
        info = copy.deepcopy(self._info)
        info["total_episodes"] += 1
        info["total_frames"] += num_frames
        info["total_tasks"] = num_tasks
        info["splits"] = {"train": f"0:{info['total_episodes']}"}
        for key in self._video_keys():
            if "info" not in info["features"][key]:
                path = self._video_path(key, videos[key].chunk, videos[key].file)
                info["features"][key]["info"] = video_stream_info(path)
        return info

    # ------------------------------------------------------------------ helpers
    def _require_open(self) -> None:
        if self._lock_fd is None:
            raise RuntimeError(f"writer for {self.root} is not open: call open() or use it in a with block")

    def _frame_keys(self) -> set[str]:
        return {k for k in self._info["features"] if k not in DEFAULT_FEATURES}

    def _video_keys(self) -> list[str]:
        return [k for k, ft in self._info["features"].items() if ft["dtype"] == "video"]

    def _video_path(self, key: str, chunk: int, file: int) -> Path:
        return self.root / VIDEO_PATH.format(video_key=key, chunk_index=chunk, file_index=file)

    def _acquire_lock(self) -> None:
        fd = os.open(self.root / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as err:
            os.close(fd)
            raise DatasetError(f"{self.root} is being written by another writer ({self.root / LOCK_NAME})") from err
        self._lock_fd = fd

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            (self.root / LOCK_NAME).unlink(missing_ok=True)
            os.close(self._lock_fd)
            self._lock_fd = None


def _append_row(table: pa.Table | None, row: Mapping[str, Any], rows: list[dict[str, Any]]) -> pa.Table:
    """``table`` with ``row`` appended, or the table of all ``rows`` when the row's columns do not fit it.

    Rebuilding the episodes table from every row on each save made a 1000-episode collection quadratic (0.13 s per
    build at 400 episodes, twice per save); appending one cast row keeps each save's cost flat.
    """
    if table is not None:
        new = episodes_table([row])
        if new.schema.names == table.schema.names:
            try:
                return pa.concat_tables([table, new.cast(table.schema)]).combine_chunks()
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, TypeError):
                pass
    return episodes_table(rows)


def _coerce(key: str, value: Any, ft: Mapping[str, Any]) -> Any:
    """Check one frame value against its feature spec and return a private copy in the feature dtype."""
    if ft["dtype"] == "string":
        if not isinstance(value, str):
            raise ValueError(f"frame[{key!r}]: expected a string, got {type(value).__name__}")
        return value
    arr = np.asarray(value)
    shape = tuple(ft["shape"])
    if ft["dtype"] in ("video", "image"):
        if arr.dtype != np.uint8 or arr.shape != shape:
            raise ValueError(f"frame[{key!r}]: expected uint8 image of shape {shape}, got {arr.dtype} {arr.shape}")
        return arr.copy()
    if arr.shape != shape and not (shape == (1,) and arr.shape == ()):
        raise ValueError(f"frame[{key!r}]: expected shape {shape}, got {arr.shape}")
    target = np.dtype(ft["dtype"])
    if arr.dtype.kind not in "biuf" or not np.can_cast(arr.dtype, target, "same_kind"):
        raise ValueError(f"frame[{key!r}]: cannot store {arr.dtype} values as {target}")
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        raise ValueError(f"frame[{key!r}]: non-finite value")
    return arr.astype(target).reshape(()) if shape == (1,) else arr.astype(target)



def _number(value: float) -> int | float:
    """An int when integral (as LeRobot writes sizes in info.json), else the float."""
    return int(value) if float(value).is_integer() else float(value)
