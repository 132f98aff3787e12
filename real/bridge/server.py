"""The robot server: any :class:`Robot` backend, behind the safety layer, on the wire protocol over TCP.

One event-loop thread accepts connections and answers each request with a STATE reply. Many clients
may observe (HEARTBEAT), hold, e-stop or reset; one at a time commands: the first connection to send a
COMMAND takes the command slot and keeps it until it disconnects or goes silent long enough for the
watchdog to fire. A commander that disconnects for any reason (BYE, EOF after its process died, a protocol
error) makes the robot hold at once, without waiting for the watchdog.

Security: the server binds 127.0.0.1 by default. Binding any other address needs a shared secret; with a
secret every client must pass the HMAC handshake (:mod:`real.bridge.protocol`), loopback ones included.
:class:`ServerProcess` runs the server in its own OS process, as hardware or the emulated reality would.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import ipaddress
import itertools
import logging
import multiprocessing
import os
import selectors
import signal
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from real.bridge.protocol import (
    Command,
    ErrorCode,
    Frame,
    MsgType,
    ProtocolError,
    ReadSensors,
    SensorArray,
    SensorPart,
    Sensors,
    State,
    check_empty,
)
from real.bridge.transport import (
    AuthenticationError,
    FramedSocket,
    PendingHandshake,
    Session,
    finish_server_handshake,
    is_loopback,
    secret_bytes,
    start_server_handshake,
)
from real.realtime import set_realtime_priority
from real.robot import JOINT_POS, JOINT_TARGET, JOINT_VEL, TIMESTAMP, Robot
from real.safe_robot import SafeRobot, SafeRobotConfig
from real.safety import Refusal
from real.stop_request import stop_on_signals

log = logging.getLogger(__name__)


@dataclasses.dataclass
class ServerConfig:
    """Where the server listens and whom it lets in."""

    host: str = "127.0.0.1"  # bind address; anything but loopback needs `secret`
    port: int = 0  # TCP port; 0 picks a free one (read it from RobotServer.address)
    secret: str = ""  # shared secret for the HMAC handshake; "" = none (loopback only)
    max_clients: int = 4  # simultaneous connections; more are refused with ERROR BUSY
    handshake_timeout: float = 2.0  # s for a client to answer HELLO
    max_payload: int = 4096  # bytes; requests are small, so a tight bound
    realtime_priority: int = 0  # SCHED_FIFO priority of the server process (ServerProcess only); 0 = normal
    sensor_send_timeout: float = 0.5  # s a SENSORS reply may wait for the client to read it before it is dropped

    def __post_init__(self) -> None:
        if not 0 <= int(self.port) <= 65535:
            raise ValueError(f"ServerConfig.port must be in [0, 65535], got {self.port!r}")
        if not self.secret and not is_loopback(self.host):
            raise ValueError(f"ServerConfig.host={self.host!r} is not a loopback address: binding it needs a shared "
                             f"`secret` so that clients must authenticate")
        if self.realtime_priority < 0:
            raise ValueError(f"ServerConfig.realtime_priority must be >= 0 (0: normal scheduling), got "
                             f"{self.realtime_priority}")
        if self.max_clients < 1 or self.handshake_timeout <= 0 or self.max_payload < 64:
            raise ValueError(f"need max_clients >= 1, handshake_timeout > 0 and max_payload >= 64, got "
                             f"{self.max_clients}, {self.handshake_timeout}, {self.max_payload}")


def robot_info(robot: SafeRobot) -> dict[str, Any]:
    """The robot description sent in WELCOME: backend name and id, joints, features and safety limits."""
    return {
        "name": robot.backend.name,
        "id": robot.backend.config.id,
        "joint_names": robot.joint_names,
        "observation_features": robot.observation_features,
        "action_features": robot.action_features,
        "safety": dataclasses.asdict(robot.config.safety),
        "sensors": sorted(robot.sensor_calibration()),
    }


@dataclasses.dataclass
class _Client:
    """One connection of the server's event loop."""

    cid: int
    conn: FramedSocket
    pending: PendingHandshake | None  # set until the handshake is done
    deadline: float  # time.monotonic() by which the handshake must be done
    session: Session | None = None


