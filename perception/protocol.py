"""The one interface every state estimator implements, and what it takes and gives.

An estimator turns the frames of one instant into an estimate of the object's state. The ICP block tracker
(:class:`perception.block_tracker.BlockTracker`) does it from depth; an RGB reconstruction model or a streaming
video model does it from :class:`perception.frames.ColorFrame` s with the same two calls::

    estimator.reset()                                  # a new episode: forget every track and hidden state
    estimate = estimator.update(frames, prior)         # frames of one instant, oldest call first
    if estimate is not None: use(estimate.pose, estimate.time)

``update`` is called once per instant in time order (a streaming model keeps its memory between calls); it returns
None when it has nothing trustworthy to report (no object seen, a fit rejected, frames already used). The
:class:`Prior` carries what the caller knows besides the pixels: the time now, a predicted pose (the digital
twin's), and where the robot is (from its joints), all on the frames' clock and in the world frame.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from perception.frames import Frame


@dataclasses.dataclass(frozen=True)
class Prior:
    """What the caller knows at an update besides the frames (units m, rad, s).

    Raises:
        ValueError: a pose that is not (x, y, theta).
    """

    time: float  # s, now, on the frames' clock (how stale the last estimate is)
    pose: np.ndarray | None = None  # (x, y, theta) the caller predicts for the object (e.g. the twin's), or None
    height: float = 0.0  # m, height of the object frame's origin above the table (where its model is placed)
    robot_xy: np.ndarray | None = None  # (2,) or (K, 2) m: where the robot's tool is; its points are not the object

    def __post_init__(self) -> None:
        if self.pose is not None and np.shape(self.pose) != (3,):
            raise ValueError(f"Prior.pose must be (x, y, theta), got shape {np.shape(self.pose)}")


@dataclasses.dataclass(frozen=True)
class Estimate:
    """An estimator's answer for one instant: the object's planar pose and how far to trust it."""

    pose: np.ndarray  # (x, y, theta) in the world, m and rad
    time: float  # s, capture time of the frames it was made from (the frames' clock)
    velocity: np.ndarray | None = None  # (vx, vy, omega) m/s and rad/s since the previous estimate; None: unknown
    fitness: float = 1.0  # fraction of the observations the pose explains, in [0, 1]
    rmse: float = 0.0  # m, RMS distance of the explained observations from the object's model


@runtime_checkable
class Estimator(Protocol):
    """A state estimator (module docstring): ``reset()`` between episodes, ``update()`` once per instant."""

    def reset(self) -> None:
        """Forgets everything learnt from earlier frames (a new episode)."""

    def update(self, frames: Sequence[Frame], prior: Prior) -> Estimate | None:
        """The estimate from the frames of one instant, or None when there is nothing trustworthy to report."""
