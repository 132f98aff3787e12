"""A tiny language-conditioned gymnasium env and a policy that reads both the instruction and the image.

ColourLine: a point on a line in [-1, 1] starts near 0; four coloured marks lie at fixed places. Each episode asks
for one colour ("go to the red mark"); success is being on that mark (within 0.05) while stopping (|action| <
0.02). The point is seen only through an 8x16 image (its brightness encodes the place: 0 at -1, 255 at 1), and the
instruction is a
``spaces.Text`` observation (and ``info["task"]``), like ``realsim/PushTTargets-v0``'s contract.
"""

from __future__ import annotations

from typing import ClassVar

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

MARKS = {"red": -0.75, "green": -0.25, "blue": 0.25, "yellow": 0.75}
TRAIN_TEMPLATES = ("go to the {} mark", "move onto {}")
HELDOUT_TEMPLATES = ("head for the {} spot",)
CHARSET = " abcdefghijklmnopqrstuvwxyz"
IMAGE_H, IMAGE_W = 8, 16
FRAME = (48, 96)  # render() size (H, W)
STEP = 0.2  # largest move per step


class ColourLineEnv(gym.Env):
    """See the module docstring. ``instructions``: "train" or "heldout" templates; ``colours``: the colours drawn;
    ``task_in_info``: also report the instruction in info (as the twin does)."""

    metadata: ClassVar[dict] = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, render_mode: str | None = "rgb_array", instructions: str = "train",
                 colours: tuple[str, ...] = tuple(MARKS), task_in_info: bool = True):
        self.render_mode = render_mode
        self.templates = HELDOUT_TEMPLATES if instructions == "heldout" else TRAIN_TEMPLATES
        self.colours = tuple(colours)
        self.task_in_info = task_in_info
        self.observation_space = spaces.Dict({
            "observation.images.cam": spaces.Box(0, 255, (IMAGE_H, IMAGE_W, 3), np.uint8),
            "task": spaces.Text(64, charset=CHARSET),
        })
        self.action_space = spaces.Box(-STEP, STEP, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.colour = self.colours[int(self.np_random.integers(len(self.colours)))]
        template = self.templates[int(self.np_random.integers(len(self.templates)))]
        self.task = template.format(self.colour)
        self.x = float(self.np_random.uniform(-0.1, 0.1))
        return self._obs(), self._info(moving=True)

    def step(self, action):
        move = float(np.clip(action, -STEP, STEP)[0])
        self.x = float(np.clip(self.x + move, -1.0, 1.0))
        info = self._info(moving=abs(move) >= 0.02)
        return self._obs(), 0.0, info["is_success"], False, info

    def render(self):
        frame = np.full((*FRAME, 3), 90, np.uint8)
        col = int(round((self.x + 1) / 2 * (FRAME[1] - 1)))
        frame[:, col] = 255
        return frame

    def _obs(self):
        image = np.full((IMAGE_H, IMAGE_W, 3), round((self.x + 1) / 2 * 255), np.uint8)
        return {"observation.images.cam": image, "task": self.task}

    def _info(self, moving: bool):
        distance = abs(self.x - MARKS[self.colour])
        info = {"is_success": bool(distance < 0.05 and not moving), "proximity": 1.0 - distance / 2,
                "target_color": self.colour}
        return {**info, "task": self.task} if self.task_in_info else info


gym.register("test/ColourLine-v0", entry_point=ColourLineEnv, max_episode_steps=30)


def make_colour_envs(n: int, asynchronous: bool = False, shared_memory: bool = False, **kwargs):
    """A factory of ``n`` ColourLine envs in a vector env (NEXT_STEP autoreset)."""
    fns = [lambda: gym.make("test/ColourLine-v0", **kwargs) for _ in range(n)]
    if asynchronous:
        return lambda: gym.vector.AsyncVectorEnv(fns, shared_memory=shared_memory, context="fork")
    return lambda: gym.vector.SyncVectorEnv(fns)


class ColourPolicy:
    """Goes to the mark its instruction names, locating itself from the image's brightness; stops there.

    Records every batch it was given: ``tasks`` (the ``task`` lists) and ``image_max`` (the largest pixel).
    """

    def __init__(self):
        self.tasks: list[list[str]] = []
        self.image_max: list[float] = []

    def reset(self) -> None:
        """Nothing to clear: the policy is memoryless."""

    def select_action(self, obs: dict) -> torch.Tensor:
        """Move towards the named mark by at most STEP; a blank image reads as x = -1 (it never stops then)."""
        image = obs["observation.images.cam"]  # (B, 3, H, W) float in [0, 1]
        self.tasks.append(list(obs["task"]))
        self.image_max.append(float(image.max()))
        x = image.mean(dim=(1, 2, 3)) * 2 - 1
        goal = torch.tensor([_named_mark(task) for task in obs["task"]])
        move = (goal - x).clamp(-STEP, STEP)
        return torch.where(move.abs() < 0.01, torch.zeros_like(move), move)[:, None]


def _named_mark(task: str) -> float:
    """The place of the colour the instruction names (the first colour word in it)."""
    return next(MARKS[word] for word in task.split() if word in MARKS)
