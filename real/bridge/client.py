"""The client side of the bridge: :class:`RemoteRobot`, a :class:`Robot` whose backend runs in a server process.

Each call is one request and one STATE reply over TCP (:mod:`real.bridge.protocol`): ``send_action`` sends a
COMMAND, ``get_observation`` a HEARTBEAT (which does not feed the server's watchdog: only commands do, so a
client that stops commanding leaves the robot holding). Observation timestamps are converted to this
process's ``time.monotonic()`` with the clock offset estimated at the handshake.
"""

from __future__ import annotations

import dataclasses
import logging
import socket
import threading
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from real.bridge.protocol import (
    MAX_PAYLOAD,
    MAX_SENSOR_PAYLOAD,
    Command,
    Frame,
    MsgType,
    ProtocolError,
    ReadSensors,
    SensorPart,
    Sensors,
    State,
)
from real.bridge.transport import ConnectionClosedError, FramedSocket, client_handshake, expect, secret_bytes
from real.connection import requires_connected, requires_disconnected
from real.panda import PANDA_JOINT_NAMES
from real.robot import JOINT_POS, Robot, RobotConfig, joint_action, joint_features, joint_state, safety_state
from real.safety import Refusal, Status
from real.sensors import SensorReading

log = logging.getLogger(__name__)


@dataclasses.dataclass
class RemoteRobotConfig(RobotConfig):
    """Where the robot server is and which joints it must have."""

    id: str = "remote"
    host: str = "127.0.0.1"
    port: int = 0  # the server's TCP port (required)
    secret: str = ""  # shared secret, if the server needs one
    joint_names: tuple[str, ...] = PANDA_JOINT_NAMES  # checked against the server's robot at connect()
    timeout: float = 1.0  # s to wait for each reply
    connect_timeout: float = 5.0  # s for the TCP connection and the handshake
    max_sensor_bytes: int = MAX_SENSOR_PAYLOAD  # largest SENSORS reply accepted (bytes); more closes the connection

    def __post_init__(self) -> None:
        super().__post_init__()
        self.joint_names = tuple(str(n) for n in self.joint_names)
        if not 1 <= int(self.port) <= 65535:
            raise ValueError(f"RemoteRobotConfig.port must be the server's port in [1, 65535], got {self.port!r}")
        if self.timeout <= 0 or self.connect_timeout <= 0:
            raise ValueError(f"RemoteRobotConfig timeouts must be > 0, got timeout={self.timeout}, "
                             f"connect_timeout={self.connect_timeout}")
        if not MAX_PAYLOAD <= int(self.max_sensor_bytes) <= MAX_SENSOR_PAYLOAD:
            raise ValueError(f"RemoteRobotConfig.max_sensor_bytes must be in [{MAX_PAYLOAD}, {MAX_SENSOR_PAYLOAD}], got "
                             f"{self.max_sensor_bytes}")


