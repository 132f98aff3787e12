"""A perception model on disk: ``<dir>/model.safetensors`` (weights) + ``<dir>/config.json`` (its dataclass config),
each written atomically (:func:`perception.atomic.atomic_write`). Used by the streaming and reconstruction models."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import safetensors.torch
from torch import nn

from perception.atomic import atomic_write

WEIGHTS, CONFIG = "model.safetensors", "config.json"


def save_model(model: nn.Module, directory: str | os.PathLike) -> Path:
    """Saves ``model``'s weights and its ``config`` dataclass into ``directory`` (created if missing); returns it."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {name: t.detach().cpu().contiguous() for name, t in model.state_dict().items()}
    atomic_write(directory / WEIGHTS, safetensors.torch.save(tensors))
    atomic_write(directory / CONFIG, json.dumps(dataclasses.asdict(model.config), indent=4).encode())
    return directory


def load_model(directory: str | os.PathLike, model_class: type[nn.Module], config_class: type, what: str,
               **overrides: Any) -> nn.Module:
    """The ``model_class`` saved in ``directory``, in eval mode; ``overrides`` replace config fields that keep the
    weights' shapes.

    Raises:
        FileNotFoundError: no saved model there (names ``what`` and the directory). ValueError: an unknown or bad
            override (naming the field). RuntimeError: weights that do not fit the config.
    """
    directory = Path(directory)
    if not (directory / WEIGHTS).is_file() or not (directory / CONFIG).is_file():
        raise FileNotFoundError(f"no {what} model in {directory} (need {WEIGHTS} and {CONFIG})")
    fields = json.loads((directory / CONFIG).read_text())
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        raise ValueError(f"unknown {config_class.__name__} fields {unknown}")
    model = model_class(config_class(**(fields | overrides)))
    model.load_state_dict(safetensors.torch.load_file(directory / WEIGHTS))
    return model.eval()
