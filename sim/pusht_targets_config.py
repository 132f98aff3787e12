"""Typed configuration of the language-conditioned coloured-targets task (``realsim/PushTTargets-v0``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from sim.instructions import COMBO_SPLITS, SPLITS
from sim.pusht_config import PushTConfig

# Four pad centres (m) on the corners of a square around the block's start centre (0.55, 0): 0.134 m from it and
# 0.19 m from each neighbour. Slot order: 0 far-left, 1 far-right, 2 near-left, 3 near-right as seen from the robot
# base (x away from the robot, y to its left).
DEFAULT_SLOTS = ((0.645, 0.095), (0.645, -0.095), (0.455, 0.095), (0.455, -0.095))


@dataclass
class PushTTargetsConfig(PushTConfig):
    """PushT's twin with four coloured target pads; the instruction names the pad the T's centroid must reach.

    Inherits every PushT setting (action interface, observations, randomisation). Differences: ``goal_pose``,
    ``success_threshold`` and the coverage are unused (success is ``success_radius``); ``block_offset_range`` is the
    distance (m) of the T's area centroid at the start from ``start_center``, and ``block_angle_range`` the block's
    absolute start angle (rad).
    """

    # --- task -------------------------------------------------------------------------------------------
    # pad centres (x, y) (m), 4 of them
    slots: list[list[float]] = field(default_factory=lambda: [list(s) for s in DEFAULT_SLOTS])
    pad_radius: float = 0.035  # drawn radius of each pad (m); the pads are visual only (no collision)
    success_radius: float = 0.03  # success: T centroid within this distance (m) of the instructed pad's centre
    start_center: tuple[float, float] = (0.55, 0.0)  # centre of the block's start area (m)
    instructions: str = "train"  # paraphrase set: train | heldout (sim.instructions)
    combos: str = "train"  # (colour, slot) pairs of the instructed pad: train | heldout | all (sim.instructions)
    max_episode_steps: int = 200
    block_offset_range: tuple[float, float] = (0.0, 0.02)
    block_angle_range: tuple[float, float] = (-3.14159, 3.14159)
    # the pusher starts on the robot's side of the pads, so the arm hides none of them in the first frame
    pusher_start_box: tuple[float, float, float, float] = (0.30, -0.22, 0.36, 0.22)

    # --- observations ---------------------------------------------------------------------------------------
    cameras: tuple[str, ...] = ("overhead",)
    image_size: tuple[int, int] = (64, 64)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.slots = [[float(v) for v in slot] for slot in self.slots]
        if len(self.slots) != 4 or any(len(slot) != 2 for slot in self.slots):
            raise ValueError(f"env.slots must be 4 (x, y) pad centres, got {self.slots}")
        if self.instructions not in SPLITS:
            raise ValueError(f"env.instructions must be one of {SPLITS}, got {self.instructions!r}")
        if self.combos not in COMBO_SPLITS:
            raise ValueError(f"env.combos must be one of {COMBO_SPLITS}, got {self.combos!r}")
        if self.pad_radius <= 0 or self.success_radius <= 0:
            raise ValueError(f"env.pad_radius and env.success_radius must be > 0, got {self.pad_radius}, "
                             f"{self.success_radius}")
        spacing = min(
            ((a[0] - b[0]) ** 2 + (a[1] - b[1]) ** 2) ** 0.5 for i, a in enumerate(self.slots) for b in self.slots[i + 1:]
        )
        if spacing <= 2 * self.success_radius:
            raise ValueError(f"env.slots are {spacing:.3f} m apart: success discs of radius env.success_radius="
                             f"{self.success_radius} would overlap")