class RemoteRobot(Robot):
    """A robot served by :class:`real.bridge.server.RobotServer`, with the same interface as a local backend.

    Features are known before ``connect()`` from ``config.joint_names`` (with the ``safety.*`` keys of a robot
    behind the safety layer); ``connect()`` checks them against the server's. ``send_action`` returns the
    target the robot tracks after the command (clamped, or unchanged if refused; ``last_refusal`` says why).
    A lost connection makes ``is_connected`` false and raises :class:`ConnectionError`; the server then holds
    the robot. Requests from several threads are serialised (one connection, one request at a time); a thread
    that only observes can use its own ``RemoteRobot`` so it never waits behind the command stream.

    Raises:
        ConnectionError (``AuthenticationError``, ``RemoteError``): from ``connect()``: unreachable server,
            failed handshake; from requests: the connection broke or the server reported an error.
        TimeoutError: no reply within ``config.timeout``.
        ValueError: from ``connect()``, if the server's robot has other joints than configured.
    """

    name = "remote"
    config_class = RemoteRobotConfig

    def __init__(self, config: RemoteRobotConfig) -> None:
        super().__init__(config, *joint_features(self.checked_config(config).joint_names, safety=True))
        self.config: RemoteRobotConfig
        self._conn: FramedSocket | None = None
        self._offset_ns = 0
        self.server_info: dict[str, Any] = {}  # the server's WELCOME description, after connect()
        self.calibration: dict[str, np.ndarray] = {}  # the server's sensor calibration, fetched at connect()
        self.last_state: State | None = None
        self.last_refusal = Refusal.NONE
        self.latencies_ns: list[int] | None = None  # set to a list to record request -> reply times
        self._request_lock = threading.Lock()
        self._sent_seq = 0  # seq of the last request sent

    @property
    def clock_offset_ns(self) -> int:
        """The server's monotonic clock minus ours (ns), estimated at the handshake."""
        return self._offset_ns

    @requires_disconnected
    def connect(self) -> None:
        """Connect, authenticate, and check that the server's robot has the configured joints."""
        cfg = self.config
        sock = socket.create_connection((cfg.host, int(cfg.port)), timeout=cfg.connect_timeout)
        conn = FramedSocket(sock, max_payload=int(cfg.max_sensor_bytes))
        try:
            session = client_handshake(conn, secret_bytes(cfg.secret), cfg.connect_timeout)
            names = [str(n) for n in session.info.get("joint_names", [])]
            if names != list(cfg.joint_names):
                raise ValueError(f"server robot has joints {names}, RemoteRobotConfig.joint_names is "
                                 f"{list(cfg.joint_names)}")
        except BaseException:
            conn.close()
            raise
        self._conn, self._offset_ns, self.server_info = conn, session.clock_offset_ns, session.info
        self._mark_connected()
        self.calibration = {}
        if session.info.get("sensors"):
            try:
                self.calibration = {k: r.data for k, r in self._read_sensors(SensorPart.CALIBRATION).items()}
            except BaseException:
                self._close()
                raise
        log.info("%r connected to %s:%d (%s, clock offset %.3f ms)", self, cfg.host, cfg.port,
                 session.info.get("name"), self._offset_ns * 1e-6)

    @requires_connected
    def disconnect(self) -> None:
        """Say BYE (the server makes the robot hold) and close the connection."""
        try:
            self._request(MsgType.BYE)
        except (ConnectionError, TimeoutError, ProtocolError) as exc:
            log.info("%r: BYE not acknowledged (%s); closing anyway", self, exc)
        finally:
            self._close()

    @requires_connected
    def get_observation(self) -> dict[str, np.ndarray]:
        """The robot's latest state (timestamp on this process's ``time.monotonic()`` clock) and safety status."""
        return self._observation(self._request(MsgType.HEARTBEAT))

    @requires_connected
    def send_action(self, action: Mapping[str, Any], sent_at: float | None = None) -> dict[str, np.ndarray]:
        """Send joint targets (rad); returns the target the robot tracks after the server's safety layer.

        Args:
            action: ``{"joint.pos": targets}``.
            sent_at: the time (this process's ``time.monotonic()``, s) the targets belong to, e.g. the sample time
                of a trajectory; default: now. The server's velocity and acceleration limits use the spacing of
                these stamps, so stamping samples with their own time keeps send jitter out of the limits.

        Raises:
            KeyError, ValueError: wrong keys or size (values are checked by the server: NaN is refused there).
        """
        target = joint_action(action, len(self.config.joint_names))
        stamp = None if sent_at is None else int(round(sent_at * 1e9))
        state = self._request(MsgType.COMMAND, Command(target).encode(), stamp)
        return {JOINT_POS: state.targets.copy()}

    @requires_connected
    def read_sensors(self) -> dict[str, SensorReading]:
        """The robot's latest sensor readings (keys in :mod:`real.sensors`), stamped on this process's clock.

        Raises:
            ConnectionError, TimeoutError, ProtocolError: as any request (the connection is closed on failure);
                a reply larger than ``config.max_sensor_bytes`` is a ProtocolError.
        """
        return self._read_sensors(SensorPart.READINGS)

    @requires_connected
    def sensor_calibration(self) -> dict[str, np.ndarray]:
        """The sensors' static calibration, as fetched at ``connect()``."""
        return dict(self.calibration)

    def _read_sensors(self, parts: SensorPart) -> dict[str, SensorReading]:
        with self._request_lock:
            frame = self._exchange(MsgType.READ_SENSORS, ReadSensors(int(parts)).encode(), None, MsgType.SENSORS)
            try:
                reply = Sensors.decode(frame.payload)
                if reply.ack_seq != self._sent_seq:
                    raise ProtocolError(f"SENSORS acknowledges seq {reply.ack_seq}, expected {self._sent_seq}")
            except ProtocolError:
                self._close()
                raise
        return {a.name: SensorReading(a.data, (a.timestamp_ns - self._offset_ns) * 1e-9) for a in reply.arrays}

    @requires_connected
    def hold(self) -> None:
        """Make the robot hold its current position."""
        self._request(MsgType.HOLD)

    @requires_connected
    def estop(self) -> None:
        """Latch the server's e-stop: the robot holds and every command is refused until :meth:`reset_estop`."""
        self._request(MsgType.ESTOP)

    @requires_connected
    def reset_estop(self) -> None:
        """Release the server's e-stop."""
        self._request(MsgType.RESET)

    @property
    def status(self) -> Status:
        """Safety status bits of the last reply."""
        return Status(self.last_state.status) if self.last_state is not None else Status.OK

    def _observation(self, state: State) -> dict[str, np.ndarray]:
        stamp = (state.measured_ns - self._offset_ns) * 1e-9
        return {**joint_state(state.positions, state.velocities, state.targets, stamp),
                **safety_state(state.status, state.clamped, state.refused)}

    def _request(self, msg_type: MsgType, payload: bytes = b"", timestamp_ns: int | None = None) -> State:
        """Send one request and return the STATE that acknowledges it; any failure closes the connection."""
        with self._request_lock:
            return self._request_locked(msg_type, payload, timestamp_ns)

    def _exchange(self, msg_type: MsgType, payload: bytes, timestamp_ns: int | None, reply_type: MsgType) -> Frame:
        """Send one request and return the reply frame of ``reply_type``; any failure closes the connection."""
        conn = self._conn
        if conn is None:
            raise ConnectionClosedError(f"{self!r}: the connection is closed")
        try:
            seq, _ = conn.send(msg_type, payload, timestamp_ns=timestamp_ns)
            self._sent_seq = seq
            return expect(conn.recv(self.config.timeout), reply_type)
        except (OSError, ProtocolError) as exc:  # OSError covers ConnectionError and TimeoutError
            self._close()
            if isinstance(exc, ConnectionClosedError):
                raise ConnectionClosedError(f"{self!r}: the server closed the connection") from exc
            raise

    def _request_locked(self, msg_type: MsgType, payload: bytes, timestamp_ns: int | None) -> State:
        sent_ns = time.monotonic_ns()
        frame = self._exchange(msg_type, payload, timestamp_ns, MsgType.STATE)
        try:
            state = State.decode(frame.payload)
            if state.ack_seq != self._sent_seq:
                raise ProtocolError(f"STATE acknowledges seq {state.ack_seq}, expected {self._sent_seq}")
        except ProtocolError:
            self._close()
            raise
        if self.latencies_ns is not None:
            self.latencies_ns.append(time.monotonic_ns() - sent_ns)
        if len(state.positions) != len(self.config.joint_names):
            self._close()
            raise ProtocolError(f"STATE has {len(state.positions)} joints, expected {len(self.config.joint_names)}")
        self.last_state = state
        try:
            self.last_refusal = Refusal(state.last_refusal)
        except ValueError:  # a newer server's code: report it as a refusal we cannot name
            log.warning("%r: unknown refusal code %d", self, state.last_refusal)
            self.last_refusal = Refusal.MALFORMED
        return state

    def _close(self) -> None:
        """Close the connection (no-op when closed): from ``disconnect()`` or on any transport error."""
        self._mark_disconnected()
        if self._conn is not None:
            self._conn.close()
            self._conn = None

