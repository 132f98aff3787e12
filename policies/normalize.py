"""Feature kinds and a normaliser whose statistics live in the policy's ``state_dict``.

Statistics come from a LeRobot ``meta/stats.json`` (``{key: {"min", "max", "mean", "std", ...}}``) and are
stored as buffers, so ``model.safetensors`` carries them: a loaded policy normalises exactly as the one
that was trained, with no side file and no env wrapper (CleanRL #425, #532).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

NORM_MODES = ("min_max", "mean_std", "identity")
FEATURE_KINDS = ("state", "env", "visual", "depth", "action")
# LeRobot bookkeeping columns; they are never model inputs.
META_KEYS = frozenset({"timestamp", "frame_index", "episode_index", "index", "task_index", "task"})
_STATS_FIELDS = {"min_max": ("min", "max"), "mean_std": ("mean", "std")}
_IMAGE_DTYPES = ("image", "video")


def feature_kind(key: str, spec: Mapping[str, Any]) -> str | None:
    """Classify one LeRobot info.json feature.

    Returns ``"action"``, ``"visual"`` (``observation.images.*``), ``"depth"`` (``observation.depth.*``),
    ``"env"`` (``observation.environment_state``), ``"state"`` (any other float ``observation.*``), or
    ``None`` for bookkeeping keys (``timestamp``, ``episode_index``, ``task``, ``next.*``, ...).
    Raises ``ValueError`` naming the key when the spec lacks ``dtype``/``shape`` or the key is unknown.
    """
    if key in META_KEYS or key.startswith("next."):
        return None
    for field in ("dtype", "shape"):
        if field not in spec:
            raise ValueError(f"feature {key!r} has no {field!r} field (LeRobot info.json format)")
    dtype = spec["dtype"]
    if key == "action":
        return "action"
    if key.startswith("observation.images."):
        if dtype not in _IMAGE_DTYPES:
            raise ValueError(f"feature {key!r}: dtype must be one of {_IMAGE_DTYPES}, got {dtype!r}")
        return "visual"
    if key.startswith("observation.depth."):
        return "depth"
    if key == "observation.environment_state":
        return "env"
    if key.startswith("observation.") and dtype in ("float32", "float64"):
        return "state"
    raise ValueError(f"feature {key!r} (dtype {dtype!r}) is neither an observation, the action nor a LeRobot meta key")


def image_chw(key: str, spec: Mapping[str, Any]) -> tuple[int, int, int]:
    """Return ``(channels, height, width)`` of an image feature stored HxWxC (LeRobot) or CxHxW.

    The layout is read from ``names`` when given, else a trailing dim of 1, 3 or 4 means channels-last.
    Raises ``ValueError`` naming the key when the shape is not 3-D.
    """
    shape = [int(s) for s in spec["shape"]]
    if len(shape) != 3:
        raise ValueError(f"feature {key!r}: image shape must have 3 dims, got {shape}")
    names = [str(n).lower() for n in (spec.get("names") or [])]
    channels_last = names[-1].startswith("channel") if len(names) == 3 else shape[-1] in (1, 3, 4)
    if channels_last:
        return shape[2], shape[0], shape[1]
    return shape[0], shape[1], shape[2]


def _buffer_name(key: str) -> str:
    return key.replace(".", "__")


class _KeyStats(nn.Module):
    """Buffers of one key's statistics (``min``/``max`` or ``mean``/``std``)."""

    def __init__(self, values: Mapping[str, Tensor]) -> None:
        super().__init__()
        for name, value in values.items():
            self.register_buffer(name, value)


