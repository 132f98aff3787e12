"""Checks of the observation tensors a policy is given."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any


def check_observation_steps(obs: Mapping[str, Any], keys: Sequence[str], image_keys: Collection[str], n_obs_steps: int,
                            needs: str, image_shapes: Mapping[str, tuple[int, ...]] | None = None) -> None:
    """Checks every key of ``keys`` is in ``obs`` shaped ``(B, n_obs_steps, ...)``: 5 dims for images, 3 for vectors;
    with ``image_shapes``, each image's trailing ``(C, H, W)`` too.

    Raises:
        KeyError: a key missing (the message says what the policy ``needs``).
        ValueError: a wrong number of dims, observation steps or image shape (names the key and both shapes).
    """
    for key in keys:
        if key not in obs:
            raise KeyError(f"batch has no {key!r}; the policy needs {needs}")
        value = obs[key]
        ndim = 5 if key in image_keys else 3
        if value.ndim != ndim or value.shape[1] != n_obs_steps:
            raise ValueError(f"{key!r}: expected {ndim} dims (B, n_obs_steps={n_obs_steps}, ...), got "
                             f"{tuple(value.shape)}")
        if image_shapes is not None and key in image_shapes and tuple(value.shape[2:]) != image_shapes[key]:
            raise ValueError(f"{key!r}: expected images of shape (C, H, W) = {image_shapes[key]}, got "
                             f"{tuple(value.shape[2:])} (batch shape {tuple(value.shape)})")
