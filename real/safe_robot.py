"""A robot behind the always-on safety layer and the command watchdog: what the bridge server drives.

Every command to the backend goes through :class:`real.safety.SafetyLayer`; a watchdog thread makes the
backend hold its position when no fresh (accepted) command came for ``watchdog_timeout``. Holding means the
backend's ``hold()``: it brakes within its acceleration limits and stays where it comes to rest.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from real.connection import requires_connected, requires_disconnected
from real.robot import JOINT_POS, JOINT_STATE_KEYS, JOINT_TARGET, Robot, RobotConfig, joint_action, joint_features, safety_state
from real.safety import Refusal, SafetyConfig, SafetyLayer, Status, Verdict, check_joint_count
from real.watchdog import Watchdog

log = logging.getLogger(__name__)


@dataclasses.dataclass
class SafeRobotConfig(RobotConfig):
    """The safety limits and watchdog timeout applied to a backend."""

    id: str = "safe"
    safety: SafetyConfig = dataclasses.field(default_factory=SafetyConfig)

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.safety, Mapping):
            self.safety = SafetyConfig(**self.safety)
        if not isinstance(self.safety, SafetyConfig):
            raise TypeError(f"SafeRobotConfig.safety must be a SafetyConfig, got {type(self.safety).__name__}")


class SafeRobot(Robot):
    """Wraps any joint-space :class:`Robot` with the safety layer, the watchdog and the e-stop.

    It owns the backend: ``connect`` connects it and makes it hold, ``disconnect`` makes it hold and disconnects
    it. Calls are serialised by one lock, so the server's connection threads and the watchdog thread may call
    it concurrently. ``send_action`` returns the target the robot tracks after the call: the clamped target if
    the command was accepted, the unchanged previous target if it was refused (``last_verdict`` says why).

    Args:
        backend: the robot to protect; its action must be ``{"joint.pos": [n]}``.
        config: limits (their joint count must match the backend's).
        fk: optional forward kinematics for the workspace check (see :class:`SafetyLayer`).
        clock: monotonic time source in seconds (default ``time.monotonic``), the clock of ``sent_at``.

    Raises:
        TypeError: ``backend`` is not a Robot.
        ValueError: the limits describe another number of joints than the backend has.
    """

    name = "safe"
    config_class = SafeRobotConfig

    def __init__(self, backend: Robot, config: SafeRobotConfig | None = None,
                 fk: Callable[[np.ndarray], np.ndarray] | None = None, clock: Callable[[], float] | None = None) -> None:
        if not isinstance(backend, Robot):
            raise TypeError(f"SafeRobot needs a Robot backend, got {type(backend).__name__}")
        if set(backend.action_features) != {JOINT_POS}:
            raise ValueError(f"SafeRobot needs a joint-position backend; {backend!r} has actions "
                             f"{sorted(backend.action_features)}")
        missing = [key for key in JOINT_STATE_KEYS if key not in backend.observation_features]
        if missing:
            raise ValueError(f"SafeRobot needs a backend that observes {list(JOINT_STATE_KEYS)}; {backend!r} lacks "
                             f"{missing}")
        joint_obs, action_features = joint_features(backend.joint_names, safety=True)
        super().__init__(config if config is not None else SafeRobotConfig(),
                         {**backend.observation_features, **joint_obs}, action_features)
        self.config: SafeRobotConfig
        self.backend = backend
        check_joint_count(self.config.safety, backend.joint_names)
        self.safety = SafetyLayer(self.config.safety, fk)
        self._clock = clock or time.monotonic
        self._lock = threading.RLock()
        self._watchdog = Watchdog(self.config.safety.watchdog_timeout, self._on_watchdog, name=f"watchdog-{self.config.id}")
        self._target: np.ndarray | None = None
        self._last_command_time = -np.inf
        self.last_verdict = Verdict(None)
        self.hold_reason: str | None = None  # why the robot holds now (None: it tracks commands)
        self.held_at: float | None = None  # clock time of the current hold
        self.on_watchdog: Callable[[], None] | None = None  # called (with the lock held) after a watchdog hold

    @property
    def status(self) -> Status:
        """The current :class:`Status` bits."""
        bits = Status.OK
        if self.safety.estopped:
            bits |= Status.ESTOP
        if self.hold_reason is not None:
            bits |= Status.HOLDING
        if self.hold_reason == "watchdog":
            bits |= Status.WATCHDOG
        if self.last_verdict.clamps:
            bits |= Status.CLAMPED
        if self.last_verdict.refusal != Refusal.NONE:
            bits |= Status.REFUSED
        return bits

    @requires_disconnected
    def connect(self) -> None:
        """Connect the backend, make it hold, and start the watchdog (armed by the first accepted command)."""
        with self._lock:
            if not self.backend.is_connected:
                self.backend.connect()
            self._mark_connected()
            self.hold_reason = None  # force a fresh hold at the current position
            self._hold("connect")
        self._watchdog.start()

    @requires_connected
    def disconnect(self) -> None:
        """Stop the watchdog, make the backend hold, and disconnect it."""
        self._watchdog.stop()
        with self._lock:
            try:
                self._hold("disconnect")
            finally:
                self._mark_disconnected()
                if self.backend.is_connected:
                    self.backend.disconnect()

    @requires_connected
    def get_observation(self) -> dict[str, np.ndarray]:
        """The backend's observation plus the safety status and counters."""
        with self._lock:
            return self._with_safety(self.backend.get_observation())

    @requires_connected
    def get_joint_state(self) -> dict[str, np.ndarray]:
        """The backend's joint state (no camera reads) plus the safety status and counters."""
        with self._lock:
            return self._with_safety(self.backend.get_joint_state())

    @requires_connected
    def read_sensors(self) -> dict[str, Any]:
        """The backend's sensor readings. Not under the command lock: a slow camera never delays a hold."""
        return self.backend.read_sensors()

    def sensor_calibration(self) -> dict[str, np.ndarray]:
        """The backend's static sensor calibration."""
        return self.backend.sensor_calibration()

    def _with_safety(self, obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        obs.update(safety_state(self.status, self.safety.n_clamped, self.safety.n_refused))
        return obs

    @requires_connected
    def send_action(self, action: Mapping[str, Any], sent_at: float | None = None,
                    seq: int | None = None) -> dict[str, np.ndarray]:
        """Filter ``{"joint.pos": targets}`` (rad) through the safety layer and send what it lets through.

        Args:
            action: the command; its shape is checked here, its values by the safety layer (NaN is refused).
            sent_at: when the sender built it (s, this robot's clock), for the staleness check and rate limits.
            seq: the sender's sequence number, for the ordering check.

        Returns:
            ``{"joint.pos": the target the robot now tracks}``.

        Raises:
            KeyError, ValueError: wrong keys or size.
        """
        target = joint_action(action, len(self.joint_names))
        with self._lock:
            now = self._clock()
            verdict = self.safety.filter(target, now, sent_at, seq)
            self.last_verdict = verdict
            if verdict.accepted:
                sent = self.backend.send_action({JOINT_POS: verdict.target})[JOINT_POS]
                self._target = np.asarray(sent, dtype=np.float64)
                self._last_command_time = now
                self.hold_reason = self.held_at = None
                self._watchdog.feed(now)
            return {JOINT_POS: self._target.copy()}

    def new_session(self) -> None:
        """A new command source starts: its sequence numbers are checked from scratch."""
        with self._lock:
            self.safety.new_session()

    def refuse(self, refusal: Refusal, message: str) -> None:
        """Record a command refused before it reached this robot (e.g. NOT_COMMANDER by the server)."""
        with self._lock:
            self.last_verdict = self.safety.record_refusal(refusal, message)

    @requires_connected
    def hold(self, reason: str = "request") -> None:
        """Make the backend brake and stay still until the next accepted command."""
        with self._lock:
            self._hold(reason)

    @requires_connected
    def estop(self) -> None:
        """Latch the e-stop and hold; every command is refused until :meth:`reset_estop`."""
        with self._lock:
            self.safety.estop()
            self._hold("estop")

    @requires_connected
    def reset_estop(self) -> None:
        """Release the e-stop; the robot keeps holding until the next command, which starts from rest."""
        with self._lock:
            obs = self.backend.get_joint_state()
            self.safety.release_estop(obs[JOINT_TARGET], self._clock())
            self.hold_reason = "request"

    def _hold(self, reason: str) -> None:
        """Make the backend hold and restart the safety reference from rest at the hold target (lock held).

        If the robot already holds, its target stays as it is (only an e-stop takes over the reason).
        """
        if self.hold_reason is not None:
            if reason == "estop":
                self.hold_reason = reason
            self._watchdog.disarm()
            return
        self.backend.hold()  # if this raises nothing changes here, and an armed watchdog still fires
        self._watchdog.disarm()
        obs = self.backend.get_joint_state()
        now = self._clock()
        self._target = np.asarray(obs[JOINT_TARGET], dtype=np.float64).copy()
        self.safety.reset(self._target, now)
        self.hold_reason, self.held_at = reason, now
        log.info("%r holds (%s) at %s", self, reason, np.round(self._target, 4))

    def _on_watchdog(self, fired_at: float) -> None:
        """Watchdog thread: hold unless a fresh command arrived since the deadline was set."""
        with self._lock:
            if not self.is_connected or self.hold_reason is not None:
                return
            if self._clock() - self._last_command_time < self.config.safety.watchdog_timeout:
                return  # a command raced with the watchdog; it re-armed the deadline
            log.warning("%r: no fresh command for %.0f ms, holding", self,
                        1e3 * (self._clock() - self._last_command_time))
            try:
                self._hold("watchdog")
            except Exception:
                log.exception("%r: the watchdog could not make the backend hold; retrying after another timeout", self)
                self._watchdog.feed(self._clock())
                return
            if self.on_watchdog is not None:
                self.on_watchdog()
