"""The bridge end to end on real sockets: authentication, misbehaving clients, command ownership, stale and
out-of-order commands, the e-stop, and the watchdog holding the robot when its commanding process dies."""

from __future__ import annotations

import fcntl
import ipaddress
import multiprocessing
import os
import signal
import socket
import struct
import time

import numpy as np
import pytest

from real.bridge.bench import measure_hold
from real.bridge.client import RemoteRobot, RemoteRobotConfig
from real.bridge.protocol import Command, ErrorCode, ErrorMessage, MsgType, State, encode_frame
from real.bridge.server import RobotServer, ServerConfig, ServerProcess
from real.bridge.transport import AuthenticationError, FramedSocket, RemoteError, client_handshake, expect
from real.emulated.sim_robot import SimulatedJointRobot
from real.robot import JOINT_POS, JOINT_TARGET, SAFETY_STATUS, check_values, requires_connected
from real.safe_robot import SafeRobot, SafeRobotConfig
from real.safety import Refusal, SafetyConfig, Status

# Measured on the shared 2-core test machine (load ~4, normal scheduling), over 8 runs each: after SIGKILL the
# robot held within 1-5 ms and was at rest within 12-20 ms; after SIGSTOP (only the 25 ms watchdog can tell)
# it held within 23-25 ms and was at rest within 27-30 ms. The bound is 50 ms.
HOLD_BOUND_MS = 50.0


