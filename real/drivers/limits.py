"""Joint-target clamping shared by the hardware drivers: joint ranges and a per-command step limit.

This is the driver's last line of defence (the hardware's own ranges); the bridge's safety layer in
:mod:`real.safety` applies the deployment's limits before a command gets here.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

log = logging.getLogger(__name__)


def clamp_joint_target(target: np.ndarray, lower: np.ndarray, upper: np.ndarray, previous: np.ndarray | None = None,
                       max_step: np.ndarray | float | None = None, names: Sequence[str] | None = None,
                       who: str = "robot") -> tuple[np.ndarray, np.ndarray]:
    """Clamp joint targets to ``[lower, upper]`` and to at most ``max_step`` away from ``previous``.

    The step limit is applied first, then the range (a target never leaves the range, even if ``previous`` did).
    Every clamped joint is logged with its requested and sent values.

    Args:
        target: requested joint targets (rad), shape ``[n]``.
        lower, upper: joint limits (rad), shape ``[n]``.
        previous: the last target sent (rad), or None for no step limit.
        max_step: largest change per command (rad), scalar or ``[n]``; None for no step limit.
        names: joint names for the log message.
        who: the robot, for the log message.

    Returns:
        ``(clamped float64 [n], clamped_mask bool [n])``.

    Raises:
        ValueError: shapes differ, or a target is NaN or infinite (a command is refused, never guessed).
    """
    target = np.asarray(target, dtype=np.float64)
    lower, upper = np.asarray(lower, dtype=np.float64), np.asarray(upper, dtype=np.float64)
    if target.shape != lower.shape or target.shape != upper.shape or target.ndim != 1:
        raise ValueError(f"{who}: target shape {target.shape} does not match the limits' shape {lower.shape}")
    names = list(names) if names is not None else [str(k) for k in range(target.size)]
    if not np.all(np.isfinite(target)):
        bad = [n for n, ok in zip(names, np.isfinite(target)) if not ok]
        raise ValueError(f"{who}: refusing a non-finite target for joint(s) {bad}: {target}")
    out = target.copy()
    if previous is not None and max_step is not None:
        previous = np.asarray(previous, dtype=np.float64)
        step = np.broadcast_to(np.asarray(max_step, dtype=np.float64), target.shape)
        out = np.clip(out, previous - step, previous + step)
    out = np.clip(out, lower, upper)
    mask = out != target
    if mask.any():
        log.warning("%s: clamped joint target(s) %s: requested %s, sent %s (rad)", who,
                    [n for n, m in zip(names, mask) if m], np.round(target[mask], 4).tolist(),
                    np.round(out[mask], 4).tolist())
    return out, mask
