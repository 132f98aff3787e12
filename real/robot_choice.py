"""Which robot a run drives (the Hydra ``robot`` group, typed), and one session with it.

``robot=emulated`` (the emulated reality), ``robot=so100`` (a Feetech SO-100/101 arm) and ``robot=ur5e`` (a UR
e-Series arm via ``ur_rtde``) are *local*: :func:`robot_session` serves them behind the safety layer in their own
process (:class:`real.bridge.server.ServerProcess`, loopback, a free port), so a crash or kill of the run leaves the robot
holding. ``robot=remote`` connects to a robot server already running elsewhere (``scripts/serve_robot.py`` on the
robot's computer). Either way the run gets a :class:`real.bridge.client.RemoteRobot`.

Each ``*RobotChoice`` here is a config (the group's schema), not a robot: it says which robot and builds its backend
(:class:`~real.emulated.reality.EmulatedRealityRobot`, :class:`~real.drivers.servo_arm.ServoArmRobot`,
:class:`~real.drivers.ur.URRobot`) in the server process.

The twin models a 7-joint Panda: before anything moves, :func:`robot_session` reads the served robot's joints from
the server's handshake and refuses (``ValueError``) a robot whose joints are not the twin's arm joints.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import socket
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from real.bridge.client import RemoteRobot, RemoteRobotConfig
from real.bridge.server import ServerConfig, ServerProcess
from real.bridge.transport import FramedSocket, client_handshake, secret_bytes
from real.drivers.calibration import ArmCalibration, JointCalibration
from real.drivers.servo_arm import ARM_JOINTS as SO100_JOINTS
from real.drivers.servo_arm import ServoArmConfig, ServoArmRobot, so100_config
from real.drivers.ur import URConfig, URRobot
from real.emulated.reality import EmulatedRealityConfig, EmulatedRealityRobot
from real.robot import Robot
from real.safe_robot import SafeRobotConfig
from real.safety import SafetyConfig


@dataclass
class EmulatedRobotChoice:
    """``robot=emulated``: the emulated reality (its own MuJoCo world, differing from the twin), one per session,
    started from the session's seed (the twin's reset seed); the Panda's safety limits."""

    name: ClassVar[str] = "emulated"
    # 45 Hz depth cameras; half speed (conf/robot/emulated.yaml says why: 2 cores cannot run it in real time)
    reality: EmulatedRealityConfig = field(default_factory=lambda: EmulatedRealityConfig(camera_hz=45.0, time_scale=0.5))

    def backend_factory(self, seed: int) -> Callable[[], Robot]:
        """Builds the emulated reality started from ``seed`` (picklable, for the server process)."""
        return functools.partial(EmulatedRealityRobot, dataclasses.replace(self.reality, seed=seed))

    def safe_robot_config(self) -> SafeRobotConfig | None:
        """``None``: the safety layer's defaults are the Panda's limits."""
        return None


@dataclass
class RemoteRobotChoice:
    """``robot=remote``: a robot server already running at ``host:port`` (hardware behind the safety layer, e.g.
    ``python scripts/serve_robot.py`` on the robot's computer); ``secret`` if it is not on loopback."""

    name: ClassVar[str] = "remote"
    host: str = "127.0.0.1"
    port: int = MISSING  # the server's TCP port
    secret: str = ""  # shared secret of the server's HMAC handshake ("" on loopback)
    connect_timeout: float = 5.0  # s for the TCP connection and the handshake

    def __post_init__(self) -> None:
        if not isinstance(self.port, int) or not 1 <= self.port <= 65535:
            raise ValueError(f"robot.port must be the robot server's TCP port in [1, 65535] for robot=remote, "
                             f"got {self.port!r}")


