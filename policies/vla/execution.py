"""Temporal ensembling of action chunks (ACT): replan every step, execute the weighted mean of all predictions.

The prediction of step ``s`` made ``k``-th (``k = 0``: the oldest chunk that covers ``s``) gets the weight
``exp(-decay * k)``; ``decay > 0`` trusts older predictions more (ACT's choice, smooth motion), ``decay = 0`` is a
plain mean.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


class TemporalEnsembler:
    """Running weighted sums over the next ``horizon`` steps of a batch of ``B`` envs stepping in lockstep."""

    def __init__(self, decay: float, horizon: int) -> None:
        if decay < 0 or horizon < 1:
            raise ValueError(f"decay must be >= 0 and horizon >= 1, got {decay}, {horizon}")
        self.decay = float(decay)
        self.horizon = int(horizon)
        self.reset()

    def reset(self) -> None:
        """Forget every pending prediction (start of an episode)."""
        self._sum: Tensor | None = None  # (B, H, A) sum of w * action per future step
        self._weight: Tensor | None = None  # (B, H, 1) sum of weights
        self._count: Tensor | None = None  # (H,) predictions so far per future step

    def update(self, chunk: Tensor) -> Tensor:
        """Add a chunk ``(B, H, A)`` predicted now and return the ensembled action ``(B, A)`` for the current step."""
        if self._sum is None or self._sum.shape != chunk.shape:
            self._sum = torch.zeros_like(chunk)
            self._weight = torch.zeros_like(chunk[..., :1])
            self._count = torch.zeros(chunk.shape[1], dtype=chunk.dtype, device=chunk.device)
        weight = torch.exp(-self.decay * self._count)[None, :, None]
        self._sum = self._sum + weight * chunk
        self._weight = self._weight + weight
        self._count = self._count + 1
        action = self._sum[:, 0] / self._weight[:, 0]
        self._sum = torch.cat([self._sum[:, 1:], torch.zeros_like(self._sum[:, :1])], dim=1)
        self._weight = torch.cat([self._weight[:, 1:], torch.zeros_like(self._weight[:, :1])], dim=1)
        self._count = torch.cat([self._count[1:], self._count.new_zeros(1)])
        return action


def ensemble_weights(decay: float, n: int) -> list[float]:
    """The weights ``exp(-decay * k)``, ``k = 0 .. n - 1``, of ``n`` predictions of one step, oldest first."""
    return [math.exp(-decay * k) for k in range(n)]
