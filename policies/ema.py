"""Exponential moving average of a model's parameters, with diffusion_policy's warm-up decay schedule."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn


class EMA:
    """Shadow copy of a model's floating-point parameters, averaged once per optimizer step.

    Decay after ``n`` updates (diffusion_policy's ``EMAModel.get_decay``, capped at ``decay``)::

        s = n - update_after_step - 1
        d = 0                                                     if s <= 0
        d = clamp(1 - (1 + s / inv_gamma) ** -power, min_decay, decay)   otherwise
        shadow = d * shadow + (1 - d) * param

    The first updates copy the weights; the average then lengthens until ``d`` reaches ``decay``, the final
    decay (an average over roughly ``1 / (1 - decay)`` steps). With ``power=0.75`` (default) the schedule
    passes 0.99 at ~460 updates, 0.999 at ~10k and 0.9999 at ~215k; ``power=2/3`` (DP's default) suits runs
    of millions of steps. Buffers (e.g. normaliser stats) are not averaged: the model's own are used.

    Raises ``ValueError`` for hyper-parameters out of range.
    """

    def __init__(
        self,
        model: nn.Module,
        decay: float = 0.9999,
        power: float = 0.75,
        inv_gamma: float = 1.0,
        min_decay: float = 0.0,
        update_after_step: int = 0,
    ) -> None:
        if not 0.0 <= min_decay <= decay < 1.0:
            raise ValueError(f"need 0 <= min_decay <= decay < 1, got min_decay={min_decay}, decay={decay}")
        if power <= 0 or inv_gamma <= 0:
            raise ValueError(f"power and inv_gamma must be > 0, got power={power}, inv_gamma={inv_gamma}")
        self.power, self.inv_gamma = float(power), float(inv_gamma)
        self.min_decay, self.decay = float(min_decay), float(decay)
        self.update_after_step = int(update_after_step)
        self.num_updates = 0
        self.shadow: dict[str, Tensor] = {
            name: p.detach().clone() for name, p in model.named_parameters() if p.is_floating_point()
        }

    def get_decay(self, num_updates: int) -> float:
        """Decay used for the update made after ``num_updates`` previous updates (formula in the class doc)."""
        step = num_updates - self.update_after_step - 1
        if step <= 0:
            return 0.0
        value = 1.0 - (1.0 + step / self.inv_gamma) ** -self.power
        return max(self.min_decay, min(value, self.decay))

    def _params(self, model: nn.Module) -> list[tuple[Tensor, Tensor]]:
        params = {name: p for name, p in model.named_parameters() if p.is_floating_point()}
        if params.keys() != self.shadow.keys():
            missing = sorted(self.shadow.keys() - params.keys())
            extra = sorted(params.keys() - self.shadow.keys())
            raise ValueError(f"model parameters do not match the EMA: missing {missing[:5]}, unexpected {extra[:5]}")
        return [(self.shadow[name], params[name]) for name in self.shadow]

    @torch.no_grad()
    def step(self, model: nn.Module) -> None:
        """Fold the model's current parameters into the average; call once after every optimizer step."""
        weight = 1.0 - self.get_decay(self.num_updates)
        for shadow, param in self._params(model):
            shadow.lerp_(param.detach(), weight)
        self.num_updates += 1

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Overwrite the model's parameters with the averaged ones."""
        for shadow, param in self._params(model):
            param.copy_(shadow)

    @contextmanager
    def applied(self, model: nn.Module) -> Iterator[nn.Module]:
        """Swap the EMA weights into ``model`` for the ``with`` block, then restore the trained weights.

        Use it around every evaluation and checkpoint export of EMA weights.
        """
        pairs = self._params(model)
        backup = [param.detach().clone() for _, param in pairs]
        self.copy_to(model)
        try:
            yield model
        finally:
            with torch.no_grad():
                for (_, param), saved in zip(pairs, backup):
                    param.copy_(saved)

    def state_dict(self) -> dict[str, Tensor]:
        """Tensors only (safetensors-ready): ``num_updates`` and ``shadow.<param name>``."""
        state = {f"shadow.{name}": t for name, t in self.shadow.items()}
        state["num_updates"] = torch.tensor(self.num_updates, dtype=torch.int64)
        return state

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore from :meth:`state_dict`; ``KeyError`` naming a missing or unexpected entry."""
        expected = {f"shadow.{name}" for name in self.shadow} | {"num_updates"}
        if state.keys() != expected:
            missing, extra = sorted(expected - state.keys()), sorted(state.keys() - expected)
            raise KeyError(f"EMA state mismatch: missing {missing[:5]}, unexpected {extra[:5]}")
        with torch.no_grad():
            for name, shadow in self.shadow.items():
                src = state[f"shadow.{name}"]
                if src.shape != shadow.shape:
                    raise ValueError(f"EMA state 'shadow.{name}' has shape {tuple(src.shape)}, expected {tuple(shadow.shape)}")
                shadow.copy_(src)
        self.num_updates = int(state["num_updates"])
