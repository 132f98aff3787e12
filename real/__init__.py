"""realsim's hardware side: the Robot interface, the safety layer, and the bridge (wire protocol, server, client).

The real robot only tracks the twin's joints (DESIGN.md section 6). Any :class:`Robot` backend (hardware
drivers in ``real.drivers``, the emulated reality, :class:`SimulatedJointRobot`) is wrapped in a
:class:`SafeRobot` (limits, watchdog, e-stop) and served by a :class:`RobotServer` in its own process;
:class:`RemoteRobot` is the same interface on the client side of the wire.
"""

from real.bridge.client import RemoteRobot, RemoteRobotConfig
from real.bridge.protocol import PROTOCOL_VERSION, ProtocolError
from real.bridge.server import RobotServer, ServerConfig, ServerProcess
from real.bridge.transport import AuthenticationError, RemoteError
from real.emulated.sim_robot import SimulatedJointRobot, SimulatedJointRobotConfig
from real.robot import (
    DeviceAlreadyConnectedError,
    DeviceNotConnectedError,
    Robot,
    RobotConfig,
    joint_features,
    requires_connected,
    requires_disconnected,
)
from real.safe_robot import SafeRobot, SafeRobotConfig
from real.safety import Refusal, SafetyConfig, SafetyLayer, Status

__all__ = [
    "PROTOCOL_VERSION",
    "AuthenticationError",
    "DeviceAlreadyConnectedError",
    "DeviceNotConnectedError",
    "ProtocolError",
    "Refusal",
    "RemoteError",
    "RemoteRobot",
    "RemoteRobotConfig",
    "Robot",
    "RobotConfig",
    "RobotServer",
    "SafeRobot",
    "SafeRobotConfig",
    "SafetyConfig",
    "SafetyLayer",
    "ServerConfig",
    "ServerProcess",
    "SimulatedJointRobot",
    "SimulatedJointRobotConfig",
    "Status",
    "joint_features",
    "requires_connected",
    "requires_disconnected",
]
