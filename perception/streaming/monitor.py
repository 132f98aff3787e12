"""The streaming model as an online monitor of one camera (issue 19, "In use"): frames in, per-frame answers out.

    config = MonitorConfig(name="streaming", path="outputs/train_streaming/latest/model")
    monitor = StreamMonitor.from_config(config)        # None for name="none"
    monitor.reset(instruction=None, seed=episode_seed)
    answer = monitor.observe(rgb_frame, timestamp)     # any (H, W, 3) uint8; resized to the model's size
    answer.metrics()                                   # {"monitor/progress": ..., "monitor/event/<name>": ...}
    monitor.success_called                             # the latest frame's success_prob > success_threshold

The deploy and collect modes (``real.modes.monitoring``) feed it the robot's live colour frames, ``scripts/eval.py``
the env's rendered frames (``policies.streaming.monitor_eval``). Each call costs one model step (bounded memory).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import cv2
import numpy as np

from perception.streaming.checkpoint import load_streaming
from perception.streaming.estimator import StreamingEstimator

MONITORS = ("none", "streaming")


@dataclasses.dataclass
class MonitorConfig:
    """``monitor=none|streaming`` (conf/monitor/*.yaml): which model watches which camera, and what it may end.

    Raises:
        ValueError: an unknown ``name``, ``name=streaming`` without ``path``, a threshold outside (0, 1), a
            negative ``input_noise`` or ``fps`` <= 0 (each message names the ``monitor.<key>``).
    """

    name: str = "none"  # none: no monitor | streaming: the streaming video model (perception.streaming)
    path: str = ""  # dir of a saved streaming model (save_streaming: model.safetensors + config.json)
    camera: str = "overhead"  # the camera it watches (the one its training videos were rendered from)
    end_on_success: bool = False  # end an episode when it calls success (success_prob > success_threshold)
    success_threshold: float = 0.5  # probability above which it calls success
    # Gaussian noise (grey levels of 255) added to every frame before the model, as its training frames had
    # (policies.streaming.clips: std 2). A rendered frame is noise-free, so in a static scene two frames are
    # bit-identical, and to a model trained on noisy frames that is exactly what a frozen camera looks like: without
    # this, a still robot in the emulated reality or the twin would be flagged camera_frozen_or_replayed. Set 0 for a
    # real camera (its own sensor noise plays this part).
    input_noise: float = 2.0
    seed: int = 0  # seed of the input noise (with the episode's seed: reproducible per episode)
    fps: float = 10.0  # frames per second of world time it is fed at most (its training videos' rate)
    progress_key: str = "proximity"  # eval: the env's info key of true progress (else "coverage") for the VOC

    def __post_init__(self) -> None:
        if self.name not in MONITORS:
            raise ValueError(f"monitor.name must be one of {MONITORS}, got {self.name!r}")
        if self.name == "streaming" and not self.path:
            raise ValueError("monitor.path must name a saved streaming model dir with monitor=streaming (e.g. "
                             "monitor.path=outputs/train_streaming/latest/model)")
        if not 0 < self.success_threshold < 1:
            raise ValueError(f"monitor.success_threshold must be in (0, 1), got {self.success_threshold}")
        if self.input_noise < 0 or self.fps <= 0:
            raise ValueError(f"monitor.input_noise must be >= 0 and monitor.fps > 0, got {self.input_noise}, "
                             f"{self.fps}")

    @property
    def enabled(self) -> bool:
        """Whether a monitor runs (``name != "none"``)."""
        return self.name != "none"


@dataclasses.dataclass
class MonitorAnswer:
    """The monitor's answer for one frame: probabilities in [0, 1], pose in m and rad."""

    step: int  # index of the frame in the episode's monitored stream (0 first)
    timestamp: float  # s, the frame's capture stamp as given
    progress: float
    success_prob: float
    events: dict[str, float]  # EVENTS name -> probability
    pose: list[float]  # x, y (m), yaw (rad)

    def metrics(self) -> dict[str, float]:
        """The W&B keys: ``monitor/progress``, ``monitor/success_prob``, ``monitor/event/<name>``."""
        out = {"monitor/progress": self.progress, "monitor/success_prob": self.success_prob}
        return out | {f"monitor/event/{name}": p for name, p in self.events.items()}


class StreamMonitor:
    """Runs a :class:`StreamingEstimator` on one camera's frames and keeps the episode's answers (module docstring).

    Args:
        estimator: the model's estimator (one stream; :meth:`reset` starts a new one).
        config: threshold, input noise and seed.
    """

    def __init__(self, estimator: StreamingEstimator, config: MonitorConfig) -> None:
        self.estimator, self.config = estimator, config
        self.size = estimator.model.config.image_size
        self.answers: list[MonitorAnswer] = []
        self._rng = np.random.default_rng(config.seed)

    @classmethod
    def from_config(cls, config: MonitorConfig, model=None) -> StreamMonitor | None:
        """The monitor of ``config`` (its model loaded from ``config.path`` unless ``model`` is given, e.g. shared
        by several monitors); None for ``monitor=none``.

        Raises:
            FileNotFoundError: no saved model at ``monitor.path`` (the message names the key).
        """
        if not config.enabled:
            return None
        if model is None:
            try:
                model = load_streaming(config.path)
            except FileNotFoundError as err:
                raise FileNotFoundError(f"monitor.path: {err}") from err
        return cls(StreamingEstimator(model, camera=config.camera), config)

    def reset(self, instruction: str | None = None, seed: int = 0) -> None:
        """Starts a new episode's stream (``instruction``: its task, where the env has one); the input noise is
        reseeded from (``config.seed``, ``seed``)."""
        self.estimator.reset(instruction)
        self.answers = []
        self._rng = np.random.default_rng([self.config.seed, seed])

    def observe(self, image: np.ndarray, timestamp: float) -> MonitorAnswer:
        """The answer for ``image`` ((H, W, 3) uint8 RGB, resized to the model's square size with INTER_AREA when
        needed, then noised by ``input_noise``) captured at ``timestamp`` (s).

        Raises:
            ValueError: not an (H, W, 3) uint8 image, or a timestamp before the previous one.
        """
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"monitor frames must be (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}")
        if image.shape[:2] != (self.size, self.size):
            image = cv2.resize(image, (self.size, self.size), interpolation=cv2.INTER_AREA)
        if self.config.input_noise > 0:
            noisy = image.astype(np.float32) + self._rng.normal(0.0, self.config.input_noise, image.shape)
            image = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
        out = self.estimator.step(image, timestamp)
        answer = MonitorAnswer(len(self.answers), float(timestamp), float(out.progress),
                               float(out.success_prob),
                               {name: float(p) for name, p in out.event_probs.items()},
                               [float(v) for v in out.pose.tolist()])
        self.answers.append(answer)
        return answer

    @property
    def success_called(self) -> bool:
        """Whether the latest frame's success probability exceeds ``success_threshold`` (False before any frame)."""
        return bool(self.answers) and self.answers[-1].success_prob > self.config.success_threshold

    def progress_series(self) -> np.ndarray:
        """The episode's per-frame progress so far, (N,)."""
        return np.array([a.progress for a in self.answers], dtype=np.float64)

    def save(self, path: str | os.PathLike) -> Path:
        """Writes the episode's answers to ``path`` as JSON lines (one object per frame: step, timestamp, progress,
        success_prob, events, pose); returns it."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(dataclasses.asdict(a)) + "\n" for a in self.answers))
        return path
