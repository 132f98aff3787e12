"""The streaming monitor beside an offline evaluation (``scripts/eval.py monitor=streaming``): it watches every evaluated
episode's camera frames and is scored against the twin's truth.

:class:`MonitorObserver` is an :class:`policies.evaluation.EpisodeObserver`: one :class:`StreamMonitor` per sub-env
(sharing one model), fed the frame the caller's ``render(envs, indices)`` returns for each sub-env after its reset
and after every step (the scripts layer renders the env's ``monitor.camera``: ``policies/`` sees only the gymnasium
API), stamped ``step / fps``. Per episode it adds ``monitor_progress_voc`` (Spearman of its progress against the
env's ``info[monitor.progress_key]``, else ``info["coverage"]``, over the episode's frames:
:func:`policies.rewards.topreward.voc`) and ``monitor_success`` (its final frame's success call, 0/1). Figures:
``monitor_progress_voc`` (the mean over episodes) and ``monitor_success_agreement`` (the fraction of episodes whose
final call equals the env's success).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

from perception.streaming import StreamingModel, load_streaming
from perception.streaming.monitor import MonitorConfig, StreamMonitor
from policies.rewards.topreward import voc

Render = Callable[[gym.vector.VectorEnv, list[int]], list[np.ndarray]]  # (envs, sub-env indices) -> RGB frames


class MonitorObserver:
    """Runs the streaming monitor on every evaluated episode (module docstring).

    Args:
        config: the monitor (``monitor.path`` is loaded unless ``model`` is given).
        render: ``render(envs, indices)``: the monitor camera's (H, W, 3) uint8 frame of each sub-env in ``indices``.
        fps: the env's control rate (frames per second: the timestamps it is given).
        model: an already loaded model (tests); None: ``load_streaming(config.path)``.

    Raises:
        FileNotFoundError: no saved model at ``monitor.path`` (named).
    """

    def __init__(self, config: MonitorConfig, render: Render, fps: float, model: StreamingModel | None = None) -> None:
        if model is None:
            try:
                model = load_streaming(config.path)
            except FileNotFoundError as err:
                raise FileNotFoundError(f"monitor.path: {err}") from err
        self.config, self.render, self.fps, self.model = config, render, float(fps), model
        self.monitors: list[StreamMonitor] = []
        self._truth: list[list[float]] = []
        self._n_valid = 0

    def begin(self, envs: gym.vector.VectorEnv, seeds: list[int], tasks: list[str | None],
              infos: list[dict[str, Any]]) -> None:
        """Resets one monitor per listed episode (its instruction, noise seeded by its seed) on its first frame."""
        self._n_valid = len(seeds)
        while len(self.monitors) < self._n_valid:
            self.monitors.append(StreamMonitor.from_config(self.config, self.model))
        for j, seed in enumerate(seeds):
            self.monitors[j].reset(tasks[j], seed=seed)
        self._truth = [[] for _ in seeds]
        self._observe(envs, list(range(self._n_valid)), infos)

    def step(self, envs: gym.vector.VectorEnv, indices: list[int], infos: list[dict[str, Any]]) -> None:
        """The new frame of each listed sub-env in ``indices``."""
        self._observe(envs, [j for j in indices if j < self._n_valid], infos)

    def end(self) -> list[dict[str, float]]:
        """Per listed episode: ``monitor_progress_voc`` and ``monitor_success``."""
        return [{"monitor_progress_voc": voc(monitor.progress_series(), np.asarray(truth)),
                 "monitor_success": float(monitor.success_called)}
                for monitor, truth in zip(self.monitors, self._truth)]

    def summary(self, episodes: list[dict[str, Any]]) -> dict[str, float]:
        """``monitor_progress_voc`` (mean over episodes) and ``monitor_success_agreement``."""
        return monitor_eval_figures(episodes)

    def _observe(self, envs: gym.vector.VectorEnv, indices: list[int], infos: list[dict[str, Any]]) -> None:
        for j, frame in zip(indices, self.render(envs, indices)):
            monitor = self.monitors[j]
            monitor.observe(frame, len(monitor.answers) / self.fps)
            self._truth[j].append(float(_progress(infos[j], self.config.progress_key)))


def _progress(info: dict[str, Any], key: str) -> float:
    """The env's true progress: ``info[key]``, else ``info["coverage"]``.

    Raises:
        KeyError: neither is in ``info`` (naming ``monitor.progress_key``).
    """
    for name in (key, "coverage"):
        if name in info:
            return float(info[name])
    raise KeyError(f"monitor.progress_key={key!r}: the env's info has neither it nor 'coverage' ({sorted(info)})")


def monitor_eval_figures(episodes: list[dict[str, Any]]) -> dict[str, float]:
    """``monitor_progress_voc``: the mean of the episodes' ``metrics["monitor_progress_voc"]``;
    ``monitor_success_agreement``: the fraction whose ``metrics["monitor_success"]`` equals ``success``."""
    metrics = [e["metrics"] for e in episodes]
    return {"monitor_progress_voc": float(np.mean([m["monitor_progress_voc"] for m in metrics])),
            "monitor_success_agreement": float(np.mean([bool(m["monitor_success"]) == bool(e["success"])
                                                        for m, e in zip(metrics, episodes)]))}