@dataclass
class SO100RobotChoice:
    """``robot=so100``: an SO-100/101 follower arm, six Feetech STS3215 servos on one serial bus
    (``feetech-servo-sdk``), joints ``shoulder_pan .. gripper`` in servo order.

    The safety layer's joint limits are the calibrated ranges; its velocity and acceleration limits are
    ``max_velocity`` and ``max_acceleration`` for every joint.

    Raises:
        ValueError: from :meth:`servo_arm_config`: not six servo ids, or a calibration file for other ids.
    """

    name: ClassVar[str] = "so100"
    port: str = MISSING  # serial device of the bus, e.g. /dev/ttyACM0
    servo_ids: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 5, 6])  # shoulder_pan first
    calibration: str = ""  # JSON file from ArmCalibration.save; "" = uncalibrated (zero at tick 2048, +-90 deg)
    baudrate: int = 1_000_000
    max_relative_target: float | None = None  # rad per command the driver allows; None: the safety layer's max_step
    timeout_ms: float | None = None  # least wait for a status packet; None: the SDK's
    max_velocity: float = 2.0  # rad/s, per joint (STS3215 no-load speed is ~4.7 rad/s)
    max_acceleration: float = 20.0  # rad/s^2, per joint

    def servo_arm_config(self) -> ServoArmConfig:
        """The driver's config: the calibration file's joints, or uncalibrated joints on ``servo_ids``."""
        ids = [int(i) for i in self.servo_ids]
        if len(ids) != len(SO100_JOINTS):
            raise ValueError(f"robot.servo_ids must list {len(SO100_JOINTS)} servo ids ({', '.join(SO100_JOINTS)}), "
                             f"got {ids}")
        if self.calibration:
            joints = ArmCalibration.load(self.calibration).joints
            if [j.motor_id for j in joints] != ids:
                raise ValueError(f"robot.calibration {self.calibration!r} is for servo ids "
                                 f"{[j.motor_id for j in joints]}, robot.servo_ids is {ids}")
        else:
            joints = [JointCalibration(n, i) for n, i in zip(SO100_JOINTS, ids)]
        return so100_config(self.port, joints, baudrate=self.baudrate, max_relative_target=self.max_relative_target,
                            timeout_ms=self.timeout_ms)

    def backend_factory(self, seed: int) -> Callable[[], Robot]:
        """Builds the arm's driver (``seed`` unused: hardware starts where it is)."""
        return functools.partial(ServoArmRobot, self.servo_arm_config())

    def safe_robot_config(self) -> SafeRobotConfig:
        """Limits from the calibrated joint ranges and ``max_velocity``/``max_acceleration``."""
        joints = self.servo_arm_config().joints
        n = len(joints)
        return SafeRobotConfig(id=self.name, safety=SafetyConfig(
            lower=tuple(j.min_rad for j in joints), upper=tuple(j.max_rad for j in joints),
            max_velocity=(self.max_velocity,) * n, max_acceleration=(self.max_acceleration,) * n))


@dataclass
class UR5eRobotChoice:
    """``robot=ur5e``: a Universal Robots e-Series arm streamed with ``servoJ`` through ``ur_rtde``; the safety layer
    uses the driver's joint ranges and speed limits and ``max_acceleration`` for every joint."""

    name: ClassVar[str] = "ur5e"
    host: str = MISSING  # the controller's IP address
    frequency: float = 500.0  # RTDE rate (Hz)
    command_period: float = 0.01  # s between commands: the deploy streamer's period (deploy.stream_hz = 100)
    lookahead_time: float = 0.1  # servoJ look-ahead (s)
    gain: float = 300.0  # servoJ proportional gain
    max_acceleration: float = 3.14  # rad/s^2, per joint

    def ur_config(self) -> URConfig:
        """The driver's config.

        Raises:
            ValueError: a value the driver refuses (names it).
        """
        return URConfig(id=self.name, host=self.host, frequency=self.frequency, command_period=self.command_period,
                        lookahead_time=self.lookahead_time, gain=self.gain)

    def backend_factory(self, seed: int) -> Callable[[], Robot]:
        """Builds the arm's driver (``seed`` unused: hardware starts where it is)."""
        return functools.partial(URRobot, self.ur_config())

    def safe_robot_config(self) -> SafeRobotConfig:
        """Limits from the driver's joint ranges and speeds, and ``max_acceleration``."""
        ur = self.ur_config()
        return SafeRobotConfig(id=self.name, safety=SafetyConfig(
            lower=tuple(ur.lower), upper=tuple(ur.upper), max_velocity=tuple(ur.max_velocity),
            max_acceleration=(self.max_acceleration,) * len(ur.lower)))


