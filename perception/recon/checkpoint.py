"""Saving and loading a reconstruction model: ``<dir>/model.safetensors`` (weights) + ``<dir>/config.json`` (its
:class:`ReconConfig`), each written atomically (:func:`perception.atomic.atomic_write`)."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import safetensors.torch

from perception.atomic import atomic_write
from perception.recon.config import ReconConfig
from perception.recon.model import ReconModel

WEIGHTS, CONFIG = "model.safetensors", "config.json"


def save_recon(model: ReconModel, directory: str | os.PathLike) -> Path:
    """Saves ``model``'s weights and config into ``directory`` (created if missing); returns it."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {name: t.detach().cpu().contiguous() for name, t in model.state_dict().items()}
    atomic_write(directory / WEIGHTS, safetensors.torch.save(tensors))
    atomic_write(directory / CONFIG, json.dumps(dataclasses.asdict(model.config), indent=4).encode())
    return directory


def load_recon(directory: str | os.PathLike, **overrides: Any) -> ReconModel:
    """The model saved in ``directory``, in eval mode; ``overrides`` replace config fields that keep the weights'
    shapes (``frozen=True`` for the ablation, ``chunk_views``, ``muon_steps``).

    Raises:
        FileNotFoundError: no saved model there. ValueError: an unknown or bad override (naming the field).
        RuntimeError: weights that do not fit the config.
    """
    directory = Path(directory)
    if not (directory / WEIGHTS).is_file() or not (directory / CONFIG).is_file():
        raise FileNotFoundError(f"no reconstruction model in {directory} (need {WEIGHTS} and {CONFIG})")
    fields = json.loads((directory / CONFIG).read_text())
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        raise ValueError(f"load_recon: unknown ReconConfig fields {unknown}")
    model = ReconModel(ReconConfig(**(fields | overrides)))
    model.load_state_dict(safetensors.torch.load_file(directory / WEIGHTS))
    return model.eval()
