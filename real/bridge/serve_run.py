"""A robot server run from config (``scripts/serve_robot.py``): one robot attached to this computer, behind the
safety layer, served over the bridge until SIGTERM or SIGINT, so ``robot=remote`` runs elsewhere can drive it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from real.bridge.server import RobotServer, ServerConfig
from real.robot_choice import RemoteRobotChoice, register_robot_configs
from real.safe_robot import SafeRobot
from real.stop_request import StopRequest

DEFAULT_PORT = 5555


@dataclass
class ServeRobotRunConfig:
    """``scripts/serve_robot.py``: which robot, where to listen (loopback unless ``server.secret`` is set), and for
    ``robot=emulated`` the reality's seed (a run driving it must reset its twin with the same seed).

    Raises:
        ValueError: ``robot=remote`` (there is no robot here to serve).
    """

    robot: Any = MISSING  # robot group: emulated | so100 | ur5e (real.robot_choice)
    server: ServerConfig = field(default_factory=lambda: ServerConfig(port=DEFAULT_PORT))
    seed: int = 0  # robot=emulated: the episode the emulated reality starts from

    def __post_init__(self) -> None:
        if isinstance(self.robot, RemoteRobotChoice):
            raise ValueError("serve_robot.py serves a robot attached to this computer (robot=emulated|so100|ur5e); "
                             "robot=remote is what a deploy run elsewhere uses to reach it")


def register_configs() -> None:
    """Registers ``serve_robot_schema`` and the ``robot`` group's schemas in Hydra's ConfigStore."""
    register_robot_configs()
    ConfigStore.instance().store(name="serve_robot_schema", node=ServeRobotRunConfig)


def serve_robot(run: ServeRobotRunConfig, stop: StopRequest,
                on_ready: Callable[[tuple[str, int]], None] = lambda address: None) -> None:
    """Serves ``run.robot`` until ``stop`` is set, then leaves it holding and disconnected.

    ``on_ready(address)`` is called once the server listens. Commanders that vanish make the robot hold at once; one
    that goes silent trips the watchdog (see :mod:`real.bridge.server`).

    Raises:
        OSError: the address cannot be bound.
        ValueError: the robot's safety limits do not fit it.
        Exception: the robot's own connection errors (a driver's SDK missing, a device not answering).
    """
    robot = SafeRobot(run.robot.backend_factory(run.seed)(), run.robot.safe_robot_config())
    with RobotServer(robot, run.server) as server:
        on_ready(server.address)
        while not stop.wait(0.2):
            pass