class Normalizer(nn.Module):
    """Normalise inputs and un-normalise actions with per-key statistics held as buffers.

    Modes (per key):
      * ``min_max``: ``[min, max] -> [-1, 1]``. A dimension whose range is below ``eps`` is only
        shifted (``x - (min + max) / 2``), so a constant input maps to 0 instead of dividing by zero.
      * ``mean_std``: ``(x - mean) / std``; a ``std`` below ``eps`` is treated as 1.
      * ``identity``: unchanged (images are already floats in [0, 1]).

    Statistics broadcast over leading dims, so ``(B, D)`` and ``(B, T, D)`` tensors both work. Built with
    ``stats=None`` (e.g. before ``load_state_dict``) the buffers are placeholders (``inf``), and using them
    raises ``RuntimeError`` until a state dict fills them.

    Args:
        features: LeRobot info.json-style ``{key: {"dtype", "shape", "names"}}``.
        modes: ``{key: mode}`` for every key to handle; keys absent here pass through untouched.
        stats: ``{key: {"min": ..., "max": ..., "mean": ..., "std": ...}}`` (lists, arrays or tensors).
        eps: smallest range/std treated as non-zero, in the feature's own units.

    Raises:
        ValueError: unknown mode, a key missing from ``features`` or stats of the wrong shape.
        KeyError: ``stats`` lacks a key (or field) that its mode needs; the message names both.
    """

    def __init__(
        self,
        features: Mapping[str, Mapping[str, Any]],
        modes: Mapping[str, str],
        stats: Mapping[str, Mapping[str, Any]] | None = None,
        eps: float = 1e-4,
    ) -> None:
        super().__init__()
        self.modes = dict(modes)
        self.eps = float(eps)
        self.stats = nn.ModuleDict()
        for key, mode in self.modes.items():
            if mode not in NORM_MODES:
                raise ValueError(f"normalisation mode for {key!r} must be one of {NORM_MODES}, got {mode!r}")
            if key not in features:
                raise ValueError(f"normalisation mode given for {key!r}, which is not in features")
            if mode == "identity":
                continue
            shape = tuple(int(s) for s in features[key]["shape"])
            values = {f: self._stat(key, f, shape, stats) for f in _STATS_FIELDS[mode]}
            self.stats[_buffer_name(key)] = _KeyStats(values)
        self._ready = stats is not None
        self.register_load_state_dict_post_hook(lambda module, _keys: setattr(module, "_ready", False))

    @staticmethod
    def _stat(key: str, field: str, shape: tuple[int, ...], stats: Mapping[str, Mapping[str, Any]] | None) -> Tensor:
        if stats is None:
            return torch.full(shape, float("inf"))
        if key not in stats:
            raise KeyError(f"no normalisation stats for {key!r} (needed by its mode); stats has {sorted(stats)}")
        if field not in stats[key]:
            raise KeyError(f"normalisation stats for {key!r} have no {field!r} field")
        value = torch.as_tensor(np.asarray(stats[key][field], dtype=np.float32))
        if value.numel() != int(np.prod(shape)):
            raise ValueError(f"stats[{key!r}][{field!r}] has shape {tuple(value.shape)}, feature shape is {shape}")
        return value.reshape(shape).clone()

    def _check_ready(self) -> None:
        if self._ready:
            return
        for name, module in self.stats.items():
            for field, buf in module.named_buffers():
                if not torch.isfinite(buf).all():
                    key = name.replace("__", ".")
                    raise RuntimeError(
                        f"normalisation stats {key!r}.{field} are placeholders or not finite: build the policy "
                        "with dataset stats or load a checkpoint's state dict"
                    )
        self._ready = True

    def _scale_offset(self, key: str) -> tuple[Tensor, Tensor]:
        """Return ``(scale, offset)`` with ``normalised = x * scale + offset``."""
        buffers = self.stats[_buffer_name(key)]
        if self.modes[key] == "min_max":
            low, high = buffers.min, buffers.max
            span = high - low
            flat = span < self.eps
            scale = torch.where(flat, torch.ones_like(span), 2.0 / torch.where(flat, torch.ones_like(span), span))
            offset = torch.where(flat, -(low + high) / 2, -1.0 - low * scale)
            return scale, offset
        std = torch.where(buffers.std < self.eps, torch.ones_like(buffers.std), buffers.std)
        return 1.0 / std, -buffers.mean / std

    def normalize(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Return a shallow copy of ``batch`` with every key that has a non-identity mode normalised.

        Raises ``RuntimeError`` when the statistics are still placeholders.
        """
        self._check_ready()
        out = dict(batch)
        for key, mode in self.modes.items():
            if mode != "identity" and key in out:
                scale, offset = self._scale_offset(key)
                out[key] = out[key] * scale + offset
        return out

    def unnormalize(self, key: str, x: Tensor) -> Tensor:
        """Map normalised values of ``key`` back to its units; ``KeyError`` if the key has no mode."""
        if key not in self.modes:
            raise KeyError(f"normaliser has no mode for {key!r}; it handles {sorted(self.modes)}")
        if self.modes[key] == "identity":
            return x
        self._check_ready()
        scale, offset = self._scale_offset(key)
        return (x - offset) / scale

    def unnormalize_action(self, x: Tensor) -> Tensor:
        """Map a normalised ``action`` tensor (any leading dims) back to metres."""
        return self.unnormalize("action", x)
