"""Per-episode feature statistics and their aggregation, computed the way LeRobot does.

Per feature: ``min``, ``max``, ``mean``, ``std`` (population), ``count`` (frames, shape [1]) and the
``q01``/``q99`` quantiles. Low-dim features reduce over frames (a [1]-shaped feature keeps shape [1]);
images/videos reduce over frames and pixels per channel, scaled to [0, 1], giving shape [3, 1, 1].
Aggregation over episodes is exact for min/max/mean/std (parallel variance formula); quantiles are
count-weighted means of the episode quantiles, as in LeRobot, so they are approximate.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

STAT_NAMES = ("min", "max", "mean", "std", "count", "q01", "q99")
Stats = dict[str, dict[str, np.ndarray]]


def feature_stats(values: np.ndarray, dtype: str) -> dict[str, np.ndarray]:
    """Statistics of one episode's (N, *shape) values of a feature with info.json ``dtype``.

    Raises:
        ValueError: if ``values`` is empty or a visual feature is not (N, H, W, 3).
    """
    values = np.asarray(values)
    if values.shape[0] == 0:
        raise ValueError("cannot compute stats of an empty episode")
    if dtype in ("video", "image"):
        if values.ndim != 4 or values.shape[-1] != 3:
            raise ValueError(f"visual stats need (N, H, W, 3) frames, got {values.shape}")
        # (N, H, W, 3) -> (3, N*H*W), stats per channel -> (3, 1, 1) in [0, 1]
        flat = values.reshape(-1, 3).T.astype(np.float64) / 255.0
        reduce = {"axis": 1}
        shape: tuple[int, ...] = (3, 1, 1)
    else:
        flat = values.astype(np.float64)
        reduce = {"axis": 0}
        shape = (1,) if values.ndim == 1 else values.shape[1:]
    q01, q99 = np.quantile(flat, [0.01, 0.99], **reduce)
    stats = {
        "min": np.min(flat, **reduce),
        "max": np.max(flat, **reduce),
        "mean": np.mean(flat, **reduce),
        "std": np.std(flat, **reduce),
        "q01": q01,
        "q99": q99,
    }
    out = {k: np.asarray(v, dtype=np.float64).reshape(shape) for k, v in stats.items()}
    out["count"] = np.array([values.shape[0]], dtype=np.int64)
    return out


def aggregate_feature_stats(per_episode: list[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Combine one feature's stats from several episodes into dataset stats.

    Raises:
        ValueError: if the list is empty.
    """
    if not per_episode:
        raise ValueError("no stats to aggregate")
    means = np.stack([np.asarray(s["mean"], np.float64) for s in per_episode])
    variances = np.stack([np.asarray(s["std"], np.float64) ** 2 for s in per_episode])
    counts = np.stack([np.asarray(s["count"], np.float64).reshape(1) for s in per_episode])
    total = counts.sum(axis=0)
    weights = counts.reshape((-1,) + (1,) * (means.ndim - 1))
    mean = (means * weights).sum(axis=0) / total
    variance = ((variances + (means - mean) ** 2) * weights).sum(axis=0) / total
    out = {
        "min": np.min(np.stack([s["min"] for s in per_episode]), axis=0),
        "max": np.max(np.stack([s["max"] for s in per_episode]), axis=0),
        "mean": mean,
        "std": np.sqrt(np.maximum(variance, 0.0)),
        "count": total.astype(np.int64),
    }
    for q in ("q01", "q99"):
        if all(q in s for s in per_episode):
            out[q] = (np.stack([np.asarray(s[q], np.float64) for s in per_episode]) * weights).sum(axis=0) / total
    return out


def aggregate_stats(per_episode: Iterable[Mapping[str, Mapping[str, np.ndarray]]]) -> Stats:
    """Aggregate a sequence of per-episode {feature: stats} dicts over the union of their features."""
    by_key: dict[str, list[Mapping[str, np.ndarray]]] = {}
    for episode_stats in per_episode:
        for key, stats in episode_stats.items():
            by_key.setdefault(key, []).append(stats)
    return {key: aggregate_feature_stats(stats) for key, stats in by_key.items()}


def stats_to_json(stats: Mapping[str, Mapping[str, np.ndarray]]) -> dict[str, dict[str, Any]]:
    """Turn stats into JSON-ready nested lists (the meta/stats.json format)."""
    return {key: {name: np.asarray(v).tolist() for name, v in s.items()} for key, s in stats.items()}


def stats_from_json(obj: Any, where: str) -> Stats:
    """Parse meta/stats.json content into {feature: {stat: float ndarray}}.

    Raises:
        TypeError: naming ``where`` and the key, if the content is not a dict of dicts.
        ValueError: naming ``where`` and the key, if a statistic is not numeric.
    """
    if not isinstance(obj, dict):
        raise TypeError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    out: Stats = {}
    for key, s in obj.items():
        if not isinstance(s, dict):
            raise TypeError(f"{where}[{key!r}]: expected an object of statistics")
        try:
            out[key] = {
                name: np.asarray(v, dtype=np.int64 if name == "count" else np.float64) for name, v in s.items()
            }
        except (TypeError, ValueError) as err:
            raise ValueError(f"{where}[{key!r}]: non-numeric statistic ({err})") from err
    return out