LocalRobotChoice = EmulatedRobotChoice | SO100RobotChoice | UR5eRobotChoice
RobotChoice = LocalRobotChoice | RemoteRobotChoice
ROBOT_GROUP: dict[str, type] = {c.name: c for c in (EmulatedRobotChoice, RemoteRobotChoice, SO100RobotChoice, UR5eRobotChoice)}


def register_robot_configs() -> None:
    """Registers the ``robot`` group's schemas (``robot/<name>_schema``) in Hydra's ConfigStore."""
    for name, node in ROBOT_GROUP.items():
        ConfigStore.instance().store(group="robot", name=f"{name}_schema", node=node)


def serve_process(robot: LocalRobotChoice, seed: int, server: ServerConfig | None = None) -> ServerProcess:
    """A (not yet started) server process serving ``robot`` behind the safety layer.

    Raises:
        TypeError: ``robot`` is not a local robot (``robot=remote`` is served elsewhere).
    """
    if not isinstance(robot, LocalRobotChoice):
        raise TypeError(f"only a local robot ({', '.join(n for n in ROBOT_GROUP if n != 'remote')}) can be served "
                        f"here, got {type(robot).__name__}")
    return ServerProcess(robot.backend_factory(seed), server, robot=robot.safe_robot_config())


def server_description(host: str, port: int, secret: str = "", timeout: float = 5.0) -> dict[str, Any]:
    """The robot server's description from one handshake (backend ``name``, ``id``, ``joint_names``, ``safety``...);
    nothing is commanded.

    Raises:
        ConnectionError, TimeoutError: the server cannot be reached or refused the handshake.
    """
    conn = FramedSocket(socket.create_connection((host, int(port)), timeout=timeout))
    try:
        return dict(client_handshake(conn, secret_bytes(secret), timeout).info)
    finally:
        conn.close()


def check_twin_arm(robot: str, joint_names: Sequence[str]) -> None:
    """Checks that a robot (``robot``: how the message names it) has the twin's arm joints (``sim.pusht_env.ARM_JOINTS``,
    same names, same order).

    Raises:
        ValueError: naming the robot, its joints, the twin's joints, and that the twin has no scene for that arm.
    """
    from sim.pusht_env import ARM_JOINTS

    if list(joint_names) != list(ARM_JOINTS):
        raise ValueError(f"{robot} has {len(joint_names)} joints {list(joint_names)}, but the twin's arm "
                         f"(sim.pusht_env.ARM_JOINTS) has {len(ARM_JOINTS)} joints {list(ARM_JOINTS)}: the PushT twin "
                         f"models a 7-joint Franka Panda and its scene for this arm is missing, so the twin cannot "
                         f"drive it (add the arm's MJCF scene to the twin first)")


def _checked_robot(label: str, host: str, port: int, secret: str, timeout: float = 5.0) -> RemoteRobot:
    info = server_description(host, port, secret, timeout)
    names = [str(n) for n in info.get("joint_names", [])]
    check_twin_arm(f"{label} ({info.get('name')} {info.get('id')!r} at {host}:{port})", names)
    return RemoteRobot(RemoteRobotConfig(host=host, port=port, secret=secret, joint_names=tuple(names),
                                         connect_timeout=timeout))


@contextlib.contextmanager
def robot_session(robot_cfg: RobotChoice, seed: int) -> Iterator[RemoteRobot]:
    """The robot for one episode, as a (not yet connected) :class:`RemoteRobot` whose joints were checked against the
    twin's arm before anything moved. A local robot is served in its own process (the emulated reality started
    from ``seed``) and stopped, holding, when the session ends, whatever ends it.

    Raises:
        ValueError: the robot's joints are not the twin's arm joints (:func:`check_twin_arm`).
        RuntimeError: the local robot's server process failed to start (the message says why).
        ConnectionError: a remote server cannot be reached or refused the handshake.
    """
    if isinstance(robot_cfg, RemoteRobotChoice):
        yield _checked_robot(f"robot={robot_cfg.name}", robot_cfg.host, robot_cfg.port, robot_cfg.secret,
                             robot_cfg.connect_timeout)
        return
    with serve_process(robot_cfg, seed) as process:
        host, port = process.address
        yield _checked_robot(f"robot={robot_cfg.name}", host, port, "")
