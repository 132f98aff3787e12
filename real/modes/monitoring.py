"""The online monitor in deploy and collect mode (``monitor=streaming``, issue 19 "In use"): the streaming video model
watches the robot's live colour frames, one frame per control step, and says how the task goes.

Per control step the latest ``observation.images.<monitor.camera>`` reading the twin session received from the robot
(:attr:`real.modes.session.TwinSession.readings`, refreshed at every correction) goes through
:class:`perception.streaming.StreamMonitor` (resized to the model's size, noised by ``monitor.input_noise``); its
answer is logged to the tracker (``monitor/progress``, ``monitor/success_prob``, ``monitor/event/<name>``) and kept
for the episode's record, ``<output_dir>/episodes/episode_<i>.monitor.jsonl`` (one JSON object per frame). With
``monitor.end_on_success`` the mode ends the episode at its success call. The emulated reality renders colour frames
only when asked: :func:`with_monitor_camera` asks for the monitor's camera.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from perception.streaming.monitor import MonitorAnswer, MonitorConfig, StreamMonitor
from real.robot_choice import EmulatedRobotChoice
from real.sensors import SensorReading, image_key

__all__ = ["LiveMonitor", "monitor_figures", "monitor_record_path", "with_monitor_camera"]


def monitor_record_path(directory: str | os.PathLike, episode: int) -> Path:
    """``<directory>/episode_<episode>.monitor.jsonl``: beside the episode's twin log ``episode_<i>.npz``."""
    return Path(directory) / f"episode_{episode}.monitor.jsonl"


def with_monitor_camera(robot: Any, monitor: MonitorConfig) -> Any:
    """``robot`` (a ``robot=`` group choice) rendering the monitor's colour camera: for the emulated reality, its
    ``reality.color_cameras`` plus ``monitor.camera``; any other robot unchanged (its cameras are its own)."""
    if not monitor.enabled or not isinstance(robot, EmulatedRobotChoice):
        return robot
    reality = robot.reality
    if monitor.camera in reality.color_cameras:
        return robot
    return dataclasses.replace(robot, reality=dataclasses.replace(
        reality, color_cameras=(*reality.color_cameras, monitor.camera)))


class LiveMonitor:
    """A :class:`StreamMonitor` on a twin session's live frames for one episode at a time (module docstring).

    Args:
        monitor: the model's monitor (its config: camera, threshold, ``end_on_success``).
        tracker: optional ``policies.tracking.Tracker``; each answer is logged at the control step.
    """

    def __init__(self, monitor: StreamMonitor, tracker: Any = None) -> None:
        self.monitor, self.tracker = monitor, tracker
        self.key = image_key(monitor.config.camera)
        self._last_stamp = -np.inf

    @classmethod
    def from_config(cls, config: MonitorConfig, tracker: Any = None) -> LiveMonitor | None:
        """The live monitor of ``config`` (its model loaded once); None for ``monitor=none``.

        Raises:
            FileNotFoundError: no saved model at ``monitor.path``.
        """
        monitor = StreamMonitor.from_config(config)
        return None if monitor is None else cls(monitor, tracker)

    def reset(self, seed: int, instruction: str | None = None) -> None:
        """Starts the episode of ``seed`` (its input noise seeded from it)."""
        self.monitor.reset(instruction, seed=seed)
        self._last_stamp = -np.inf

    def observe(self, readings: Mapping[str, SensorReading], step: int) -> MonitorAnswer | None:
        """The answer for the newest colour frame in ``readings`` at control step ``step`` (logged to the tracker);
        None when that frame was already seen (no new frame since the last step).

        Raises:
            KeyError: no frame of the monitor's camera ever arrived (the robot renders no such colour camera); the
                message names the key and ``monitor.camera``.
        """
        reading = readings.get(self.key)
        if reading is None:
            if not self.monitor.answers:
                raise KeyError(f"the robot sends no {self.key!r} frames for monitor.camera="
                               f"{self.monitor.config.camera!r} (its readings: {sorted(readings)})")
            return None
        if reading.timestamp <= self._last_stamp:
            return None
        self._last_stamp = reading.timestamp
        answer = self.monitor.observe(reading.data, reading.timestamp)
        if self.tracker is not None:
            self.tracker.log(answer.metrics(), step=step)
        return answer

    @property
    def should_end(self) -> bool:
        """Whether the episode should end now: ``end_on_success`` and the latest frame's success call."""
        return self.monitor.config.end_on_success and self.monitor.success_called

    def finish(self, record_path: str | os.PathLike | None = None) -> dict[str, float]:
        """Ends the episode: writes its record to ``record_path`` (JSON lines) when given; returns ``monitor_success``
        (the final frame's success call, 0/1), ``monitor_progress`` (its final progress; NaN without frames) and
        ``monitor_frames``."""
        if record_path is not None:
            self.monitor.save(record_path)
        answers = self.monitor.answers
        return {"monitor_success": float(self.monitor.success_called),
                "monitor_progress": answers[-1].progress if answers else float("nan"),
                "monitor_frames": float(len(answers))}


def monitor_figures(results: Sequence[Mapping[str, float]], truth_key: str = "success_real") -> dict[str, float]:
    """``monitor_success_agreement``: the fraction of episodes whose final success call (``monitor_success``) equals
    the truth (``truth_key``: reality's success, from the emulated reality's truth; episodes without it are left
    out, NaN when none has it), and ``monitor_episodes``, how many were compared."""
    pairs = [(r["monitor_success"], r[truth_key]) for r in results
             if "monitor_success" in r and np.isfinite(r.get(truth_key, np.nan))]
    agreement = float(np.mean([bool(m) == bool(t) for m, t in pairs])) if pairs else float("nan")
    return {"monitor_success_agreement": agreement, "monitor_episodes": len(pairs)}
