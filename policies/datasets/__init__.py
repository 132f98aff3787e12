"""LeRobotDataset v3.0 datasets: crash-safe writer, reader, stats, training windows, video helpers.

``ChunkWindowDataset`` and ``TaskBatch`` (which need torch) are imported on first use, so data-collection processes
that only write do not pay for importing torch.
"""

from __future__ import annotations

from typing import Any

from policies.datasets.features import feature_from_space, features_from_spaces
from policies.datasets.layout import (
    CODEBASE_VERSION,
    DEFAULT_FEATURES,
    DatasetError,
    DatasetFileNotFoundError,
)
from policies.datasets.reader import LeRobotDatasetReader
from policies.datasets.stats import aggregate_stats, feature_stats
from policies.datasets.video import VideoEncoding, read_video, write_video
from policies.datasets.writer import LeRobotDatasetWriter

__all__ = [
    "CODEBASE_VERSION",
    "DEFAULT_FEATURES",
    "ChunkWindowDataset",
    "DatasetError",
    "DatasetFileNotFoundError",
    "LeRobotDatasetReader",
    "LeRobotDatasetWriter",
    "TaskBatch",
    "VideoEncoding",
    "aggregate_stats",
    "feature_from_space",
    "feature_stats",
    "features_from_spaces",
    "read_video",
    "write_video",
]


def __getattr__(name: str) -> Any:
    if name in ("ChunkWindowDataset", "TaskBatch"):
        from policies.datasets import windows

        return getattr(windows, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
