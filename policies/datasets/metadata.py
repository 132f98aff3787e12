"""Load and validate the ``meta/`` files of a LeRobot v3 dataset (shared by the reader and the writer).

``info.json`` is the commit record: only the first ``total_episodes`` episodes count, and files a
crashed writer left ahead of it (an extra episode row, task, or stats that include the lost episode)
are ignored or recomputed from the committed episodes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from policies.datasets.layout import (
    EPISODES_DIR,
    INFO_PATH,
    STATS_PATH,
    TASKS_PATH,
    DatasetError,
    DatasetFileNotFoundError,
    validate_features,
)
from policies.datasets.stats import Stats, aggregate_stats, stats_from_json
from policies.datasets.tables import read_parquet, read_tasks

EPISODE_COLUMNS = (
    "episode_index",
    "tasks",
    "length",
    "data/chunk_index",
    "data/file_index",
    "dataset_from_index",
    "dataset_to_index",
)
VIDEO_COLUMNS = ("chunk_index", "file_index", "from_timestamp", "to_timestamp")
_INFO_KEYS = ("codebase_version", "fps", "features", "total_episodes", "total_frames", "total_tasks", "data_path")


def load_json(path: Path) -> Any:
    """Read a JSON file.

    Raises:
        DatasetFileNotFoundError: if missing; DatasetError: if not valid JSON. Both name the path.
    """
    if not path.is_file():
        raise DatasetFileNotFoundError(f"dataset file not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DatasetError(f"corrupt JSON in {path}: {err}") from err


def load_info(root: Path) -> dict[str, Any]:
    """Read and validate meta/info.json (v3.x layout, fps, features, totals).

    Raises:
        DatasetFileNotFoundError / DatasetError: naming meta/info.json and the bad field.
    """
    path = root / INFO_PATH
    info = load_json(path)
    if not isinstance(info, dict):
        raise DatasetError(f"{path}: expected a JSON object")
    missing = [k for k in _INFO_KEYS if k not in info]
    if missing:
        raise DatasetError(f"{path}: missing field(s) {missing}")
    version = str(info["codebase_version"])
    if not version.startswith("v3."):
        raise DatasetError(f"{path}: codebase_version {version!r} is not v3.x (convert older datasets with LeRobot)")
    for key in ("fps", "total_episodes", "total_frames", "total_tasks"):
        value = info[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or int(value) != value:
            raise DatasetError(f"{path}: field {key!r} must be a non-negative integer, got {value!r}")
        info[key] = int(value)
    if info["fps"] <= 0:
        raise DatasetError(f"{path}: fps must be > 0")
    try:
        info["features"] = validate_features(info["features"], where=f"{path} features")
    except ValueError as err:
        raise DatasetError(str(err)) from err
    if any(ft["dtype"] == "video" for ft in info["features"].values()) and not info.get("video_path"):
        raise DatasetError(f"{path}: video features but no 'video_path'")
    return info


@dataclass(frozen=True)
class Episode:
    """One committed episode's metadata row (frame range, files, video spans, tasks, stats)."""

    index: int
    length: int
    from_index: int  # first global frame index (inclusive)
    to_index: int  # last global frame index (exclusive)
    tasks: tuple[str, ...]
    data_file: tuple[int, int]  # (chunk_index, file_index)
    videos: dict[str, tuple[int, int, float, float]]  # key -> (chunk, file, from_s, to_s)
    stats: Stats
    meta_file: tuple[int, int]  # meta/episodes (chunk_index, file_index) holding this row
    row: dict[str, Any]  # the raw row, to rewrite it unchanged


def _episode_from_row(row: dict[str, Any], video_keys: list[str], where: str) -> Episode:
    stats: Stats = {}
    for name, value in row.items():
        parts = name.split("/")
        if len(parts) == 3 and parts[0] == "stats" and value is not None:
            stats.setdefault(parts[1], {})[parts[2]] = np.asarray(value, np.float64)
    try:
        videos = {
            k: (int(row[f"videos/{k}/chunk_index"]), int(row[f"videos/{k}/file_index"]),
                float(row[f"videos/{k}/from_timestamp"]), float(row[f"videos/{k}/to_timestamp"]))
            for k in video_keys
        }
        return Episode(
            index=int(row["episode_index"]),
            length=int(row["length"]),
            from_index=int(row["dataset_from_index"]),
            to_index=int(row["dataset_to_index"]),
            tasks=tuple(str(t) for t in row["tasks"] or ()),
            data_file=(int(row["data/chunk_index"]), int(row["data/file_index"])),
            videos=videos,
            stats=stats,
            meta_file=(int(row.get("meta/episodes/chunk_index") or 0), int(row.get("meta/episodes/file_index") or 0)),
            row=row,
        )
    except (KeyError, TypeError, ValueError) as err:
        raise DatasetError(f"{where}: bad or missing value in episode row ({err!r})") from err


