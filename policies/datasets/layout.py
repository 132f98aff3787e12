"""LeRobotDataset v3.0 on-disk layout: paths, default features, errors and feature-spec validation.

The layout (what LeRobot >= 0.4 writes and reads)::

    root/
      meta/info.json                                  codebase_version "v3.0", fps, features, totals
      meta/stats.json                                 aggregated stats per feature
      meta/tasks.parquet                              index "task" (str), column task_index (int64)
      meta/episodes/chunk-000/file-000.parquet        one row per episode (ranges, video spans, stats/*)
      data/chunk-000/file-000.parquet                 one row per frame, several episodes per file
      videos/<video_key>/chunk-000/file-000.mp4       several episodes per file, back to back

``info.json`` is the commit record: a reader trusts only the first ``total_episodes`` episodes.
"""

from __future__ import annotations

import copy
from typing import Any

CODEBASE_VERSION = "v3.0"
DEFAULT_CHUNK_SIZE = 1000  # max files per chunk folder
# File size limits. LeRobot's writer batches episodes and uses 100 / 500 MB; ours saves every episode at once (a killed
# run loses at most the episode in flight), which rewrites the current data file and re-muxes the current video file,
# so a file's size bounds the cost of each save. At 100 / 500 MB a 1000-episode 64x64 collection slowed from 3 to 1
# episode/s as its files grew (re-muxing 8 MB of video took 0.19 s, the 32k-row data table 0.3 s); at 4 MB every
# save stays under ~0.1 s. Readers (ours, LeRobot's) follow each episode's chunk/file index, so more files change
# nothing for them; a dataset keeps the limits it was created with (info.json).
DEFAULT_DATA_FILE_SIZE_IN_MB = 4
DEFAULT_VIDEO_FILE_SIZE_IN_MB = 4

INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"
TASKS_PATH = "meta/tasks.parquet"
EPISODES_DIR = "meta/episodes"
CHUNK_FILE_PATTERN = "chunk-{chunk_index:03d}/file-{file_index:03d}"
EPISODES_PATH = EPISODES_DIR + "/" + CHUNK_FILE_PATTERN + ".parquet"
DATA_PATH = "data/" + CHUNK_FILE_PATTERN + ".parquet"
VIDEO_PATH = "videos/{video_key}/" + CHUNK_FILE_PATTERN + ".mp4"

DEFAULT_FEATURES: dict[str, dict[str, Any]] = {
    "timestamp": {"dtype": "float32", "shape": [1], "names": None},
    "frame_index": {"dtype": "int64", "shape": [1], "names": None},
    "episode_index": {"dtype": "int64", "shape": [1], "names": None},
    "index": {"dtype": "int64", "shape": [1], "names": None},
    "task_index": {"dtype": "int64", "shape": [1], "names": None},
}
VISUAL_DTYPES = ("video", "image")
NUMERIC_DTYPES = ("float32", "float64", "int64", "int32", "int16", "int8", "uint8", "bool")
KNOWN_DTYPES = (*NUMERIC_DTYPES, *VISUAL_DTYPES, "string")


class DatasetError(ValueError):
    """A dataset on disk is invalid or inconsistent; the message names the file and field."""


class DatasetFileNotFoundError(DatasetError, FileNotFoundError):
    """A file the dataset metadata requires is missing; the message names the path."""


def next_chunk_file(chunk_index: int, file_index: int, chunks_size: int) -> tuple[int, int]:
    """Return the (chunk, file) indices after the given ones; a chunk holds ``chunks_size`` files."""
    if file_index >= chunks_size - 1:
        return chunk_index + 1, 0
    return chunk_index, file_index + 1


def validate_features(features: dict[str, Any], where: str = "features") -> dict[str, dict[str, Any]]:
    """Check an info.json-style feature dict and return a normalised deep copy (shapes as int lists).

    Raises:
        ValueError: naming the key, for a non-dict spec, an unknown dtype, a bad shape, a '/' in a key,
            or a visual feature that is not HxWx3.
    """
    if not isinstance(features, dict) or not features:
        raise ValueError(f"{where}: expected a non-empty dict of feature specs, got {type(features).__name__}")
    out: dict[str, dict[str, Any]] = {}
    for key, spec in features.items():
        if not isinstance(key, str) or not key or "/" in key:
            raise ValueError(f"{where}: feature name {key!r} must be a non-empty string without '/'")
        if not isinstance(spec, dict) or "dtype" not in spec or "shape" not in spec:
            raise ValueError(f"{where}[{key!r}]: expected a dict with 'dtype' and 'shape', got {spec!r}")
        if spec["dtype"] not in KNOWN_DTYPES:
            raise ValueError(f"{where}[{key!r}].dtype: {spec['dtype']!r} is not one of {KNOWN_DTYPES}")
        shape = spec["shape"]
        if not isinstance(shape, (list, tuple)) or not shape or not all(
            isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape
        ):
            raise ValueError(f"{where}[{key!r}].shape: expected a non-empty list of positive ints, got {shape!r}")
        if spec["dtype"] in VISUAL_DTYPES and (len(shape) != 3 or shape[2] != 3):
            raise ValueError(f"{where}[{key!r}].shape: a {spec['dtype']} feature must be [H, W, 3], got {list(shape)}")
        if spec["dtype"] == "string" and list(shape) != [1]:
            raise ValueError(f"{where}[{key!r}].shape: a string feature must have shape [1], got {list(shape)}")
        norm = copy.deepcopy(spec)
        norm["shape"] = [int(d) for d in shape]
        norm.setdefault("names", None)
        out[key] = norm
    return out


def with_default_features(features: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Return ``features`` followed by LeRobot's default per-frame features (timestamp, indices).

    Raises:
        ValueError: if ``features`` redefines a default feature with another dtype or shape.
    """
    out = copy.deepcopy(features)
    for key, spec in DEFAULT_FEATURES.items():
        if key in out and (out[key]["dtype"], list(out[key]["shape"])) != (spec["dtype"], spec["shape"]):
            raise ValueError(f"features[{key!r}] is a LeRobot default feature and must be {spec}")
        out[key] = copy.deepcopy(spec)
    return out


def empty_info(
    fps: int,
    features: dict[str, dict[str, Any]],
    robot_type: str | None,
    chunks_size: int,
    data_files_size_in_mb: float,
    video_files_size_in_mb: float,
) -> dict[str, Any]:
    """Return the info.json of a dataset with no episode yet, in LeRobot's key order."""
    has_video = any(ft["dtype"] == "video" for ft in features.values())
    return {
        "codebase_version": CODEBASE_VERSION,
        "robot_type": robot_type,
        "total_episodes": 0,
        "total_frames": 0,
        "total_tasks": 0,
        "chunks_size": chunks_size,
        "data_files_size_in_mb": data_files_size_in_mb,
        "video_files_size_in_mb": video_files_size_in_mb,
        "fps": fps,
        "splits": {},
        "data_path": DATA_PATH,
        "video_path": VIDEO_PATH if has_video else None,
        "features": features,
    }


def comparable_features(features: dict[str, dict[str, Any]]) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Reduce a feature dict to {key: (dtype, shape)} for compatibility checks (ignores names/info)."""
    return {k: (ft["dtype"], tuple(int(d) for d in ft["shape"])) for k, ft in features.items()}
