"""Saving and loading a streaming model (:mod:`perception.model_files`: weights + config, atomic)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from perception.model_files import CONFIG, WEIGHTS, load_model, save_model
from perception.streaming.config import StreamingConfig
from perception.streaming.model import StreamingModel

__all__ = ["CONFIG", "WEIGHTS", "load_streaming", "save_streaming"]


def save_streaming(model: StreamingModel, directory: str | os.PathLike) -> Path:
    """Saves ``model``'s weights and config into ``directory`` (created if missing); returns it."""
    return save_model(model, directory)


def load_streaming(directory: str | os.PathLike, **overrides: Any) -> StreamingModel:
    """The model saved in ``directory``, in eval mode; ``overrides`` replace config fields that keep the weights'
    shapes (e.g. ``memory="window"`` to run the same weights without sinks).

    Raises:
        FileNotFoundError: no saved model there. ValueError: an unknown or bad override (naming the field).
        RuntimeError: weights that do not fit the config.
    """
    return load_model(directory, StreamingModel, StreamingConfig, "streaming", **overrides)
