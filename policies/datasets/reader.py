"""Reader of LeRobotDataset v3.0 directories, ours or LeRobot's, into in-memory NumPy arrays.

Datasets here are small, so low-dim columns are loaded when the reader is built and video shards
are decoded whole (PyAV) on first use and cached as uint8. Only the episodes committed in
``meta/info.json`` are read; rows or frames beyond them (left by a crashed writer) are ignored.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from policies.datasets.layout import DatasetError, DatasetFileNotFoundError
from policies.datasets.metadata import (
    Episode,
    load_episodes,
    load_info,
    load_stats,
    load_tasks,
)
from policies.datasets.stats import Stats
from policies.datasets.tables import from_arrow, read_parquet
from policies.datasets.video import decode_video, video_stream_info


class LeRobotDatasetReader:
    """A validated, read-only view of a LeRobotDataset v3.0 directory.

    Building one reads and checks ``meta/info.json``, ``meta/stats.json``, ``meta/tasks.parquet``,
    ``meta/episodes/*``, every data parquet file listed (rows must match the episode ranges) and
    the header of every video file listed.

    Attributes:
        root: dataset directory.
        info: parsed info.json (committed totals, features).
        fps: frames per second.
        features: info.json features, default features included.
        tasks: task strings indexed by task_index.
        stats: {feature: {stat: ndarray}} from stats.json (image stats have shape [3, 1, 1]).
        episode_lengths: (num_episodes,) int64 frames per episode.
        episode_starts: (num_episodes,) int64 global index of each episode's first frame.

    Raises:
        DatasetFileNotFoundError: a required file is missing (the message names it).
        DatasetError: a file is corrupt or inconsistent with the metadata (the message names it).
    """

    def __init__(self, root: str | os.PathLike[str], tolerance_s: float = 1e-4) -> None:
        """Load and validate the dataset at ``root``; ``tolerance_s`` bounds video frame time errors."""
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetFileNotFoundError(f"dataset directory not found: {self.root}")
        self.tolerance_s = float(tolerance_s)
        self.info = load_info(self.root)
        self.fps: int = self.info["fps"]
        self.features: dict[str, dict[str, Any]] = self.info["features"]
        self._episodes: list[Episode] = load_episodes(self.root, self.info)
        self.tasks: list[str] = load_tasks(self.root, self.info)
        self.stats: Stats = load_stats(self.root, self.info, self._episodes)
        self.episode_lengths = np.array([ep.length for ep in self._episodes], dtype=np.int64)
        self.episode_starts = np.array([ep.from_index for ep in self._episodes], dtype=np.int64)
        self._rows = self._locate_rows()
        self._columns: dict[str, np.ndarray] = self._load_lowdim()
        self._check_video_files()
        self._visual_cache: dict[str, np.ndarray] = {}

    # ------------------------------------------------------------------ summary
    @property
    def num_episodes(self) -> int:
        """Committed episodes."""
        return len(self._episodes)

    @property
    def num_frames(self) -> int:
        """Committed frames over all episodes."""
        return int(self.info["total_frames"])

    @property
    def robot_type(self) -> str | None:
        """info.json ``robot_type``."""
        return self.info.get("robot_type")

    @property
    def video_keys(self) -> list[str]:
        """Features stored as mp4 video."""
        return [k for k, ft in self.features.items() if ft["dtype"] == "video"]

    @property
    def image_keys(self) -> list[str]:
        """Features stored as PNG images inside the data parquet files."""
        return [k for k, ft in self.features.items() if ft["dtype"] == "image"]

    @property
    def lowdim_keys(self) -> list[str]:
        """Numeric and string per-frame features stored in the data parquet files."""
        return [k for k, ft in self.features.items() if ft["dtype"] not in ("video", "image")]

    def __repr__(self) -> str:
        return (f"LeRobotDatasetReader({str(self.root)!r}, episodes={self.num_episodes}, "
                f"frames={self.num_frames}, fps={self.fps})")

    # ------------------------------------------------------------------ access
    def array(self, key: str) -> np.ndarray:
        """All committed frames of feature ``key`` in global index order.

        Low-dim features give (num_frames, *shape) in the feature dtype ([1]-shaped ones give
        (num_frames,)); video and image features give (num_frames, H, W, 3) uint8, decoded on the
        first call and cached.

        Raises:
            KeyError: if ``key`` is not a feature. DatasetError: if a file cannot be decoded.
        """
        if key not in self.features:
            raise KeyError(f"unknown feature {key!r}; features are {sorted(self.features)}")
        if key in self._columns:
            return self._columns[key]
        if key not in self._visual_cache:
            load = self._decode_video_key if self.features[key]["dtype"] == "video" else self._decode_image_key
            self._visual_cache[key] = load(key)
        return self._visual_cache[key]

    def episode_slice(self, episode_index: int) -> slice:
        """Global frame range of one episode.

        Raises:
            IndexError: if the episode does not exist.
        """
        if not 0 <= episode_index < self.num_episodes:
            raise IndexError(f"episode {episode_index} out of range [0, {self.num_episodes})")
        start = int(self.episode_starts[episode_index])
        return slice(start, start + int(self.episode_lengths[episode_index]))

    def episode(self, episode_index: int, keys: list[str] | None = None) -> dict[str, np.ndarray]:
        """Frames of one episode for ``keys`` (default: every feature)."""
        span = self.episode_slice(episode_index)
        return {key: self.array(key)[span] for key in (keys or list(self.features))}

    def episode_tasks(self, episode_index: int) -> tuple[str, ...]:
        """Task strings listed for an episode in the episodes metadata."""
        self.episode_slice(episode_index)
        return self._episodes[episode_index].tasks

    def frame_task(self, index: int) -> str:
        """The task string of global frame ``index``."""
        return self.tasks[int(self._columns["task_index"][index])]

    # ------------------------------------------------------------------ loading
    def _locate_rows(self) -> list[tuple[Path, np.ndarray]]:
        """For each episode: its data file and the row positions of its frames, in frame order."""
        out: list[tuple[Path, np.ndarray]] = []
        cache: dict[Path, tuple[np.ndarray, np.ndarray]] = {}
        for ep in self._episodes:
            path = self.root / self.info["data_path"].format(chunk_index=ep.data_file[0], file_index=ep.data_file[1])
            if path not in cache:
                table = read_parquet(path, ["index", "episode_index"])
                cache[path] = (table.column("index").to_numpy(), table.column("episode_index").to_numpy())
            index, episode = cache[path]
            rows = np.flatnonzero((index >= ep.from_index) & (index < ep.to_index))
            rows = rows[np.argsort(index[rows], kind="stable")]
            if len(rows) != ep.length or not np.array_equal(index[rows], np.arange(ep.from_index, ep.to_index)):
                raise DatasetError(f"{path}: rows of episode {ep.index} do not cover frames "
                                   f"[{ep.from_index}, {ep.to_index}) exactly once")
            if np.any(episode[rows] != ep.index):
                raise DatasetError(f"{path}: rows [{ep.from_index}, {ep.to_index}) are not of episode {ep.index}")
            out.append((path, rows))
        return out

    def _gather(self, keys: list[str]) -> dict[str, list[pa.Array]]:
        """Arrow values of ``keys`` for every committed frame, one piece per episode."""
        pieces: dict[str, list[pa.Array]] = {key: [] for key in keys}
        tables: dict[Path, pa.Table] = {}
        for path, rows in self._rows:
            if path not in tables:
                tables[path] = read_parquet(path, keys)
            taken = tables[path].take(pa.array(rows))
            for key in keys:
                pieces[key].append(taken.column(key))
        return pieces

    def _load_lowdim(self) -> dict[str, np.ndarray]:
        keys = self.lowdim_keys
        columns: dict[str, np.ndarray] = {}
        for key, pieces in self._gather(keys).items():
            where = f"{self.root / 'data'} column {key!r}"
            arrays = [from_arrow(piece, self.features[key], where) for piece in pieces]
            shape = list(self.features[key]["shape"])
            empty = np.empty((0,) if shape == [1] else (0, *shape), dtype=_numpy_dtype(self.features[key]["dtype"]))
            columns[key] = np.concatenate(arrays) if arrays else empty
        return columns

    def _decode_image_key(self, key: str) -> np.ndarray:
        where = f"{self.root / 'data'} column {key!r}"
        arrays = [from_arrow(piece, self.features[key], where) for piece in self._gather([key])[key]]
        return np.concatenate(arrays) if arrays else np.empty((0, *self.features[key]["shape"]), np.uint8)

    def _video_path(self, key: str, ep: Episode) -> Path:
        chunk, file, _, _ = ep.videos[key]
        return self.root / self.info["video_path"].format(video_key=key, chunk_index=chunk, file_index=file)

    def _check_video_files(self) -> None:
        seen: set[Path] = set()
        for key in self.video_keys:
            for ep in self._episodes:
                path = self._video_path(key, ep)
                if path not in seen:
                    if not path.is_file():
                        raise DatasetFileNotFoundError(f"video file not found: {path} (episode {ep.index}, {key})")
                    video_stream_info(path)
                    seen.add(path)

    def _decode_video_key(self, key: str) -> np.ndarray:
        """Decode every shard of a video key once and cut each episode's frames out by timestamp."""
        shape = tuple(self.features[key]["shape"])
        out = np.empty((self.num_frames, *shape), dtype=np.uint8)
        shards: dict[Path, tuple[np.ndarray, np.ndarray]] = {}
        for ep in self._episodes:
            path = self._video_path(key, ep)
            if path not in shards:
                shards = {path: decode_video(path)}  # episodes are in file order: keep one shard decoded
            frames, times = shards[path]
            if frames.shape[1:] != shape:
                raise DatasetError(f"{path}: frames are {frames.shape[1:]}, feature {key!r} says {shape}")
            start = round(ep.videos[key][2] * self.fps)
            stop = start + ep.length
            wanted = ep.videos[key][2] + np.arange(ep.length) / self.fps
            if stop > len(frames) or np.max(np.abs(times[start:stop] - wanted)) > self.tolerance_s:
                raise DatasetError(f"{path}: no frames at the timestamps of episode {ep.index} "
                                   f"({ep.videos[key][2]:.4f}s + {ep.length} frames at {self.fps} fps)")
            out[ep.from_index:ep.to_index] = frames[start:stop]
        return out


def _numpy_dtype(dtype: str) -> np.dtype:
    return np.dtype(object) if dtype == "string" else np.dtype(dtype)
