"""Describe gymnasium observation/action spaces as LeRobot info.json features."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from policies.datasets.layout import validate_features

TASK_KEY = "task"  # the instruction: an observation of language-conditioned envs, LeRobot's per-frame task


def feature_from_space(key: str, space: spaces.Space) -> dict[str, Any]:
    """info.json feature of one space: uint8 (H, W, 3) Box -> "video", float Box -> "float32",
    integer Box / Discrete -> "int64", MultiBinary -> "bool", Text -> "string".

    Raises:
        ValueError: naming ``key``, for a space kind that has no LeRobot feature type.
    """
    if isinstance(space, spaces.Box):
        shape = list(space.shape) or [1]
        if space.dtype == np.uint8 and len(shape) == 3 and shape[2] == 3:
            return {"dtype": "video", "shape": shape, "names": ["height", "width", "channels"]}
        if np.issubdtype(space.dtype, np.floating):
            return {"dtype": "float32", "shape": shape, "names": None}
        if np.issubdtype(space.dtype, np.integer):
            return {"dtype": "int64", "shape": shape, "names": None}
    elif isinstance(space, spaces.Discrete):
        return {"dtype": "int64", "shape": [1], "names": None}
    elif isinstance(space, spaces.MultiBinary):
        return {"dtype": "bool", "shape": [int(np.prod(space.shape))], "names": None}
    elif isinstance(space, spaces.Text):
        return {"dtype": "string", "shape": [1], "names": None}
    raise ValueError(f"space of {key!r} ({space}) has no LeRobot feature type")


def features_from_spaces(
    observation_space: spaces.Space, action_space: spaces.Space, action_key: str = "action"
) -> dict[str, dict[str, Any]]:
    """Features for a dataset recording an env: one per observation key (a Dict space's keys, or
    ``observation.state`` for a bare space) plus ``action_key``.

    An observation named ``task`` (the language instruction) is not a feature: LeRobot stores it per
    frame as ``task_index`` into ``meta/tasks.parquet``, and the writer takes it as ``add_frame``'s
    ``task``.

    Raises:
        ValueError: naming the key, for a space without a LeRobot feature type or a key with '/'.
    """
    observations = observation_space.spaces if isinstance(observation_space, spaces.Dict) else {
        "observation.state": observation_space
    }
    features = {key: feature_from_space(key, space) for key, space in observations.items() if key != TASK_KEY}
    if action_key in features:
        raise ValueError(f"observation space already has a key named {action_key!r}")
    features[action_key] = feature_from_space(action_key, action_space)
    return validate_features(features, where="features_from_spaces")
