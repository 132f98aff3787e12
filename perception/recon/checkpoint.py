"""Saving and loading a reconstruction model (:mod:`perception.model_files`: weights + config, atomic)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from perception.model_files import CONFIG, WEIGHTS, load_model, save_model
from perception.recon.config import ReconConfig
from perception.recon.model import ReconModel

__all__ = ["CONFIG", "WEIGHTS", "load_recon", "save_recon"]


def save_recon(model: ReconModel, directory: str | os.PathLike) -> Path:
    """Saves ``model``'s weights and config into ``directory`` (created if missing); returns it."""
    return save_model(model, directory)


def load_recon(directory: str | os.PathLike, **overrides: Any) -> ReconModel:
    """The model saved in ``directory``, in eval mode; ``overrides`` replace config fields that keep the weights'
    shapes (``frozen=True`` for the ablation, ``chunk_views``, ``muon_steps``).

    Raises:
        FileNotFoundError: no saved model there. ValueError: an unknown or bad override (naming the field).
        RuntimeError: weights that do not fit the config.
    """
    return load_model(directory, ReconModel, ReconConfig, "reconstruction", **overrides)