def episode_files(root: Path) -> list[Path]:
    """All meta/episodes/chunk-*/file-*.parquet files, in (chunk, file) order."""
    return sorted((root / EPISODES_DIR).glob("chunk-*/file-*.parquet"))


def load_episodes(root: Path, info: dict[str, Any]) -> list[Episode]:
    """Read the committed episodes (0..total_episodes-1) and check their frame ranges are contiguous.

    Raises:
        DatasetFileNotFoundError / DatasetError: naming the episodes file and the inconsistency.
    """
    n = info["total_episodes"]
    files = episode_files(root)
    if n == 0:
        return []
    if not files:
        raise DatasetFileNotFoundError(f"no episodes metadata under {root / EPISODES_DIR} (info says {n})")
    video_keys = [k for k, ft in info["features"].items() if ft["dtype"] == "video"]
    required = [*EPISODE_COLUMNS, *(f"videos/{k}/{c}" for k in video_keys for c in VIDEO_COLUMNS)]
    by_index: dict[int, Episode] = {}
    for path in files:
        for row in read_parquet(path, required).to_pylist():
            episode = _episode_from_row(row, video_keys, str(path))
            if episode.index < n:
                if episode.index in by_index:
                    raise DatasetError(f"{path}: episode {episode.index} is listed twice")
                by_index[episode.index] = episode
    missing = sorted(set(range(n)) - set(by_index))
    if missing:
        raise DatasetError(f"{root / EPISODES_DIR}: episodes {missing[:10]} listed in info.json are missing")
    episodes = [by_index[i] for i in range(n)]
    _check_ranges(episodes, info["total_frames"], root / EPISODES_DIR)
    return episodes


def _check_ranges(episodes: list[Episode], total_frames: int, where: Path) -> None:
    expected_from = 0
    for ep in episodes:
        if ep.length <= 0 or ep.from_index != expected_from or ep.to_index - ep.from_index != ep.length:
            raise DatasetError(
                f"{where}: episode {ep.index} spans [{ep.from_index}, {ep.to_index}) with length {ep.length}; "
                f"expected to start at {expected_from}"
            )
        expected_from = ep.to_index
    if expected_from != total_frames:
        raise DatasetError(f"{where}: episodes hold {expected_from} frames but info.json says {total_frames}")


def load_tasks(root: Path, info: dict[str, Any]) -> list[str]:
    """Read meta/tasks.parquet as a list indexed by task_index (first ``total_tasks`` only).

    Raises:
        DatasetFileNotFoundError / DatasetError: naming meta/tasks.parquet.
    """
    n = info["total_tasks"]
    if n == 0 and info["total_episodes"] == 0:
        return []
    path = root / TASKS_PATH
    tasks = read_tasks(path)
    missing = [i for i in range(n) if i not in tasks]
    if missing:
        raise DatasetError(f"{path}: task_index {missing[:10]} listed in info.json missing")
    return [tasks[i] for i in range(n)]


def load_stats(root: Path, info: dict[str, Any], episodes: list[Episode]) -> Stats:
    """Read meta/stats.json; if it disagrees with the committed frame count (a writer crashed between
    writing stats and committing), recompute it from the committed episodes' stats.

    Raises:
        DatasetFileNotFoundError / DatasetError: naming meta/stats.json, if missing (with episodes) or corrupt.
    """
    path = root / STATS_PATH
    if not episodes and not path.exists():
        return {}
    try:
        stats = stats_from_json(load_json(path), str(path))
    except (TypeError, ValueError) as err:
        raise DatasetError(str(err)) from err
    count = stats.get("index", {}).get("count")
    if count is not None and int(np.asarray(count).reshape(-1)[0]) != info["total_frames"]:
        if all(ep.stats for ep in episodes):
            return aggregate_stats(ep.stats for ep in episodes)
        raise DatasetError(f"{path}: stats count {count} != total_frames {info['total_frames']}")
    return stats

