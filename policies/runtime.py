"""Run-time plumbing shared by training and evaluation: seeding and device selection."""

from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seeds Python's, NumPy's and torch's global generators (env resets are seeded per episode)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(device: str) -> torch.device:
    """The torch device for a ``device`` setting: ``cpu``, ``cuda`` or ``auto`` (cuda when available).

    Raises:
        RuntimeError: ``device="cuda"`` on a machine without CUDA (no silent fallback).
        ValueError: an unknown setting.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device=cuda but torch sees no CUDA device; use device=cpu or device=auto")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ValueError(f"device must be cpu, cuda or auto, got {device!r}")
    return torch.device(device)


def print_figures(figures: dict) -> None:
    """Prints headline figures machine-readably, one ``name: value`` per line (DESIGN.md section 5)."""
    for name, value in figures.items():
        if isinstance(value, float):
            print(f"{name}: {value:.4f}")
        elif isinstance(value, (int, str)):
            print(f"{name}: {value}")