class RobotServer:
    """Serves a :class:`SafeRobot` on TCP (protocol in :mod:`real.bridge.protocol`, policy in the module docstring).

    One thread runs an event loop (``selectors``) over the listener and every connection, so a request, a
    dropped connection and a handshake are handled in arrival order by a single thread, with no hand-over
    between threads (in CPython each hand-over waits for the GIL). The watchdog keeps its own thread in
    :class:`SafeRobot`. ``start()`` connects the robot (it holds) and starts the loop; ``stop()`` closes every
    connection and leaves the robot holding and disconnected. Use as a context manager.

    Args:
        robot: the guarded robot to serve (not yet connected).
        config: listen address, secret and limits.

    Raises:
        TypeError: from the constructor, if ``robot`` is not a SafeRobot (the safety layer is not optional).
    """

    def __init__(self, robot: SafeRobot, config: ServerConfig | None = None) -> None:
        if not isinstance(robot, SafeRobot):
            raise TypeError(f"RobotServer serves a SafeRobot (the safety layer is always on), got {type(robot).__name__}")
        self.robot = robot
        self.config = config if config is not None else ServerConfig()
        self._secret = secret_bytes(self.config.secret)
        self._listener: socket.socket | None = None
        self._selector: selectors.BaseSelector | None = None
        self._wake_r, self._wake_w = None, None
        self._thread: threading.Thread | None = None
        self._clients: dict[int, _Client] = {}
        self._commander: int | None = None
        self._ids = itertools.count(1)
        self._stopping = False
        self.n_auth_failures = 0  # handshakes refused since start
        robot.on_watchdog = self._release_command_slot

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` the server listens on.

        Raises:
            RuntimeError: not started.
        """
        if self._listener is None:
            raise RuntimeError("RobotServer is not started")
        return self._listener.getsockname()[:2]

    @property
    def n_clients(self) -> int:
        """Connections open now (handshakes in progress included)."""
        return len(self._clients)

    def start(self) -> tuple[str, int]:
        """Connect the robot, bind and listen; returns the address.

        Raises:
            OSError: the address cannot be bound.
            RuntimeError: already started.
        """
        if self._thread is not None:
            raise RuntimeError("RobotServer is already started")
        family = socket.AF_INET6 if ":" in self.config.host else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((self.config.host, int(self.config.port)))
            listener.listen(self.config.max_clients)
        except OSError:
            listener.close()
            raise
        listener.setblocking(False)
        self._listener = listener
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(listener, selectors.EVENT_READ, "listener")
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        if not self.robot.is_connected:
            self.robot.connect()
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="bridge-server", daemon=True)
        self._thread.start()
        log.info("bridge server for %r listening on %s:%d (auth %s)", self.robot.backend, *self.address,
                 "on" if self._secret else "off")
        return self.address

    def stop(self) -> None:
        """Stop the loop, tell every client, close everything, then hold and disconnect the robot."""
        if self._thread is not None:
            self._stopping = True
            self._wake_w.send(b"x")
            self._thread.join(timeout=5.0)
            self._thread = None
        for client in list(self._clients.values()):
            client.conn.send_error(ErrorCode.SHUTDOWN, "server stopping")
            self._drop(client, "server stopping")
        for sock in (self._listener, self._wake_r, self._wake_w):
            if sock is not None:
                sock.close()
        if self._selector is not None:
            self._selector.close()
            self._selector = None
        if self.robot.is_connected:
            self.robot.disconnect()

    def __enter__(self) -> RobotServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _loop(self) -> None:
        """The event loop: accept, read and answer requests, expire handshakes, until ``stop()``."""
        assert self._selector is not None
        while not self._stopping:
            pending = [c.deadline for c in self._clients.values() if c.session is None]
            timeout = max(0.0, min(pending) - time.monotonic()) if pending else None
            for key, _ in self._selector.select(timeout):
                if key.data == "wake":
                    return
                try:
                    if key.data == "listener":
                        self._accept()
                    elif (client := self._clients.get(key.data)) is not None:
                        self._on_readable(client)
                except Exception:  # never let one bad event stop the server
                    log.exception("bridge server: unexpected error while handling %s", key.data)
            now = time.monotonic()
            for client in [c for c in self._clients.values() if c.session is None and c.deadline <= now]:
                self.n_auth_failures += 1
                client.conn.send_error(ErrorCode.AUTH_FAILED, "handshake timed out")
                self._drop(client, "handshake timed out")

    def _accept(self) -> None:
        assert self._listener is not None and self._selector is not None
        try:
            sock, peer = self._listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        sock.setblocking(False)
        conn = FramedSocket(sock, self.config.max_payload)
        if len(self._clients) >= self.config.max_clients:
            log.warning("refusing %s: %d clients already connected", conn.peer, self.config.max_clients)
            conn.send_error(ErrorCode.BUSY, f"server has {self.config.max_clients} clients already")
            conn.close()
            return
        if not self._secret and not ipaddress.ip_address(peer[0]).is_loopback:
            self.n_auth_failures += 1
            log.warning("refusing non-loopback client %s: no shared secret configured", conn.peer)
            conn.send_error(ErrorCode.AUTH_FAILED, "non-loopback clients need a shared secret")
            conn.close()
            return
        cid = next(self._ids)
        try:
            pending = start_server_handshake(conn, self._secret)
        except OSError as exc:
            log.info("client %s gone during the handshake: %s", conn.peer, exc)
            conn.close()
            return
        self._clients[cid] = _Client(cid, conn, pending, time.monotonic() + self.config.handshake_timeout)
        self._selector.register(sock, selectors.EVENT_READ, cid)

    def _on_readable(self, client: _Client) -> None:
        """Read what arrived on one connection and answer each complete request; drop the client on any error.

        Socket errors (EOF, reset, a peer that does not read its replies) drop the client quietly; protocol and
        authentication errors and backend failures are reported to it with an ERROR first.
        """
        conn = client.conn
        try:
            frames = conn.receive_available()
        except ProtocolError as exc:
            self._refuse_protocol(client, exc)
            return
        except OSError as exc:  # EOF (ConnectionClosedError) or reset
            self._drop(client, str(exc))
            return
        for frame in frames:
            if client.session is None:
                if not self._finish_handshake(client, frame):
                    return
                continue
            try:
                if frame.type == MsgType.READ_SENSORS:
                    reply_type, payload = MsgType.SENSORS, self._sensors(frame)
                else:
                    reply_type, payload = MsgType.STATE, self._handle(client, frame).encode()
            except ProtocolError as exc:
                self._refuse_protocol(client, exc)
                return
            except Exception as exc:  # the backend failed (hardware I/O included): tell the client, drop it
                log.exception("client %d (%s): the robot failed", client.cid, conn.peer)
                conn.send_error(ErrorCode.INTERNAL, f"{type(exc).__name__}: {exc}")
                self._drop(client, "internal error")
                return
            try:
                if reply_type == MsgType.SENSORS:
                    self._send_large(conn, reply_type, payload)
                else:
                    conn.send(reply_type, payload)
            except OSError as exc:
                self._drop(client, str(exc))
                return
            if frame.type == MsgType.BYE:
                self._drop(client, "said BYE")
                return

    def _finish_handshake(self, client: _Client, frame: Frame) -> bool:
        """Check the client's AUTH and welcome it; False (client dropped) if it failed."""
        assert client.pending is not None
        try:
            client.session = finish_server_handshake(client.conn, client.pending, frame, self._secret,
                                                     robot_info(self.robot))
        except AuthenticationError as exc:
            self.n_auth_failures += 1
            log.warning("refused %s: %s", client.conn.peer, exc)
            self._drop(client, "authentication failed")
            return False
        except ProtocolError as exc:
            self._refuse_protocol(client, exc)
            return False
        except OSError as exc:  # WELCOME could not be sent
            self._drop(client, str(exc))
            return False
        log.info("client %d (%s) connected", client.cid, client.conn.peer)
        return True

    def _refuse_protocol(self, client: _Client, exc: ProtocolError) -> None:
        log.warning("client %d (%s) broke the protocol, dropping it: %s", client.cid, client.conn.peer, exc)
        client.conn.send_error(ErrorCode.PROTOCOL, str(exc))
        self._drop(client, "protocol error")

    def _drop(self, client: _Client, why: str) -> None:
        """Close a connection; if it held the command slot, free it and make the robot hold at once."""
        if self._clients.pop(client.cid, None) is None:
            return
        if self._selector is not None:
            try:
                self._selector.unregister(client.conn.sock)
            except (KeyError, ValueError):
                pass
        peer = client.conn.peer
        client.conn.close()
        if self._commander == client.cid:
            self._release_command_slot()
            if self.robot.is_connected:
                try:
                    self.robot.hold("disconnect")
                except Exception:  # an armed watchdog still fires and retries
                    log.exception("could not make the robot hold after its commander (client %d) left", client.cid)
        if not self._stopping:
            log.info("client %d (%s) gone: %s", client.cid, peer, why)

    def _handle(self, client: _Client, frame: Frame) -> State:
        """Act on one request; returns the STATE reply."""
        robot, cid = self.robot, client.cid
        assert client.session is not None
        if frame.type == MsgType.COMMAND:
            command = Command.decode(frame.payload)
            if self._claim_command_slot(cid):
                sent_at = (frame.timestamp_ns - client.session.clock_offset_ns) * 1e-9
                try:
                    robot.send_action({JOINT_POS: command.positions}, sent_at=sent_at, seq=frame.seq)
                except (KeyError, ValueError) as exc:  # wrong joint count: refuse, as for any bad command
                    robot.refuse(Refusal.MALFORMED, str(exc))
            else:
                robot.refuse(Refusal.NOT_COMMANDER, f"client {cid} is not the commander ({self._commander} is)")
        elif frame.type == MsgType.HEARTBEAT:
            check_empty(frame)
        elif frame.type == MsgType.HOLD:
            check_empty(frame)
            robot.hold("request")
        elif frame.type == MsgType.ESTOP:
            check_empty(frame)
            robot.estop()
        elif frame.type == MsgType.RESET:
            check_empty(frame)
            robot.reset_estop()
        elif frame.type == MsgType.BYE:
            check_empty(frame)
            if self._commander == cid:
                self._release_command_slot()
                robot.hold("disconnect")
        else:
            raise ProtocolError(f"unexpected {frame.type.name} from a client")
        return self._state(frame.seq)

    def _sensors(self, frame: Frame) -> bytes:
        """The SENSORS reply to a READ_SENSORS request: the latest readings and/or the calibration."""
        parts = ReadSensors.decode(frame.payload).parts
        arrays = []
        if parts & SensorPart.CALIBRATION:
            now = time.monotonic_ns()
            arrays += [SensorArray(k, v, now) for k, v in self.robot.sensor_calibration().items()]
        if parts & SensorPart.READINGS:
            arrays += [SensorArray(k, r.data, int(round(r.timestamp * 1e9))) for k, r in self.robot.read_sensors().items()]
        return Sensors(frame.seq, tuple(arrays)).encode()

    def _send_large(self, conn: FramedSocket, msg_type: MsgType, payload: bytes) -> None:
        """Send a frame that may not fit the socket buffer: block for at most ``sensor_send_timeout``."""
        conn.sock.settimeout(self.config.sensor_send_timeout)
        try:
            conn.send(msg_type, payload)
        finally:
            conn.sock.setblocking(False)

    def _state(self, ack_seq: int) -> State:
        obs = self.robot.get_joint_state()
        verdict = self.robot.last_verdict
        return State(ack_seq, int(round(float(obs[TIMESTAMP][0]) * 1e9)), int(self.robot.status), int(verdict.refusal),
                     self.robot.safety.n_clamped, self.robot.safety.n_refused, obs[JOINT_POS], obs[JOINT_VEL],
                     obs[JOINT_TARGET])

    def _claim_command_slot(self, cid: int) -> bool:
        """Whether ``cid`` holds the command slot, taking it if it is free (a new commander starts a new session)."""
        if self._commander is None:
            self._commander = cid
            self.robot.new_session()
            log.info("client %d is now the commander", cid)
        return self._commander == cid

    def _release_command_slot(self) -> None:
        # Also called from the watchdog thread (robot lock held): a plain assignment, no robot call.
        self._commander = None


BackendFactory = Callable[[], Robot]


def _die_with_parent() -> None:
    """Ask Linux to SIGTERM this process when its parent dies (PR_SET_PDEATHSIG), so no server is orphaned."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        if libc.prctl(1, int(signal.SIGTERM), 0, 0, 0) != 0:  # 1 = PR_SET_PDEATHSIG
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    except (OSError, AttributeError) as exc:
        log.warning("bridge server will not stop with its parent: %s", exc)


def _serve_process(backend_factory: BackendFactory, server_config: ServerConfig, robot_config: SafeRobotConfig | None,
                   fk: Callable[[np.ndarray], np.ndarray] | None, die_with_parent: bool, ready: Any) -> None:
    """Child-process entry: build and serve the robot until SIGTERM/SIGINT, then leave it holding.

    Logs go to stderr at the level named by the environment variable ``REALSIM_BRIDGE_LOG`` (default WARNING).
    """
    if die_with_parent:
        _die_with_parent()
    level = os.environ.get("REALSIM_BRIDGE_LOG", "WARNING").upper()
    logging.basicConfig(level=level, format="%(asctime)s bridge-server %(levelname)s %(name)s: %(message)s")
    try:
        set_realtime_priority(server_config.realtime_priority)  # before any thread starts: they inherit it
    except (OSError, NotImplementedError, ValueError) as exc:
        ready.send(("error", f"realtime_priority={server_config.realtime_priority}: {type(exc).__name__}: {exc}"))
        return
    stop = stop_on_signals()  # lock-free: an Event's set() in a handler can deadlock the main thread's wait()
    try:
        robot = SafeRobot(backend_factory(), robot_config, fk=fk)
        server = RobotServer(robot, server_config)
        address = server.start()
    except Exception as exc:
        ready.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    ready.send(("ok", address))
    try:
        while not stop.wait(0.2):
            pass
    finally:
        server.stop()


class ServerProcess:
    """Runs :class:`RobotServer` around ``backend_factory()`` in a separate OS process (spawned, not forked).

    Args:
        backend_factory: picklable zero-argument callable that builds the backend in the child (a class, a
            module-level function or a ``functools.partial``).
        server: listen address and secret (default: loopback, a free port).
        robot: safety limits (default: the Panda's).
        fk: optional picklable forward kinematics for the workspace check.
        start_timeout: seconds to wait for the child to listen.
        die_with_parent: on Linux, the child gets SIGTERM (and leaves the robot holding) when the thread that
            started it dies, so a crashed parent leaves no orphaned server.
    """

    def __init__(self, backend_factory: BackendFactory, server: ServerConfig | None = None,
                 robot: SafeRobotConfig | None = None, fk: Callable[[np.ndarray], np.ndarray] | None = None,
                 start_timeout: float = 30.0, die_with_parent: bool = True) -> None:
        self._args = (backend_factory, server if server is not None else ServerConfig(), robot, fk, die_with_parent)
        self.start_timeout = start_timeout
        self._process: multiprocessing.process.BaseProcess | None = None
        self.address: tuple[str, int] | None = None

    @property
    def pid(self) -> int | None:
        """The child's process id (``None`` before ``start``)."""
        return None if self._process is None else self._process.pid

    def wait(self, timeout: float) -> int | None:
        """Waits up to ``timeout`` s for the child to exit: its exit code, or None while it runs (or before start)."""
        if self._process is None:
            return None
        self._process.join(timeout)
        return self._process.exitcode

    def start(self) -> tuple[str, int]:
        """Spawn the child and wait until it listens; returns its ``(host, port)``.

        Raises:
            RuntimeError: the child failed to build the robot or to bind, or did not start in time.
        """
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe(duplex=False)
        self._process = ctx.Process(target=_serve_process, args=(*self._args, child), name="bridge-server", daemon=True)
        self._process.start()
        child.close()
        if not parent.poll(self.start_timeout):
            self.stop()
            raise RuntimeError(f"bridge server process did not start within {self.start_timeout} s")
        try:
            status, value = parent.recv()
        except EOFError:
            status, value = "error", f"the child exited with code {self._process.exitcode} before listening"
        if status != "ok":
            self.stop()
            raise RuntimeError(f"bridge server process failed to start: {value}")
        self.address = tuple(value)
        return self.address

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM the child (it leaves the robot holding) and wait; SIGKILL it after ``timeout`` seconds."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.is_alive():
            process.terminate()
            process.join(timeout)
        if process.is_alive():
            process.kill()
            process.join(timeout)

    def __enter__(self) -> ServerProcess:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
