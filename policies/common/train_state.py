"""The resumable state of the stack's small single-model trainers (native reward model, streaming model, recon model).

Each of them trains one ``nn.Module`` with AdamW under a linear warm-up and a cosine decay to 10% of the peak learning
rate, draws its batches from a numpy generator, and checkpoints everything a killed run needs to continue on the same
curve: weights, optimiser, schedule, step, the numpy / torch / Python RNG states and the model's config (a resume
with another model config is refused). The policy trainer (:mod:`policies.trainer`) has its own checkpoint format
(``pretrained_model/`` + ``training_state/``, LeRobot's layout); this one is a single atomic file.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from policies.datasets.atomic import atomic_path


@dataclass
class TrainState:
    """Everything a resumed run continues from; ``extra`` holds what a trainer adds (e.g. its tokenizer)."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    rng: np.random.Generator
    step: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def warmup_cosine(optimizer: torch.optim.Optimizer, warmup_steps: int, steps: int,
                  floor: float = 0.1) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over ``warmup_steps``, then a cosine decay to ``floor`` x the peak at ``steps``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        done = min((step - warmup_steps) / max(1, steps - warmup_steps), 1.0)
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * done))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def new_state(model: nn.Module, lr: float, weight_decay: float, warmup_steps: int, steps: int, seed: int,
              **extra: Any) -> TrainState:
    """A fresh state around ``model``: AdamW, :func:`warmup_cosine`, a numpy generator seeded by ``seed``."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    return TrainState(model, optimizer, warmup_cosine(optimizer, warmup_steps, steps), np.random.default_rng(seed),
                      extra=dict(extra))


def save_state(state: TrainState, path: Path, config: Mapping[str, Any], **payload: Any) -> None:
    """Write ``state`` to ``path`` atomically with the model's ``config`` (a dict) and any further ``payload``."""
    data = {"model": state.model.state_dict(), "optimizer": state.optimizer.state_dict(),
            "scheduler": state.scheduler.state_dict(), "step": state.step, "config": dict(config),
            "numpy_rng": state.rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
            "python_rng": random.getstate(), **payload}
    with atomic_path(path) as tmp:
        torch.save(data, tmp)


def load_state(path: Path, config: Mapping[str, Any], device: torch.device,
               build: Callable[[dict[str, Any]], TrainState]) -> TrainState:
    """The state saved at ``path``: ``build(payload)`` makes a fresh state, which the saved one is loaded into.

    Raises:
        ValueError: the checkpoint holds another model config (names both).
    """
    payload = torch.load(path, map_location=device, weights_only=False)
    if payload["config"] != dict(config):
        raise ValueError(f"cannot resume {path}: it holds model config {payload['config']}, this run asks for "
                         f"{dict(config)}")
    state = build(payload)
    state.model.load_state_dict(payload["model"])
    state.optimizer.load_state_dict(payload["optimizer"])
    state.scheduler.load_state_dict(payload["scheduler"])
    state.step = int(payload["step"])
    state.rng.bit_generator.state = payload["numpy_rng"]
    torch.set_rng_state(payload["torch_rng"])
    random.setstate(payload["python_rng"])
    return state


def optimizer_step(state: TrainState, loss: torch.Tensor, grad_clip: float) -> None:
    """Backward of ``loss``, gradient-norm clipping at ``grad_clip``, an optimiser and a schedule step."""
    state.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(state.model.parameters(), grad_clip)
    state.optimizer.step()
    state.scheduler.step()


def run_steps(state: TrainState, step: Callable[[], Mapping[str, float]], steps: int, log_every: int,
              checkpoint_every: int, save: Callable[[], None], tracker: Any = None,
              at_checkpoint: Callable[[], Mapping[str, float]] | None = None) -> dict[str, float]:
    """Runs ``step`` until ``state.step == steps``; returns the last logged figures.

    Every ``log_every`` steps (and at the end) the mean of each figure since the last log, ``train/lr`` and
    ``train/steps_per_s`` go to ``tracker``; every ``checkpoint_every`` steps (and at the end) ``at_checkpoint``'s
    figures (e.g. a validation) are logged and added, then ``save()`` writes the checkpoint.
    """
    logged: list[Mapping[str, float]] = []
    figures: dict[str, float] = {}
    start = time.perf_counter()
    while state.step < steps:
        logged.append(step())
        state.step += 1
        if state.step % log_every == 0 or state.step == steps:
            figures |= {k: float(np.nanmean([m.get(k, np.nan) for m in logged])) for k in logged[0]}
            metrics = {**figures, "train/lr": state.scheduler.get_last_lr()[0],
                       "train/steps_per_s": len(logged) / (time.perf_counter() - start)}
            logged, start = [], time.perf_counter()
            if tracker is not None:
                tracker.log(metrics, step=state.step)
        if state.step % checkpoint_every == 0 or state.step == steps:
            if at_checkpoint is not None:
                checked = dict(at_checkpoint())
                figures |= checked
                if tracker is not None and checked:
                    tracker.log(checked, step=state.step)
            save()
    return figures
