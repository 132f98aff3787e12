"""``ServoArmRobot``: a low-cost arm of bus servos (SO-100/101 on Feetech, Koch on Dynamixel) as a :class:`Robot`.

One observation is one SYNC_READ of present position and velocity; one action is one SYNC_WRITE of goal
positions. Joint angles are converted with the arm's :class:`~real.drivers.calibration.ArmCalibration`.

Connect and disconnect keep the arm still:

* ``connect`` opens the bus, pings every servo, puts any servo not in position mode into it (that needs its
  torque off for a moment), writes goal := present position and then enables torque, so the arm holds where it is
  instead of jumping to a stale goal.
* ``disconnect`` holds (goal := present position) and leaves torque **on**. That is the safe default: an arm whose
  torque is cut falls under gravity onto whatever is below it, while a holding arm stays where it was last seen
  moving. Set ``torque_off_on_disconnect`` only for an arm parked in a pose where it cannot fall.

SYNC_WRITE has no status packet, so the writes of ``connect``, ``hold`` and ``disconnect`` are read back and a
servo that did not take them raises :class:`~real.drivers.errors.ServoBusError` (``send_action``, the hot path,
does not read back: its effect shows in the next observation).

``send_action`` clamps each target to the joint's calibrated range and, with ``max_relative_target``, to at most
that far from the previous target; every clamp is logged; it returns the target sent, quantised to whole ticks.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from real.connection import requires_connected, requires_disconnected
from real.drivers.bus import ServoBus
from real.drivers.calibration import ArmCalibration, JointCalibration
from real.drivers.control_table import CONTROL_TABLES
from real.drivers.dynamixel import DynamixelBus
from real.drivers.errors import ServoBusError
from real.drivers.feetech import FeetechBus
from real.drivers.limits import clamp_joint_target
from real.robot import JOINT_POS, Robot, RobotConfig, joint_action, joint_features, joint_state

log = logging.getLogger(__name__)

BUSES: dict[str, type[ServoBus]] = {"dynamixel": DynamixelBus, "feetech": FeetechBus}

ARM_JOINTS = ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper")


@dataclasses.dataclass
class ServoArmConfig(RobotConfig):
    """Configuration of a :class:`ServoArmRobot`.

    Attributes:
        id: name for logs.
        protocol: ``"feetech"`` (STS servos: SO-100/101) or ``"dynamixel"`` (X-series, Protocol 2.0: Koch).
        port: serial device of the bus, e.g. ``/dev/ttyACM0``.
        joints: per-joint calibration, in command order (see :class:`~real.drivers.calibration.JointCalibration`).
        baudrate: bus speed (bit/s).
        max_relative_target: largest change of a joint target per ``send_action`` (rad); None for no limit.
        torque_off_on_disconnect: cut torque on disconnect instead of holding (see the module docstring).
        num_retries: extra attempts for a failed read.
        timeout_ms: least wait for a status packet (ms); None keeps the SDK's (~35 ms). See
            :class:`~real.drivers.bus.ServoBus`.
    """

    id: str = "servo_arm"
    protocol: str = "feetech"
    port: str = ""
    joints: list[JointCalibration] = dataclasses.field(default_factory=list)
    baudrate: int = 1_000_000
    max_relative_target: float | None = None
    torque_off_on_disconnect: bool = False
    num_retries: int = 2
    timeout_ms: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.protocol not in BUSES:
            raise ValueError(f"ServoArmConfig.protocol must be one of {sorted(BUSES)}, got {self.protocol!r}")
        if not isinstance(self.port, str) or not self.port:
            raise ValueError(f"ServoArmConfig.port must name the serial device, got {self.port!r}")
        if not self.joints:
            raise ValueError("ServoArmConfig.joints must list at least one joint")
        self.joints = [j if isinstance(j, JointCalibration) else JointCalibration(**dict(j)) for j in self.joints]
        if self.max_relative_target is not None and not (self.max_relative_target > 0
                                                         and math.isfinite(self.max_relative_target)):
            raise ValueError(f"ServoArmConfig.max_relative_target must be > 0 rad or None, "
                             f"got {self.max_relative_target}")
        if self.num_retries < 0:
            raise ValueError(f"ServoArmConfig.num_retries must be >= 0, got {self.num_retries}")
        if self.timeout_ms is not None and not self.timeout_ms > 0:
            raise ValueError(f"ServoArmConfig.timeout_ms must be > 0 ms or None, got {self.timeout_ms}")

    @classmethod
    def from_calibration_file(cls, path: str, **kwargs: Any) -> ServoArmConfig:
        """A config whose joints come from a calibration file written by :meth:`ArmCalibration.save`."""
        return cls(joints=ArmCalibration.load(path).joints, **kwargs)


def default_joints(names: Sequence[str] = ARM_JOINTS, first_id: int = 1, half_range: float = math.pi / 2
                   ) -> list[JointCalibration]:
    """Uncalibrated joints: ids ``first_id..``, zero at mid-range (tick 2048), +1 direction, ``+-half_range`` rad."""
    return [JointCalibration(name, first_id + k, 2048, 1, -half_range, half_range) for k, name in enumerate(names)]


def so100_config(port: str, joints: Sequence[JointCalibration] | None = None, **kwargs: Any) -> ServoArmConfig:
    """Config of an SO-100/101 follower arm: six Feetech STS3215 servos, ids 1..6."""
    return ServoArmConfig(id=kwargs.pop("id", "so100"), protocol="feetech", port=port,
                          joints=list(joints) if joints is not None else default_joints(), **kwargs)


def koch_config(port: str, joints: Sequence[JointCalibration] | None = None, **kwargs: Any) -> ServoArmConfig:
    """Config of a Koch v1.1 follower arm: six Dynamixel X-series servos (XL430/XL330), ids 1..6."""
    return ServoArmConfig(id=kwargs.pop("id", "koch"), protocol="dynamixel", port=port,
                          joints=list(joints) if joints is not None else default_joints(), **kwargs)


def _write_verified(bus: ServoBus, name: str, values: np.ndarray) -> None:
    """SYNC_WRITE ``values`` to register ``name`` and read it back (SYNC_WRITE has no status packet to confirm it).

    Raises:
        ServoBusError: a servo holds another value afterwards (names the ids).
    """
    bus.sync_write(name, values)
    back = bus.sync_read(name)[name]
    wrong = [i for i, v, b in zip(bus.motor_ids, values, back) if int(v) != int(b)]
    if wrong:
        raise ServoBusError(f"{bus}: servo id(s) {wrong} did not take {name} = "
                            f"{[int(v) for i, v in zip(bus.motor_ids, values) if i in wrong]}", motor_id=wrong[0])


class ServoArmRobot(Robot):
    """An arm of position-controlled bus servos behind the :class:`~real.robot.Robot` interface.

    Observation (see :mod:`real.robot`): ``joint.pos`` and ``joint.vel`` from one SYNC_READ, ``joint.target``
    (the last target sent), ``timestamp`` (``time.monotonic()`` at the middle of the read). Action:
    ``{"joint.pos": float64 [n]}`` in rad.

    Raises:
        TypeError: ``config`` is not a :class:`ServoArmConfig`.
        ValueError: the calibration does not fit the servos' tick range.
    """

    name = "servo_arm"
    config_class = ServoArmConfig
    _READ = ("present_position", "present_velocity")

    def __init__(self, config: ServoArmConfig) -> None:
        table = CONTROL_TABLES[self.checked_config(config).protocol]
        calibration = ArmCalibration(config.joints, table.ticks_per_rev, table.max_tick, table.velocity_unit)
        super().__init__(config, *joint_features(calibration.names))
        self.config: ServoArmConfig = config  # narrows the type
        self.calibration = calibration
        self._bus: ServoBus | None = None
        self._target = np.zeros(len(self.calibration))
        self.clamp_count = 0

    def _link_alive(self) -> bool:
        """Whether the bus is open."""
        return self._bus is not None and self._bus.is_open

    @property
    def bus(self) -> ServoBus:
        """The open servo bus (for diagnostics and calibration tools).

        Raises:
            ServoBusError: not connected.
        """
        if self._bus is None:
            raise ServoBusError(f"{self}: not connected")
        return self._bus

    @requires_disconnected
    def connect(self) -> None:
        """Open the bus, put every servo in position mode, hold the present position and enable torque.

        Raises:
            MissingDriverError: the vendor SDK is not installed (names the extra to install).
            ConnectionError: the port cannot be opened, or a servo does not answer (names the id).
            ServoBusError: a servo is of the wrong family, or did not take the goal or the torque enable.
        """
        cfg, table = self.config, CONTROL_TABLES[self.config.protocol]
        bus = BUSES[cfg.protocol](cfg.port, self.calibration.motor_ids, cfg.baudrate, cfg.num_retries, cfg.timeout_ms)
        bus.open()
        try:
            modes = bus.sync_read("operating_mode")["operating_mode"]
            for motor_id, mode in zip(bus.motor_ids, modes):
                if mode != table.position_mode:
                    log.warning("%s: servo id %d is in operating mode %d; switching it to position mode %d "
                                "(torque off meanwhile)", self, motor_id, mode, table.position_mode)
                    bus.write("torque_enable", motor_id, 0)
                    bus.write("operating_mode", motor_id, table.position_mode)
            ticks = bus.sync_read("present_position")["present_position"]
            _write_verified(bus, "goal_position", ticks)
            _write_verified(bus, "torque_enable", np.ones_like(ticks))
        except BaseException:
            bus.close()
            raise
        self._bus = bus
        self._target = self.calibration.ticks_to_rad(ticks)
        self._mark_connected()
        outside = (self._target < self.calibration.lower) | (self._target > self.calibration.upper)
        if outside.any():
            log.warning("%s: joint(s) %s start outside their calibrated range; the first targets will be clamped",
                        self, [n for n, o in zip(self.calibration.names, outside) if o])
        log.info("%s: connected on %s, holding at %s rad", self, cfg.port, np.round(self._target, 4).tolist())

    def _read(self) -> tuple[np.ndarray, np.ndarray, float]:
        t0 = time.monotonic()
        raw = self.bus.sync_read(self._READ)
        t1 = time.monotonic()
        return (self.calibration.ticks_to_rad(raw["present_position"]),
                self.calibration.velocity_to_rad_s(raw["present_velocity"]), 0.5 * (t0 + t1))

    @requires_connected
    def get_observation(self) -> dict[str, np.ndarray]:
        """Joint positions (rad) and velocities (rad/s) from one SYNC_READ, the current target and the time.

        Raises:
            DeviceNotConnectedError: not connected.
            ServoNotRespondingError, CorruptPacketError: after the retries failed (names the servo id).
        """
        pos, vel, t = self._read()
        return joint_state(pos, vel, self._target, t)

    @requires_connected
    def send_action(self, action: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Clamp the joint targets (range, then step), SYNC_WRITE them and return what was sent (whole ticks).

        Raises:
            DeviceNotConnectedError: not connected.
            KeyError, ValueError: malformed action, or a non-finite target (refused, nothing is sent).
            ServoBusError: the packet could not be sent.
        """
        target = joint_action(action, len(self.calibration))
        clamped, mask = clamp_joint_target(target, self.calibration.lower, self.calibration.upper, self._target,
                                           self.config.max_relative_target, self.calibration.names, who=repr(self))
        ticks = self.calibration.rad_to_ticks(clamped)
        self.bus.sync_write("goal_position", ticks)
        self._target = self.calibration.ticks_to_rad(ticks)
        self.clamp_count += int(mask.sum())
        return {JOINT_POS: self._target.copy()}

    @requires_connected
    def hold(self) -> None:
        """Stay where the arm is now: goal := present position (torque stays as it is).

        Raises:
            DeviceNotConnectedError: not connected.
            ServoBusError: the positions could not be read or the goal not sent.
        """
        ticks = self.bus.sync_read("present_position")["present_position"]
        _write_verified(self.bus, "goal_position", ticks)
        self._target = self.calibration.ticks_to_rad(ticks)

    @requires_connected
    def read_ticks(self) -> np.ndarray:
        """Raw present positions (ticks, int64), one per joint: what a calibration tool records at the zero pose.

        Raises:
            DeviceNotConnectedError: not connected.
        """
        return self.bus.sync_read("present_position")["present_position"]

    @requires_connected
    def disconnect(self) -> None:
        """Hold (or cut torque if ``torque_off_on_disconnect``) and close the bus; the bus is closed even if that fails.

        Raises:
            DeviceNotConnectedError: not connected.
            ServoBusError: holding failed (the port is closed all the same).
        """
        bus = self.bus
        try:
            if self.config.torque_off_on_disconnect:
                _write_verified(bus, "torque_enable", np.zeros(len(bus.motor_ids), dtype=np.int64))
            else:
                self.hold()
        finally:
            bus.close()
            self._bus = None
            self._mark_disconnected()
        log.info("%s: disconnected (%s)", self, "torque off" if self.config.torque_off_on_disconnect else "holding")
