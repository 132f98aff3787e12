"""A collection run from config: demonstrations recorded through the twin in collect mode into a LeRobot v3 dataset."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from perception.streaming.monitor import MonitorConfig
from real.modes.collect import CollectConfig, CollectedEpisode, Collector, ExpertTeleoperator
from real.modes.deploy_run import EPISODES_DIR, LoggerChoice
from real.modes.monitoring import LiveMonitor, monitor_figures, monitor_record_path, with_monitor_camera
from real.robot_choice import EmulatedRobotChoice, register_robot_configs, robot_session
from sim.twin import DigitalTwin, TwinConfig, following_env

TELEOPERATORS = ("expert",)


@dataclass
class CollectDatasetConfig:
    """Where the demonstrations go."""

    root: str = "data/collected"  # LeRobot v3 dataset; an existing one is resumed (relative to the start directory)
    keep_failed: bool = False  # also save episodes the twin did not judge a success
    robot_type: str = "franka_panda"


@dataclass
class CollectRunConfig:
    """``scripts/collect.py``: ``n_episodes`` demonstrations saved; attempt k uses seed ``collect.seed + saved + k``,
    where ``saved`` is how many episodes the dataset already holds (a killed run resumes where it stopped)."""

    env: Any = MISSING  # env group (sim.EnvConfig): the twin's env (observations recorded) and the expert's gains
    robot: Any = MISSING  # robot group: emulated | remote | so100 | ur5e (real.robot_choice)
    twin: TwinConfig = field(default_factory=lambda: TwinConfig(mode="collect", rate_hz=45.0, depth_size=(96, 96)))
    collect: CollectConfig = field(default_factory=CollectConfig)
    dataset: CollectDatasetConfig = field(default_factory=CollectDatasetConfig)
    teleop: str = "expert"  # expert: the scripted PushT expert plays the operator (emulated reality only)
    n_episodes: int = 1  # episodes to save
    max_attempts: int = 0  # give up after this many attempts; 0: 2 * n_episodes
    # monitor group: none | streaming (the streaming video model on the robot's live colour frames,
    # real.modes.monitoring); its record goes to <output_dir>/episodes/episode_<attempt>.monitor.jsonl
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    logger: LoggerChoice = field(default_factory=LoggerChoice)  # W&B, for the monitor's answers (monitor/*)
    output_dir: str = MISSING

    def __post_init__(self) -> None:
        if self.teleop not in TELEOPERATORS:
            raise ValueError(f"teleop must be one of {TELEOPERATORS}, got {self.teleop!r}")
        if self.twin.mode != "collect":
            raise ValueError(f"twin.mode must be 'collect' for collection, got {self.twin.mode!r}")
        if self.n_episodes < 1 or self.max_attempts < 0:
            raise ValueError(f"need n_episodes >= 1 and max_attempts >= 0, got {self.n_episodes}, {self.max_attempts}")
        if isinstance(self.robot, EmulatedRobotChoice) and self.robot.reality.time_scale != self.collect.time_scale:
            raise ValueError(f"collect.time_scale ({self.collect.time_scale}) must equal robot.reality.time_scale "
                             f"({self.robot.reality.time_scale}): the twin is paced like the world it follows")


def register_configs() -> None:
    """Registers ``collect_schema`` (and the env and robot groups' schemas) in Hydra's ConfigStore."""
    import sim

    sim.register_configs()
    register_robot_configs()
    ConfigStore.instance().store(name="collect_schema", node=CollectRunConfig)


@dataclass
class CollectionResult:
    """What a collection run did: every attempted episode, which were saved, and the dataset's size afterwards."""

    episodes: list[CollectedEpisode]
    saved: list[bool]
    dataset_episodes: int

    def figures(self) -> dict[str, float | int]:
        """``episodes_saved``/``_attempted`` (this run), ``dataset_episodes``, ``frames_saved``, mean twin and real
        success, ``sync_rms_mm``/``_deg`` (RMS over every truth comparison of every attempt), mean correction and
        stream rates and tracking RMS; with a monitor ``monitor_success_agreement`` with the real success."""
        sync = np.concatenate([e.sync_errors for e in self.episodes]) if self.episodes else np.zeros((0, 2))

        def mean(key: str) -> float:
            values = [e.metrics[key] for e in self.episodes if np.isfinite(e.metrics[key])]
            return float(np.mean(values)) if values else float("nan")

        return {
            "episodes_saved": int(sum(self.saved)),
            "episodes_attempted": len(self.episodes),
            "dataset_episodes": self.dataset_episodes,
            "frames_saved": int(sum(len(e.frames) for e, s in zip(self.episodes, self.saved) if s)),
            "success_twin": mean("success_twin"),
            "success_real": mean("success_real"),
            "sync_rms_mm": float(1e3 * np.sqrt(np.mean(sync[:, 0] ** 2))) if len(sync) else float("nan"),
            "sync_rms_deg": float(np.degrees(np.sqrt(np.mean(sync[:, 1] ** 2)))) if len(sync) else float("nan"),
            "correction_hz": mean("correction_hz"),
            "stream_hz": mean("stream_hz"),
            "tracking_rms_rad": mean("tracking_rms_rad"),
        } | (monitor_figures([e.metrics for e in self.episodes]) if self.monitored else {})

    @property
    def monitored(self) -> bool:
        """Whether an online monitor watched the episodes (their metrics carry ``monitor_success``)."""
        return any("monitor_success" in e.metrics for e in self.episodes)


def collect_dataset(run: CollectRunConfig, tracker: Any = None) -> CollectionResult:
    """Collects until the dataset at ``run.dataset.root`` holds ``run.n_episodes`` episodes or the attempts run out.

    Each attempt gets its own robot session (an emulated reality per episode, seeded like the twin), twin and
    teleoperator; the robot is left holding and disconnected after each, whatever ends it.

    With ``run.monitor`` (``monitor=streaming``) the streaming model watches every attempt, logging to ``tracker``.

    Raises:
        ValueError: the dataset at ``root`` was recorded with other features or fps (from the writer).
    """
    from policies.datasets import LeRobotDatasetWriter, features_from_spaces
    from sim.pusht_env import TASK, PushTEnv

    kwargs = run.env.kwargs
    probe = PushTEnv(kwargs, render_mode=None)
    features = features_from_spaces(probe.observation_space, probe.action_space)
    probe.close()
    attempts = run.max_attempts or 2 * run.n_episodes
    result = CollectionResult([], [], 0)
    monitor = LiveMonitor.from_config(run.monitor, tracker)
    robot_choice = with_monitor_camera(run.robot, run.monitor)  # the emulated reality renders the monitor's camera
    with LeRobotDatasetWriter(run.dataset.root, fps=run.collect.fps, features=features,
                              robot_type=run.dataset.robot_type) as writer:
        saved_before = writer.num_episodes
        while writer.num_episodes < run.n_episodes and len(result.episodes) < attempts:
            seed = run.collect.seed + saved_before + len(result.episodes)
            record = monitor_record_path(Path(run.output_dir) / EPISODES_DIR, len(result.episodes))
            with robot_session(robot_choice, seed) as robot:
                twin = DigitalTwin(following_env(kwargs), run.twin)
                try:
                    teleop = ExpertTeleoperator(twin.env, run.env.expert)
                    episode = Collector(twin, robot, teleop, dataclasses.replace(run.collect, seed=seed),
                                        monitor=monitor, monitor_path=record).run()
                finally:
                    twin.env.close()
            keep = episode.success or run.dataset.keep_failed
            if keep:
                episode.write(writer, task=TASK)
            result.episodes.append(episode)
            result.saved.append(keep)
        result.dataset_episodes = writer.num_episodes
    return result
