"""Language-conditioned PushT: four coloured pads, and an instruction naming the pad the T must be pushed onto.

``realsim/PushTTargets-v0`` is PushT's twin (:class:`sim.pusht_env.PushTEnv`: table, Panda, pusher, T-block, the same
action interface and physics) with PushT's green goal hidden and four flat, visual-only pads at four fixed slots on
the corners of a square around the block's start area. Per episode, from the reset seed: the colours red, green, blue,
yellow are permuted over the slots, the instructed colour is drawn uniformly, and a paraphrase of the instruction is
drawn from the configured split (:mod:`sim.instructions`). So a policy that ignores the instruction reaches the
instructed pad in about 1/4 of the episodes, and one that ignores the image cannot know where that colour is.

Success: the T's area centroid within ``success_radius`` (3 cm by default) of the instructed pad's centre, its angle
free. Why 3 cm: (1) it decides the pad unambiguously: pads are >= 0.19 m apart, so a block counted at one pad is
>= 0.16 m from every other, and the start area (centroid <= 2 cm from the start centre) is >= 0.11 m from every
pad: no episode starts as a success or counts for the wrong pad; (2) it asks for a deliberate placement: 3 cm is the
width of the T's stem and a fifth of its 0.15 m bar, about 3.5 pixels of the 64x64 overhead image (0.9 cm/pixel), so
the pad's position must be read from the image to within a few pixels; (3) it is not a precision test: the target has
no orientation and the pad drawn with 3.5 cm radius is slightly larger than the success disc, so "centroid over the
pad" is what the image shows. The [0, 1] metric ``proximity`` = 1 - distance / (start-to-pad distance), clipped: 0 at
the start or at any other pad, 1 at the instructed pad's centre.

Observations add to PushT's: ``task`` (the instruction, gymnasium ``Text``), and ``observation.environment_state`` is
``[block x, y, cos th, sin th, target x, y]`` (privileged, for auxiliary supervision and the expert). The default
config observes the 64x64 overhead image and the pusher position.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium import spaces

from sim.instructions import CHARSET, COLOR_RGBA, COLORS, HELDOUT_COMBOS, MAX_LENGTH, TEMPLATES
from sim.pusht_env import PushTEnv, scene_path
from sim.pusht_geometry import wrap_angle
from sim.pusht_targets_config import PushTTargetsConfig

PAD_HALF_HEIGHT = 0.0005  # pads are 1 mm discs lying on the table (m)
HIDDEN_GROUP = 5  # a geom group the renderer does not draw by default: PushT's goal T goes there
# The overhead camera's vertical field of view (deg). PushT's 45 deg sees +-0.35 m of table from 0.85 m up, but the
# pads and the block's travel span only +-0.25 m; 36 deg sees +-0.28 m, so a 64x64 image spends 0.9 cm per pixel
# (not 1.1 cm) and a pad is ~8 pixels across (not ~6).
OVERHEAD_FOVY = 36.0


class PushTTargetsEnv(PushTEnv):
    """``realsim/PushTTargets-v0``: push the T onto the pad whose colour the instruction names (see module doc).

    ``reset(options=...)`` accepts PushT's ``block_pose`` / ``pusher_xy`` and: ``color`` (the instructed colour),
    ``slot_colors`` (the colour at each of the 4 slots, a permutation of :data:`sim.instructions.COLORS`) and
    ``instruction`` (the task text, used verbatim; the target stays ``color``'s pad, so an ablation can give a
    mismatched instruction). Options override the config's splits; everything not fixed is still drawn from the seed
    as without options, so a fixed option leaves the rest of the episode unchanged.

    info: ``task``, ``target_color``, ``target_slot``, ``distance`` (m, T centroid to the instructed pad's centre),
    ``proximity`` in [0, 1], ``is_success``, and PushT's ``block_pose``, ``goal_pose`` (the instructed pad, angle 0),
    ``pusher_xy``, ``joint_targets``. Reward: ``proximity``; the episode terminates on success.
    """

    position_goal = True  # only the T centroid's position is the goal; goal_pose[2] is meaningless

    def __init__(self, config: PushTTargetsConfig | dict | None = None, render_mode: str | None = "rgb_array",
                 **overrides):
        if isinstance(config, dict):
            config = PushTTargetsConfig(**config)
        config = config or PushTTargetsConfig()
        if not isinstance(config, PushTTargetsConfig):
            raise TypeError(f"config must be a PushTTargetsConfig, got {type(config).__name__}")
        if overrides:
            config = PushTTargetsConfig(**{**asdict(config), **overrides})
        super().__init__(config, render_mode=render_mode)
        self.slots = np.asarray(config.slots, dtype=float)  # (4, 2) pad centres (m)
        self._pad_geoms = [self.model.geom(f"target_pad{i}").id for i in range(len(self.slots))]
        self._centroid_b = self.shape.centroid
        self._reference_distance = float(np.linalg.norm(self.slots - np.asarray(config.start_center), axis=1).min())
        self.slot_colors: tuple[str, ...] = COLORS
        self.target_color = COLORS[0]
        self.task = ""

    def _build_model(self) -> mujoco.MjModel:
        """PushT's scene with its goal T hidden and the four pads added (colours are set per episode)."""
        spec = mujoco.MjSpec.from_file(scene_path())
        spec.camera("overhead").fovy = OVERHEAD_FOVY
        for name in ("goal_bar", "goal_stem"):
            spec.geom(name).rgba = [0.0, 0.0, 0.0, 0.0]
            spec.geom(name).group = HIDDEN_GROUP
        for i, (x, y) in enumerate(self.config.slots):
            spec.worldbody.add_geom(
                name=f"target_pad{i}", type=mujoco.mjtGeom.mjGEOM_CYLINDER, pos=[x, y, PAD_HALF_HEIGHT],
                size=[self.config.pad_radius, PAD_HALF_HEIGHT, 0.0], contype=0, conaffinity=0, group=2,
                rgba=list(COLOR_RGBA[COLORS[i]]),
            )
        return spec.compile()

    # ----------------------------------------------------------------------------------------------- spaces
    def _make_observation_space(self) -> spaces.Dict:
        space = super()._make_observation_space()
        obs = dict(space.spaces)
        if self.config.environment_state:
            obs["observation.environment_state"] = spaces.Box(-np.inf, np.inf, (6,), np.float32)
        obs["task"] = spaces.Text(max_length=MAX_LENGTH, min_length=1, charset=CHARSET)
        return spaces.Dict(obs)

    # ------------------------------------------------------------------------------------------------ state
    @property
    def target_slot(self) -> int:
        """Slot index (0-3) of the instructed pad."""
        return self.slot_colors.index(self.target_color)

    @property
    def target_xy(self) -> np.ndarray:
        """Centre (x, y) of the instructed pad (m)."""
        return self.slots[self.target_slot].copy()

    @property
    def block_centroid(self) -> np.ndarray:
        """World (x, y) of the T's area centroid (m)."""
        x, y, theta = self.block_pose
        c, s = np.cos(theta), np.sin(theta)
        cx, cy = self._centroid_b
        return np.array([x + c * cx - s * cy, y + s * cx + c * cy])

    def distance(self) -> float:
        """Distance (m) from the T's centroid to the instructed pad's centre."""
        return float(np.linalg.norm(self.block_centroid - self.target_xy))

    # ------------------------------------------------------------------------------------------------ reset
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Starts an episode: draws the pad colours, target and instruction, then PushT's physics and start state."""
        gym.Env.reset(self, seed=seed)  # seeds np_random; PushTEnv.reset below continues with the same generator
        self._draw_task(options or {}, seed)
        for geom, color in zip(self._pad_geoms, self.slot_colors):
            self.model.geom_rgba[geom] = COLOR_RGBA[color]
        self._goal = np.array([*self.target_xy, 0.0])
        return super().reset(seed=None, options=options)

    def _draw_task(self, options: dict[str, Any], seed: int | None = None) -> None:
        """Sets ``slot_colors``, ``target_color`` and ``task`` from the config's splits and ``options``.

        The instructed colour cycles with the reset seed (``COLORS[seed % 4]``), so any 4n consecutive seeds hold
        exactly n episodes of each instruction (an evaluation over 200 seeds has 50 per colour); without a seed it
        is drawn. The same random numbers are drawn whatever the options, so they change only what they fix.

        Raises:
            ValueError: an unknown colour, a ``slot_colors`` that is not a permutation of the colours, or an
                instruction outside the Text space.
        """
        cfg = self.config
        templates = TEMPLATES[cfg.instructions]
        color = COLORS[self.np_random.integers(len(COLORS))]
        if seed is not None:
            color = COLORS[seed % len(COLORS)]
        slot_choice = int(self.np_random.integers(len(self._allowed_slots(color))))  # as many for every colour
        order = [COLORS[i] for i in self.np_random.permutation(len(COLORS))]
        template = templates[self.np_random.integers(len(templates))]

        color = options.get("color", color)
        if color not in COLORS:
            raise ValueError(f"reset option color must be one of {COLORS}, got {color!r}")
        if "slot_colors" in options:
            colors = list(options["slot_colors"])
            if sorted(colors) != sorted(COLORS):
                raise ValueError(f"reset option slot_colors must be a permutation of {COLORS}, got {colors}")
        else:
            slot = self._allowed_slots(color)[slot_choice]
            others = [c for c in order if c != color]
            colors = [*others[:slot], color, *others[slot:]]
        task = str(options.get("instruction", template.format(color=color)))
        if not self.observation_space["task"].contains(task):
            raise ValueError(f"instruction {task!r} is empty, longer than {MAX_LENGTH} characters or uses characters "
                             f"outside {CHARSET!r}")
        self.slot_colors, self.target_color, self.task = tuple(colors), color, task

    def _allowed_slots(self, color: str) -> list[int]:
        """Slots the instructed ``color`` may occupy under the config's ``combos`` split."""
        heldout = dict(HELDOUT_COMBOS)[color]
        if self.config.combos == "heldout":
            return [heldout]
        if self.config.combos == "train":
            return [s for s in range(len(COLORS)) if s != heldout]
        return list(range(len(COLORS)))

    def _sample_block_pose(self) -> np.ndarray:
        """A start pose whose T centroid lies ``block_offset_range`` m from ``start_center``, at any drawn angle."""
        cfg = self.config
        distance = self.np_random.uniform(*cfg.block_offset_range)
        direction = self.np_random.uniform(-np.pi, np.pi)
        angle = self.np_random.uniform(*cfg.block_angle_range)
        centroid = np.asarray(cfg.start_center) + distance * np.array([np.cos(direction), np.sin(direction)])
        c, s = np.cos(angle), np.sin(angle)
        cx, cy = self._centroid_b
        pose = np.array([centroid[0] - (c * cx - s * cy), centroid[1] - (s * cx + c * cy), angle])
        noise = np.array(cfg.randomization.init_pose_noise)
        if noise.any():
            pose += self.np_random.normal(0, [noise[0], noise[0], noise[1]])
        pose[2] = wrap_angle(pose[2])
        return pose

    # ------------------------------------------------------------------------------------------ observation
    def _outcome(self) -> tuple[float, bool, dict[str, Any]]:
        info = self._info()
        return info["proximity"], info["is_success"], info

    def _observation(self) -> dict[str, Any]:
        obs: dict[str, Any] = super()._observation()
        if self.config.environment_state:
            obs["observation.environment_state"] = np.concatenate(
                [obs["observation.environment_state"], self.target_xy.astype(np.float32)])
        obs["task"] = self.task
        return obs

    def _info(self, coverage: float | None = None) -> dict[str, Any]:
        distance = self.distance()
        return {
            "distance": distance,
            "proximity": float(np.clip(1.0 - distance / self._reference_distance, 0.0, 1.0)),
            "is_success": distance <= self.config.success_radius,
            "task": self.task,
            "target_color": self.target_color,
            "target_slot": self.target_slot,
            "block_pose": self.block_pose,
            "goal_pose": self.goal_pose,
            "pusher_xy": self.pusher_xy,
            "joint_targets": self._joint_targets.copy(),
        }