def _own_non_loopback_ipv4() -> str | None:
    """An IPv4 address of one of this machine's own interfaces that is not loopback (traffic stays local)."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for _, name in socket.if_nameindex():
            try:
                packed = fcntl.ioctl(probe.fileno(), 0x8915, struct.pack("256s", name.encode()[:15]))  # SIOCGIFADDR
            except OSError:
                continue
            address = socket.inet_ntoa(packed[20:24])
            if not ipaddress.ip_address(address).is_loopback:
                return address
    finally:
        probe.close()
    return None


@pytest.fixture(scope="module")
def server():
    with ServerProcess(SimulatedJointRobot) as process:
        yield process


def _remote(server: ServerProcess, **overrides) -> RemoteRobot:
    return RemoteRobot(RemoteRobotConfig(port=server.address[1], **overrides))


def _raw_session(port: int, host: str = "127.0.0.1") -> FramedSocket:
    conn = FramedSocket(socket.create_connection((host, port), timeout=5.0))
    client_handshake(conn, b"", timeout=5.0)
    return conn


def _reply(conn: FramedSocket) -> State:
    return State.decode(expect(conn.recv(2.0), MsgType.STATE).payload)


# --- authentication and address policy -------------------------------------------------------------------------------


def test_non_loopback_bind_needs_a_secret():
    with pytest.raises(ValueError, match="secret"):
        ServerConfig(host="0.0.0.0")
    with pytest.raises(ValueError, match="secret"):
        ServerConfig(host="192.0.2.7")
    assert ServerConfig(host="localhost").host == "localhost"
    assert ServerConfig(host="0.0.0.0", secret="x").secret == "x"


def test_on_a_non_loopback_address_only_clients_with_the_secret_get_in():
    host = _own_non_loopback_ipv4()
    if host is None:
        pytest.skip("this machine has no non-loopback IPv4 interface")
    with ServerProcess(SimulatedJointRobot, ServerConfig(host=host, secret="s3cret")) as process:
        port = process.address[1]
        for secret in ("", "wrong"):
            robot = RemoteRobot(RemoteRobotConfig(host=host, port=port, secret=secret))
            with pytest.raises(AuthenticationError, match="server refused"):
                robot.connect()
            assert not robot.is_connected
        with RemoteRobot(RemoteRobotConfig(host=host, port=port, secret="s3cret")) as robot:
            assert robot.get_observation()[JOINT_POS].shape == (7,)
            assert robot.server_info["name"] == "sim_joint"


def test_a_client_with_a_secret_refuses_a_server_that_cannot_prove_it_knows_it(server):
    robot = _remote(server, secret="s3cret")
    with pytest.raises(AuthenticationError, match="prove"):
        robot.connect()


def test_client_checks_the_servers_joints(server):
    robot = _remote(server, joint_names=("a", "b"))
    with pytest.raises(ValueError, match="joints"):
        robot.connect()
    assert not robot.is_connected


# --- misbehaving clients ---------------------------------------------------------------------------------------------


def test_garbage_gets_an_error_and_a_closed_connection_and_the_server_keeps_serving(server):
    conn = FramedSocket(socket.create_connection(("127.0.0.1", server.address[1]), timeout=5.0))
    assert conn.recv(2.0).type == MsgType.HELLO
    conn.sock.sendall(b"GET / HTTP/1.1\r\nHost: robot\r\n\r\n" + b"\x00" * 64)
    error = ErrorMessage.decode(expect(conn.recv(2.0), MsgType.ERROR).payload)
    assert error.code == ErrorCode.PROTOCOL and "magic" in error.text
    with pytest.raises(ConnectionError, match="closed the connection"):
        conn.recv(2.0)
    conn.close()
    with _remote(server) as robot:
        assert robot.get_observation()[JOINT_POS].shape == (7,)


def test_a_commander_that_breaks_the_protocol_is_dropped_and_the_robot_holds(server):
    conn = _raw_session(server.address[1])
    with _remote(server) as observer:
        q = observer.get_observation()[JOINT_TARGET]
        conn.send(MsgType.COMMAND, Command(q).encode())
        assert _reply(conn).last_refusal == Refusal.NONE
        assert not observer.get_observation()[SAFETY_STATUS][0] & Status.HOLDING
        conn.sock.sendall(encode_frame(MsgType.COMMAND, 99, time.monotonic_ns(), Command(q).encode())[:-1] + b"?")
        error = ErrorMessage.decode(expect(conn.recv(2.0), MsgType.ERROR).payload)
        assert error.code == ErrorCode.PROTOCOL and "CRC mismatch in a COMMAND frame (seq 99)" in error.text, error
        conn.close()
        deadline = time.monotonic() + 2.0
        while not observer.get_observation()[SAFETY_STATUS][0] & Status.HOLDING and time.monotonic() < deadline:
            time.sleep(0.001)
        assert observer.get_observation()[SAFETY_STATUS][0] & Status.HOLDING


def test_silent_clients_are_dropped_after_the_handshake_timeout_and_extra_clients_are_refused():
    robot = SafeRobot(SimulatedJointRobot(), SafeRobotConfig(safety=SafetyConfig(watchdog_timeout=1.0)))
    with RobotServer(robot, ServerConfig(max_clients=1, handshake_timeout=0.2)) as srv:
        port = srv.address[1]
        silent = FramedSocket(socket.create_connection(("127.0.0.1", port), timeout=5.0))
        assert silent.recv(2.0).type == MsgType.HELLO
        extra = FramedSocket(socket.create_connection(("127.0.0.1", port), timeout=5.0))
        busy = ErrorMessage.decode(expect(extra.recv(2.0), MsgType.ERROR).payload)
        assert busy.code == ErrorCode.BUSY
        start = time.monotonic()
        timeout = ErrorMessage.decode(expect(silent.recv(2.0), MsgType.ERROR).payload)
        assert timeout.code == ErrorCode.AUTH_FAILED and "timed out" in timeout.text
        assert 0.1 < time.monotonic() - start < 1.5
        for conn in (silent, extra):
            conn.close()
        with RemoteRobot(RemoteRobotConfig(port=port)) as remote:  # the slot is free again
            assert remote.get_observation()[JOINT_POS].shape == (7,)
    assert not robot.is_connected


class _FailingArm(SimulatedJointRobot):
    """A simulated arm whose bus fails on demand, as hardware does."""

    name = "failing_arm_test"
    fail = False

    @requires_connected
    def send_action(self, action):
        if self.fail:
            raise OSError("servo bus timeout")
        return super().send_action(action)


def test_a_backend_failure_is_reported_to_the_client_and_the_robot_holds():
    backend = _FailingArm()
    robot = SafeRobot(backend, SafeRobotConfig(safety=SafetyConfig(watchdog_timeout=1.0)))
    with RobotServer(robot) as srv:
        port = srv.address[1]
        commander = RemoteRobot(RemoteRobotConfig(port=port))
        commander.connect()
        q = commander.get_observation()[JOINT_TARGET]
        commander.send_action({JOINT_POS: q})
        assert robot.hold_reason is None
        backend.fail = True
        with pytest.raises(RemoteError, match="servo bus timeout") as info:
            commander.send_action({JOINT_POS: q})
        assert info.value.code == ErrorCode.INTERNAL and not commander.is_connected
        deadline = time.monotonic() + 2.0  # the server drops the client (and holds) just after sending the ERROR
        while robot.hold_reason is None and time.monotonic() < deadline:
            time.sleep(0.001)
        assert robot.hold_reason == "disconnect"
        with RemoteRobot(RemoteRobotConfig(port=port)) as observer:  # the server is still up
            assert observer.get_observation()[SAFETY_STATUS][0] & Status.HOLDING


class _CameraArm(SimulatedJointRobot):
    """A simulated arm that also has a (costly) depth camera in its observation."""

    name = "camera_arm_test"

    def __init__(self) -> None:
        super().__init__()
        self.camera_reads = 0
        self._features = {**super().observation_features,
                          "observation.depth.cam": {"dtype": "float32", "shape": [4, 4], "names": None}}

    @property
    def observation_features(self):
        return self._features

    @requires_connected
    def get_observation(self):
        self.camera_reads += 1
        return {**super().get_observation(), "observation.depth.cam": np.ones((4, 4), np.float32)}

    @requires_connected
    def get_joint_state(self):
        return SimulatedJointRobot.get_observation(self)  # joints only: no camera read


def test_the_bridge_reads_only_joint_state_and_cameras_pass_through_the_safety_layer():
    backend = _CameraArm()
    robot = SafeRobot(backend, SafeRobotConfig(safety=SafetyConfig(watchdog_timeout=1.0)))
    assert "observation.depth.cam" in robot.observation_features
    with RobotServer(robot) as srv, RemoteRobot(RemoteRobotConfig(port=srv.address[1])) as remote:
        q = remote.get_observation()[JOINT_TARGET]
        for _ in range(50):
            remote.send_action({JOINT_POS: q})
            remote.get_observation()
        assert backend.camera_reads == 0  # 100 requests answered without touching the camera
        check_values(robot.get_observation(), robot.observation_features, "observation")
        assert backend.camera_reads == 1


def _start_server_and_wait(report) -> None:
    """Child process: start a robot server, report its port, then wait to be killed."""
    process = ServerProcess(SimulatedJointRobot)
    report.send(process.start()[1])
    time.sleep(60.0)


def test_a_server_process_stops_when_the_process_that_started_it_is_killed():
    ctx = multiprocessing.get_context("spawn")
    parent_end, child_end = ctx.Pipe(duplex=False)
    launcher = ctx.Process(target=_start_server_and_wait, args=(child_end,))
    launcher.start()
    try:
        assert parent_end.poll(30.0)
        port = parent_end.recv()
        socket.create_connection(("127.0.0.1", port), timeout=2.0).close()  # it is listening
    finally:
        launcher.kill()
        launcher.join(5.0)
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
        except ConnectionRefusedError:
            break
        except ConnectionResetError:  # accepted while the server was closing
            pass
        time.sleep(0.05)
    with pytest.raises(ConnectionRefusedError, match="refused"):
        socket.create_connection(("127.0.0.1", port), timeout=1.0)


def test_a_server_process_stops_cleanly_on_a_burst_of_sigterms():
    # Its handlers only set a flag (real.stop_request; tests/real/test_stop_request.py storms one with signals).
    process = ServerProcess(SimulatedJointRobot)
    port = process.start()[1]
    try:
        for _ in range(50):
            os.kill(process.pid, signal.SIGTERM)
        assert process.wait(10.0) == 0
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=1.0)
    finally:
        process.stop()


# --- command ownership, staleness, ordering, e-stop -------------------------------------------------------------------


def test_only_one_client_commands_at_a_time(server):
    with _remote(server, id="a") as a, _remote(server, id="b") as b:
        q = a.get_observation()[JOINT_TARGET]
        a.send_action({JOINT_POS: q})
        assert a.last_refusal == Refusal.NONE
        sent = b.send_action({JOINT_POS: q + 1e-5})[JOINT_POS]
        assert b.last_refusal == Refusal.NOT_COMMANDER
        np.testing.assert_array_equal(sent, q)  # b's command changed nothing
        a.disconnect()
        time.sleep(0.05)
        b.send_action({JOINT_POS: q + 1e-5})
        assert b.last_refusal == Refusal.NONE


def test_stale_commands_are_refused_over_the_wire(server):
    with _remote(server) as robot:
        q = robot.get_observation()[JOINT_TARGET]
        sent = robot.send_action({JOINT_POS: q + 1e-5}, sent_at=time.monotonic() - 0.5)[JOINT_POS]
        assert robot.last_refusal == Refusal.STALE and robot.status & Status.REFUSED
        np.testing.assert_array_equal(sent, q)
        robot.send_action({JOINT_POS: q + 1e-5})
        assert robot.last_refusal == Refusal.NONE


def test_out_of_order_commands_are_refused_over_the_wire(server):
    conn = _raw_session(server.address[1])
    try:
        conn.send(MsgType.HEARTBEAT)
        q = _reply(conn).targets
        for seq, expected in ((10, Refusal.NONE), (9, Refusal.OUT_OF_ORDER), (10, Refusal.OUT_OF_ORDER),
                              (11, Refusal.NONE)):
            conn.sock.sendall(encode_frame(MsgType.COMMAND, seq, time.monotonic_ns(), Command(q).encode()))
            state = _reply(conn)
            assert state.ack_seq == seq and state.last_refusal == expected
    finally:
        conn.close()


def test_estop_from_any_client_latches_until_reset(server):
    with _remote(server, id="commander") as commander, _remote(server, id="panel") as panel:
        q = commander.get_observation()[JOINT_TARGET]
        commander.send_action({JOINT_POS: q})
        panel.estop()
        for _ in range(3):
            commander.send_action({JOINT_POS: q + 1e-5})
            assert commander.last_refusal == Refusal.ESTOP and commander.status & Status.ESTOP
        panel.reset_estop()
        time.sleep(0.02)
        commander.send_action({JOINT_POS: q + 1e-5})
        assert commander.last_refusal == Refusal.NONE and not commander.status & Status.ESTOP


def test_clock_offset_between_processes_on_one_machine_is_estimated_near_zero(server):
    with _remote(server) as robot:
        assert abs(robot.clock_offset_ns) < 2_000_000  # both sides read the same CLOCK_MONOTONIC


def test_a_lost_server_makes_the_client_disconnected():
    with ServerProcess(SimulatedJointRobot) as process:
        robot = RemoteRobot(RemoteRobotConfig(port=process.address[1]))
        robot.connect()
        process.stop()
        with pytest.raises((ConnectionError, RemoteError), match="server stopping|closed the connection"):
            for _ in range(10):
                robot.get_observation()
        assert not robot.is_connected


# --- the watchdog: the commanding process dies -----------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSTOP], ids=["killed", "hung"])
def test_robot_holds_within_50_ms_after_the_commanding_process_dies(server, sig):
    result = measure_hold(server.address[1], sig)
    assert result["speed_at_signal"] > 0.01  # it was moving when its commander died
    assert result["hold_ms"] < HOLD_BOUND_MS, result
    assert result["stop_ms"] < HOLD_BOUND_MS, result
