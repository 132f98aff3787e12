"""Saving and loading a streaming model: ``<dir>/model.safetensors`` (weights) + ``<dir>/config.json`` (the
:class:`StreamingConfig`), each written atomically (temp file beside it, fsync, rename), as DESIGN.md section 4 asks.

(``policies.datasets.atomic`` has the same write; perception/ may not import policies/, so it is repeated here.)
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
from pathlib import Path
from typing import Any

import safetensors.torch

from perception.streaming.config import StreamingConfig
from perception.streaming.model import StreamingModel

WEIGHTS, CONFIG = "model.safetensors", "config.json"


def _atomic_write(path: Path, data: bytes) -> None:
    """Writes ``data`` to ``path`` through a hidden temp file renamed into place (readers never see half)."""
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_streaming(model: StreamingModel, directory: str | os.PathLike) -> Path:
    """Saves ``model``'s weights and config into ``directory`` (created if missing); returns it."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {name: t.detach().cpu().contiguous() for name, t in model.state_dict().items()}
    _atomic_write(directory / WEIGHTS, safetensors.torch.save(tensors))
    _atomic_write(directory / CONFIG, json.dumps(dataclasses.asdict(model.config), indent=4).encode())
    return directory


def load_streaming(directory: str | os.PathLike, **overrides: Any) -> StreamingModel:
    """The model saved in ``directory``, in eval mode; ``overrides`` replace config fields that do not change the
    weights' shapes (e.g. ``memory="window"`` to run the same weights without sinks).

    Raises:
        FileNotFoundError: no saved model there. ValueError: a bad override (naming the field).
        RuntimeError: weights that do not fit the config.
    """
    directory = Path(directory)
    if not (directory / WEIGHTS).is_file() or not (directory / CONFIG).is_file():
        raise FileNotFoundError(f"no streaming model in {directory} (need {WEIGHTS} and {CONFIG})")
    fields = json.loads((directory / CONFIG).read_text())
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        raise ValueError(f"load_streaming: unknown StreamingConfig fields {unknown}")
    model = StreamingModel(StreamingConfig(**(fields | overrides)))
    model.load_state_dict(safetensors.torch.load_file(directory / WEIGHTS))
    return model.eval()
