"""The streaming model as a perception estimator: one RGB frame per instant in, every head out.

    estimator = StreamingEstimator(model, camera="overhead", instruction="push the T onto the target")
    estimator.reset()
    outputs = estimator.step(image, timestamp)        # (S, S, 3) uint8 -> StreamOutputs (pose, progress, ...)
    estimate = estimator.update(frames, prior)        # the Estimator protocol: the block pose as an Estimate

Memory and cost per call are constant (the model's bounded cache); timestamps must not go backwards.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from perception.frames import ColorFrame, Frame
from perception.protocol import Estimate, Prior
from perception.streaming.cache import KVCache
from perception.streaming.model import StreamingModel, StreamOutputs, tokenize


class StreamingEstimator:
    """Runs a :class:`StreamingModel` on one stream (module docstring); a :class:`perception.protocol.Estimator`.

    Args:
        model: the network (put in eval mode here).
        camera: the :class:`ColorFrame` camera ``update`` reads; None: the first colour frame given.
        instruction: the task in words, or None.
    """

    def __init__(self, model: StreamingModel, camera: str | None = None, instruction: str | None = None) -> None:
        self.model = model.eval()
        self.camera = camera
        self.instruction = instruction
        self.last: StreamOutputs | None = None  # the previous step's outputs (batch of 1 squeezed)
        self.reset()

    def reset(self, instruction: str | None = None) -> None:
        """Forgets the stream (a new episode); ``instruction`` replaces the task when given."""
        if instruction is not None:
            self.instruction = instruction
        tokens = (None if self.instruction is None
                  else tokenize([self.instruction], self.model.config.max_instruction_tokens))
        self.cache: KVCache = self.model.init_state(1, tokens)
        self.time = -math.inf  # s, the newest frame's stamp
        self.last = None
        self._last_estimate: Estimate | None = None

    def step(self, image: np.ndarray, timestamp: float) -> StreamOutputs:
        """Every head for the next frame ``image`` ((S, S, 3) uint8, S = config.image_size) captured at
        ``timestamp`` (s); outputs shaped without the batch dimension.

        Raises:
            ValueError: an image of the wrong shape or dtype, or a timestamp before the previous one (or not finite).
        """
        size = self.model.config.image_size
        image = np.asarray(image)
        if image.shape != (size, size, 3) or image.dtype != np.uint8:
            raise ValueError(f"frame must be ({size}, {size}, 3) uint8, got {image.shape} {image.dtype}")
        if not math.isfinite(timestamp) or timestamp < self.time:
            raise ValueError(f"frame timestamp {timestamp} goes backwards (previous {self.time}) or is not finite")
        self.time = float(timestamp)
        weights = self.model.embed.weight
        frame = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].to(weights.device)
        frame = frame.to(weights.dtype) / 255
        outputs = self.model.step(self.cache, frame)
        self.last = StreamOutputs(**{name: value[0].float().cpu() for name, value in vars(outputs).items()})
        return self.last

    def update(self, frames: Sequence[Frame], prior: Prior) -> Estimate | None:
        """The block's pose from this instant's colour frame (the Estimator protocol); None when there is no colour
        frame of ``camera`` or its stamp was already used. ``prior`` is not used (the model sees only pixels).

        Raises:
            ValueError: as :meth:`step` (wrong image size, a frame older than the previous one).
        """
        colour = [f for f in frames if isinstance(f, ColorFrame) and self.camera in (None, f.camera)]
        if not colour or colour[0].timestamp == self.time:
            return None
        frame = colour[0]
        pose = self.step(frame.image, frame.timestamp).pose.numpy().astype(float)
        velocity = None
        previous = self._last_estimate
        if previous is not None and frame.timestamp > previous.time:
            delta = pose - previous.pose
            delta[2] = (delta[2] + math.pi) % (2 * math.pi) - math.pi
            velocity = delta / (frame.timestamp - previous.time)
        self._last_estimate = Estimate(pose=pose, time=frame.timestamp, velocity=velocity)
        return self._last_estimate
