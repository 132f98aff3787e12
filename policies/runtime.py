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


def resolve_device(device: str | torch.device) -> torch.device:
    """The torch device for a ``device`` setting: ``cpu``, ``cuda``, ``cuda:<i>`` or ``auto`` (cuda when available).

    Raises:
        ValueError: an unknown device, or a CUDA device on a machine without CUDA (no silent fallback; use ``auto``).
    """
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device: unknown device {device!r} (use cpu, cuda, cuda:<i> or auto)") from err
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but CUDA is not available (use device='auto' to fall back to cpu)")
    return resolved


def print_figures(figures: dict) -> None:
    """Prints headline figures machine-readably, one ``name: value`` per line (DESIGN.md section 5)."""
    for name, value in figures.items():
        if isinstance(value, float):
            print(f"{name}: {value:.4f}")
        elif isinstance(value, (int, str)):
            print(f"{name}: {value}")
