"""Universal Robots e-Series arms through ``ur_rtde`` (extra ``realsim[ur]``), behind the :class:`Robot` interface.

``connect`` opens an ``RTDEReceiveInterface`` (joint state) and an ``RTDEControlInterface`` (commands) to the
robot's controller; ``send_action`` streams a joint target with ``servoJ``; ``hold`` ends servo mode with
``servoStop`` (the controller decelerates and holds the joints); ``disconnect`` holds, stops the control script and
closes both interfaces. The driver clamps every target to the configured joint range and to
``max_velocity * command_period`` from the previous target, so one command can never ask for a jump: a caller must
send a target every ``command_period`` seconds (2 ms for a 500 Hz stream), and a slower caller gets a slower arm.

``ur_rtde`` is imported in ``connect``, never at module import: features and limits can be read, and the clamping
tested, on machines without it. Without a robot the test suite checks those, and that ``connect`` fails with a
clear error (package missing, or no controller at ``host``).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from real.connection import requires_connected, requires_disconnected
from real.drivers.errors import import_sdk
from real.drivers.limits import clamp_joint_target
from real.robot import JOINT_POS, Robot, RobotConfig, joint_action, joint_features, joint_state

log = logging.getLogger(__name__)

UR_JOINTS = ["shoulder_pan", "shoulder_lift", "elbow", "wrist_1", "wrist_2", "wrist_3"]
# UR5e/UR10e: every joint turns +-360 deg; the elbow is limited to +-180 deg here (it cannot pass through the arm).
UR_LOWER = [-2 * math.pi, -2 * math.pi, -math.pi, -2 * math.pi, -2 * math.pi, -2 * math.pi]
UR_UPPER = [2 * math.pi, 2 * math.pi, math.pi, 2 * math.pi, 2 * math.pi, 2 * math.pi]
# UR5e joint speed limits are 180 deg/s; start well below them.
UR_MAX_VELOCITY = [math.pi / 2] * 6


@dataclasses.dataclass
class URConfig(RobotConfig):
    """Configuration of a :class:`URRobot`.

    Attributes:
        id: name for logs.
        host: the controller's IP address or host name.
        frequency: RTDE update rate (Hz); e-Series controllers run at 500 Hz.
        command_period: time between ``send_action`` calls the caller keeps (s); also ``servoJ``'s ``time``.
        lower, upper: joint limits (rad), inside the robot's +-2 pi.
        max_velocity: joint speed limits (rad/s) that bound each command's step.
        lookahead_time: ``servoJ`` look-ahead (s), 0.03..0.2; longer is smoother and lags more.
        gain: ``servoJ`` proportional gain, 100..2000.
        stop_deceleration: deceleration of ``servoStop`` (m/s^2 of the tool).
    """

    id: str = "ur5e"
    host: str = "192.168.1.10"
    frequency: float = 500.0
    command_period: float = 0.002
    lower: list[float] = dataclasses.field(default_factory=lambda: list(UR_LOWER))
    upper: list[float] = dataclasses.field(default_factory=lambda: list(UR_UPPER))
    max_velocity: list[float] = dataclasses.field(default_factory=lambda: list(UR_MAX_VELOCITY))
    lookahead_time: float = 0.1
    gain: float = 300.0
    stop_deceleration: float = 2.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.host, str) or not self.host:
            raise ValueError(f"URConfig.host must name the robot controller, got {self.host!r}")
        if not 0 < self.frequency <= 500:
            raise ValueError(f"URConfig.frequency must be in (0, 500] Hz, got {self.frequency}")
        if not 1.0 / self.frequency <= self.command_period <= 0.1:
            raise ValueError(f"URConfig.command_period must be in [1/frequency, 0.1] s, got {self.command_period}")
        for field in ("lower", "upper", "max_velocity"):
            values = getattr(self, field)
            if len(values) != len(UR_JOINTS) or not all(math.isfinite(v) for v in values):
                raise ValueError(f"URConfig.{field} must be {len(UR_JOINTS)} finite values, got {values}")
        bad = [n for n, lo, hi in zip(UR_JOINTS, self.lower, self.upper)
               if not -2 * math.pi <= lo < hi <= 2 * math.pi]
        if bad:
            raise ValueError(f"URConfig: joint(s) {bad} need -2pi <= lower < upper <= 2pi "
                             f"(lower={self.lower}, upper={self.upper})")
        if not all(0 < v <= math.pi for v in self.max_velocity):
            raise ValueError(f"URConfig.max_velocity must be in (0, pi] rad/s, got {self.max_velocity}")
        if not 0.03 <= self.lookahead_time <= 0.2:
            raise ValueError(f"URConfig.lookahead_time must be in [0.03, 0.2] s, got {self.lookahead_time}")
        if not 100 <= self.gain <= 2000:
            raise ValueError(f"URConfig.gain must be in [100, 2000], got {self.gain}")
        if not self.stop_deceleration > 0:
            raise ValueError(f"URConfig.stop_deceleration must be > 0, got {self.stop_deceleration}")


class URRobot(Robot):
    """A Universal Robots arm streamed with ``servoJ`` (observation and action as in :mod:`real.robot`).

    Raises:
        TypeError: ``config`` is not a :class:`URConfig`.
    """

    name = "ur"
    config_class = URConfig

    def __init__(self, config: URConfig) -> None:
        super().__init__(config, *joint_features(UR_JOINTS))
        self.config: URConfig = config
        self._lower = np.asarray(config.lower, dtype=np.float64)
        self._upper = np.asarray(config.upper, dtype=np.float64)
        self._max_step = np.asarray(config.max_velocity, dtype=np.float64) * config.command_period
        self._control: Any = None
        self._receive: Any = None
        self._target = np.zeros(len(UR_JOINTS))
        self.clamp_count = 0

    def clamp(self, target: np.ndarray, previous: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """What ``send_action`` would send for ``target`` after ``previous``: ``(clamped [6], clamped_mask [6])``.

        Raises:
            ValueError: wrong shape or a non-finite target.
        """
        return clamp_joint_target(target, self._lower, self._upper, previous, self._max_step, UR_JOINTS, repr(self))

    @requires_disconnected
    def connect(self) -> None:
        """Open the RTDE receive and control interfaces and hold the current joint positions.

        Raises:
            MissingDriverError: ``ur_rtde`` is not installed (names the extra).
            ConnectionError: no controller answers at ``host``, or it refused the control script.
        """
        rtde_receive = import_sdk("rtde_receive", "ur-rtde", "ur", type(self).__name__)
        rtde_control = import_sdk("rtde_control", "ur-rtde", "ur", type(self).__name__)
        host, freq = self.config.host, self.config.frequency
        receive = control = None
        try:
            receive = rtde_receive.RTDEReceiveInterface(host, freq)
            control = rtde_control.RTDEControlInterface(host, freq)
            q = np.asarray(receive.getActualQ(), dtype=np.float64)
        except RuntimeError as exc:
            for iface in (control, receive):
                if iface is not None:
                    iface.disconnect()
            raise ConnectionError(f"{self}: cannot connect to the UR controller at {host!r}: {exc}") from exc
        if q.shape != (len(UR_JOINTS),):
            raise ConnectionError(f"{self}: controller at {host!r} reported {q.shape} joint positions")
        self._receive, self._control, self._target = receive, control, q
        self._mark_connected()
        outside = (q < self._lower) | (q > self._upper)
        if outside.any():
            log.warning("%s: joint(s) %s start outside the configured range; the first targets will be clamped",
                        self, [n for n, o in zip(UR_JOINTS, outside) if o])

    @requires_connected
    def get_observation(self) -> dict[str, np.ndarray]:
        """Actual joint positions (rad) and velocities (rad/s) from RTDE, the current target and the time."""
        t0 = time.monotonic()
        q = np.asarray(self._receive.getActualQ(), dtype=np.float64)
        qd = np.asarray(self._receive.getActualQd(), dtype=np.float64)
        t = 0.5 * (t0 + time.monotonic())
        return joint_state(q, qd, self._target, t)

    @requires_connected
    def send_action(self, action: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Clamp the joint targets and stream them with ``servoJ``; return the targets sent.

        Raises:
            KeyError, ValueError: malformed action or a non-finite target (nothing is sent).
            ConnectionError: the controller rejected the command (e.g. protective stop).
        """
        target = joint_action(action, len(UR_JOINTS))
        clamped, mask = self.clamp(target, self._target)
        cfg = self.config
        if not self._control.servoJ(clamped.tolist(), 0.0, 0.0, cfg.command_period, cfg.lookahead_time, cfg.gain):
            raise ConnectionError(f"{self}: the controller rejected servoJ (protective stop or program not running?)")
        self._target = clamped
        self.clamp_count += int(mask.sum())
        return {JOINT_POS: clamped.copy()}

    @requires_connected
    def hold(self) -> None:
        """End servo mode; the controller decelerates and holds the joints; target := actual positions."""
        self._control.servoStop(self.config.stop_deceleration)
        self._target = np.asarray(self._receive.getActualQ(), dtype=np.float64)

    @requires_connected
    def disconnect(self) -> None:
        """Hold, stop the control script and close both interfaces (closed even if holding fails)."""
        try:
            self.hold()
        finally:
            control, receive, self._control, self._receive = self._control, self._receive, None, None
            self._mark_disconnected()
            try:
                control.stopScript()
                control.disconnect()
            finally:
                receive.disconnect()
