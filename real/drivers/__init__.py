"""Hardware drivers: servo buses (Dynamixel, Feetech), servo arms (SO-100/101, Koch) and Universal Robots arms.

The vendors' SDKs are optional extras, imported when a bus opens or a robot connects, so everything here can be
imported, configured and inspected without them:

* ``realsim[dynamixel]``: ``dynamixel-sdk`` (:class:`DynamixelBus`, Protocol 2.0, X-series)
* ``realsim[feetech]``: ``feetech-servo-sdk`` (:class:`FeetechBus`, STS series)
* ``realsim[ur]``: ``ur-rtde`` (:class:`URRobot`)

:class:`EmulatedServoBus` plays a bus of servos on a pseudo-terminal for tests and demos.
"""

from real.drivers.bus import ServoBus
from real.drivers.calibration import ArmCalibration, JointCalibration
from real.drivers.control_table import DYNAMIXEL_X, FEETECH_STS, ControlTable, Register
from real.drivers.dynamixel import DynamixelBus
from real.drivers.emulated_bus import EmulatedServoBus
from real.drivers.errors import (
    CorruptPacketError,
    MissingDriverError,
    ServoBusError,
    ServoNotRespondingError,
    ServoStatusError,
)
from real.drivers.feetech import FeetechBus
from real.drivers.limits import clamp_joint_target
from real.drivers.servo_arm import ServoArmConfig, ServoArmRobot, default_joints, koch_config, so100_config
from real.drivers.ur import URConfig, URRobot

__all__ = [
    "DYNAMIXEL_X",
    "FEETECH_STS",
    "ArmCalibration",
    "ControlTable",
    "CorruptPacketError",
    "DynamixelBus",
    "EmulatedServoBus",
    "FeetechBus",
    "JointCalibration",
    "MissingDriverError",
    "Register",
    "ServoArmConfig",
    "ServoArmRobot",
    "ServoBus",
    "ServoBusError",
    "ServoNotRespondingError",
    "ServoStatusError",
    "URConfig",
    "URRobot",
    "clamp_joint_target",
    "default_joints",
    "koch_config",
    "so100_config",
]
