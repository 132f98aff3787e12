"""A deployment run from config: the policy in the twin, the robot (``robot=`` group, :mod:`real.robot_choice`)
tracking it."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from perception.streaming.monitor import MonitorConfig
from real.modes.deploy import DeployConfig, Deployer
from real.modes.monitoring import LiveMonitor, monitor_figures, monitor_record_path, with_monitor_camera
from real.robot_choice import EmulatedRobotChoice, register_robot_configs, robot_session
from sim.twin import DigitalTwin, TwinConfig, following_env

__all__ = ["DEPLOYED_ENV", "EPISODES_DIR", "FIGURES", "DeployRunConfig", "LoggerChoice", "deploy_episodes",
           "deploy_figures", "prepare_episode_logs", "register_configs", "robot_session"]

EPISODES_DIR = "episodes"  # <output_dir>/episodes/episode_<i>.npz: the twin's episode logs
DEPLOYED_ENV = "env.yaml"  # <output_dir>/episodes/env.yaml: the env config the policy was deployed in
# the per-episode figures scripts/deploy.py prints as mean_<name>
FIGURES = ("success_real", "success_twin", "coverage_real", "peak_coverage_real", "sync_rms_mm", "sync_rms_deg",
           "tracking_rms_rad", "correction_hz", "stream_hz")


@dataclass
class LoggerChoice:
    """W&B tracking of the deployment (offline by default)."""

    project: str = "realsim"
    mode: str = "offline"


@dataclass
class DeployRunConfig:
    """``scripts/deploy.py``: ``n_episodes`` deployments of a trained policy, episode i from seed ``deploy.seed + i``."""

    policy_path: str = MISSING  # run dir, checkpoint dir or pretrained_model dir
    robot: Any = MISSING  # robot group: emulated | remote | so100 | ur5e (real.robot_choice)
    # one correction per depth frame of the emulated reality (conf/robot/emulated.yaml: 45 Hz cameras)
    twin: TwinConfig = field(default_factory=lambda: TwinConfig(rate_hz=45.0, depth_size=(96, 96)))
    deploy: DeployConfig = field(default_factory=DeployConfig)
    n_episodes: int = 1
    device: str = "auto"
    logger: LoggerChoice = field(default_factory=LoggerChoice)
    # monitor group: none | streaming (the streaming video model on the robot's live colour frames,
    # real.modes.monitoring); its record goes to <output_dir>/episodes/episode_<i>.monitor.jsonl
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    output_dir: str = MISSING

    def __post_init__(self) -> None:
        if isinstance(self.robot, EmulatedRobotChoice) and self.robot.reality.time_scale != self.deploy.time_scale:
            raise ValueError(f"deploy.time_scale ({self.deploy.time_scale}) must equal robot.reality.time_scale "
                             f"({self.robot.reality.time_scale}): the twin is paced like the world it drives")


def register_configs() -> None:
    """Registers ``deploy_schema`` and the ``robot`` group's schemas in Hydra's ConfigStore."""
    register_robot_configs()
    ConfigStore.instance().store(name="deploy_schema", node=DeployRunConfig)


def prepare_episode_logs(run: DeployRunConfig, env_cfg: Any) -> Path | None:
    """The folder of the run's episode logs, ``<run.output_dir>/episodes``, with the deployed env config written
    there as ``env.yaml`` (what ``scripts/identify.py`` extends); None when ``run.deploy.episode_log`` is false."""
    if not run.deploy.episode_log:
        return None
    log_dir = Path(run.output_dir) / EPISODES_DIR
    log_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(OmegaConf.structured(env_cfg), log_dir / DEPLOYED_ENV)
    return log_dir


def deploy_episodes(run: DeployRunConfig, env_kwargs: Any, policy: Any, tracker: Any = None,
                    stop_requested: Callable[[], bool] | None = None,
                    log_dir: str | os.PathLike | None = None) -> list[dict[str, float]]:
    """Deploys ``policy`` for ``run.n_episodes`` episodes; returns each episode's metrics (see ``Deployer.run``).
    With ``log_dir`` (and ``run.deploy.episode_log``) episode ``i``'s twin log is written to
    ``<log_dir>/episode_<i>.npz`` (``sim.episode_log``).

    Before anything moves the robot's joints are checked against the twin's arm. The robot is left holding and
    disconnected after every episode, whatever ends it (success, Ctrl-C, an exception, a lost connection).

    Raises:
        ValueError: the robot's joints are not the twin's arm joints (from ``robot_session``), or it starts away
            from the twin's initial joints (from ``Deployer.run``).
    """
    results = []
    monitor = LiveMonitor.from_config(run.monitor, tracker)
    robot_choice = with_monitor_camera(run.robot, run.monitor)  # the emulated reality renders the monitor's camera
    records = Path(run.output_dir) / EPISODES_DIR
    for episode in range(run.n_episodes):
        seed = run.deploy.seed + episode
        with robot_session(robot_choice, seed) as robot:
            twin = DigitalTwin(following_env(env_kwargs), run.twin)
            deployer = Deployer(twin, robot, policy=policy, config=dataclasses.replace(run.deploy, seed=seed),
                                tracker=tracker, stop_requested=stop_requested,
                                log_path=None if log_dir is None else Path(log_dir) / f"episode_{episode}.npz",
                                monitor=monitor, monitor_path=monitor_record_path(records, episode))
            results.append(deployer.run())
    return results


def deploy_figures(results: list[dict[str, float]], monitor: MonitorConfig) -> dict[str, float]:
    """What ``scripts/deploy.py`` prints: ``mean_<k>`` of each of :data:`FIGURES` over the episodes (NaN-skipping)
    and, with a monitor, ``monitor_success_agreement`` with reality's success (:func:`monitor_figures`)."""
    figures = {f"mean_{k}": float(np.nanmean([r[k] for r in results])) for k in FIGURES}
    return figures | (monitor_figures(results) if monitor.enabled else {})
