"""A deployment run from config: the policy in the twin, the robot (emulated reality or a robot server) tracking it."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from real.client import RemoteRobot, RemoteRobotConfig
from real.deployment import DeployConfig, Deployer
from real.emulated_reality import EmulatedRealityConfig, EmulatedRealityRobot
from real.server import ServerProcess
from sim.pusht_env import PushTEnv
from sim.twin import DigitalTwin, TwinConfig

ROBOT_KINDS = ("emulated", "remote")


@dataclass
class RobotChoice:
    """Which robot tracks the twin: ``emulated`` starts the emulated reality in its own process (one per episode, seeded
    like the twin); ``remote`` connects to a robot server already running at ``host:port`` (hardware behind the safety
    layer, e.g. ``python -m real.server`` on the robot's computer)."""

    kind: str = "emulated"
    host: str = "127.0.0.1"
    port: int = 0  # remote only
    secret: str = ""  # remote only, when the server is not on loopback

    def __post_init__(self) -> None:
        if self.kind not in ROBOT_KINDS:
            raise ValueError(f"robot.kind must be one of {ROBOT_KINDS}, got {self.kind!r}")
        if self.kind == "remote" and not 1 <= self.port <= 65535:
            raise ValueError(f"robot.port must be the robot server's TCP port for robot.kind=remote, got {self.port}")


@dataclass
class LoggerChoice:
    """W&B tracking of the deployment (offline by default)."""

    project: str = "realsim"
    mode: str = "offline"


@dataclass
class DeployRunConfig:
    """``scripts/deploy.py``: ``n_episodes`` deployments of a trained policy, episode i from seed ``deploy.seed + i``."""

    policy_path: str = MISSING  # run dir, checkpoint dir or pretrained_model dir
    robot: RobotChoice = field(default_factory=RobotChoice)
    reality: EmulatedRealityConfig = field(default_factory=EmulatedRealityConfig)  # robot.kind=emulated only
    twin: TwinConfig = field(default_factory=lambda: TwinConfig(rate_hz=30.0, depth_size=(96, 96)))
    deploy: DeployConfig = field(default_factory=DeployConfig)
    n_episodes: int = 1
    device: str = "auto"
    logger: LoggerChoice = field(default_factory=LoggerChoice)
    output_dir: str = MISSING


def register_configs() -> None:
    """Registers ``deploy_schema`` in Hydra's ConfigStore."""
    ConfigStore.instance().store(name="deploy_schema", node=DeployRunConfig)


@contextlib.contextmanager
def robot_session(choice: RobotChoice, reality: EmulatedRealityConfig, seed: int) -> Iterator[RemoteRobot]:
    """The robot for one episode; an emulated reality is started (seeded like the twin) and stopped around it."""
    if choice.kind == "remote":
        yield RemoteRobot(RemoteRobotConfig(host=choice.host, port=choice.port, secret=choice.secret))
        return
    config = dataclasses.replace(reality, seed=seed)
    with ServerProcess(functools.partial(EmulatedRealityRobot, config)) as process:
        yield RemoteRobot(RemoteRobotConfig(port=process.address[1]))


def deploy_episodes(run: DeployRunConfig, env_kwargs: Any, policy: Any, tracker: Any = None) -> list[dict[str, float]]:
    """Deploys ``policy`` for ``run.n_episodes`` episodes; returns each episode's metrics (see ``Deployer.run``).

    The robot is left holding and disconnected after every episode, whatever ends it (success, Ctrl-C, an
    exception, a lost connection).
    """
    results = []
    for episode in range(run.n_episodes):
        seed = run.deploy.seed + episode
        with robot_session(run.robot, run.reality, seed) as robot:
            twin = DigitalTwin(PushTEnv(env_kwargs), run.twin)
            deployer = Deployer(twin, robot, policy=policy, config=dataclasses.replace(run.deploy, seed=seed),
                                tracker=tracker)
            results.append(deployer.run())
    return results
