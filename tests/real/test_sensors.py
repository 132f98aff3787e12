"""Sensor readings over the bridge: camera frames and calibration round trip on real sockets, size limits, strict
decoding, and a backend without sensors."""

from __future__ import annotations

import time

import numpy as np
import pytest

from real.bridge.client import RemoteRobot, RemoteRobotConfig
from real.bridge.protocol import MAX_SENSOR_PAYLOAD, ProtocolError, SensorArray, Sensors
from real.bridge.server import RobotServer
from real.bridge.transport import RemoteError
from real.emulated.sim_robot import SimulatedJointRobot
from real.robot import JOINT_POS
from real.safe_robot import SafeRobot
from real.sensors import SensorReading, calibration_arrays, depth_frames, depth_key

CAMERAS = ("side", "overhead")


class CameraArm(SimulatedJointRobot):
    """The simulated arm with two seeded 96x96 depth cameras and one RGB camera."""

    name = "camera_arm"

    def __init__(self, size: tuple[int, int] = (96, 96), n_depth: int = 2) -> None:
        super().__init__()
        rng = np.random.default_rng(0)
        self.stamp = time.monotonic() - 0.01
        self.frames = {depth_key(f"cam{i}"): rng.uniform(0.2, 1.5, size).astype(np.float32) for i in range(n_depth)}
        self.frames["observation.images.cam0"] = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
        self.calibration = calibration_arrays({f"cam{i}": (np.eye(3) * (i + 1), np.eye(4)) for i in range(n_depth)})

    def read_sensors(self) -> dict[str, SensorReading]:
        return {key: SensorReading(value, self.stamp) for key, value in self.frames.items()}

    def sensor_calibration(self) -> dict[str, np.ndarray]:
        return self.calibration


def _serve(backend):
    return RobotServer(SafeRobot(backend))


def test_depth_rgb_and_calibration_round_trip_with_timestamps_on_the_client_clock():
    backend = CameraArm()
    with _serve(backend) as server, RemoteRobot(RemoteRobotConfig(port=server.address[1])) as robot:
        assert set(robot.sensor_calibration()) == set(backend.calibration)
        np.testing.assert_array_equal(robot.sensor_calibration()["calibration.cam1.intrinsics"], 2 * np.eye(3))
        readings = robot.read_sensors()
        assert set(readings) == set(backend.frames)
        for key, value in backend.frames.items():
            assert readings[key].data.dtype == value.dtype
            np.testing.assert_array_equal(readings[key].data, value)
            # same process, so the clock offset is ~0: the stamp survives within the offset estimate's error
            assert abs(readings[key].timestamp - backend.stamp) < 0.005
        frames = depth_frames(readings, robot.calibration, ("cam0", "cam1", "absent"))
        assert [f.camera for f in frames] == ["cam0", "cam1"]
        np.testing.assert_array_equal(frames[1].intrinsics, 2 * np.eye(3))
        # commands still flow on the same connection after the large replies
        q = robot.get_observation()[JOINT_POS]
        np.testing.assert_allclose(robot.send_action({JOINT_POS: q})[JOINT_POS], q)


def test_readings_over_the_size_limit_are_refused_with_a_message_naming_it():
    oversized = CameraArm(size=(512, 512), n_depth=5)  # 5 MiB of float32 > MAX_SENSOR_PAYLOAD
    with _serve(oversized) as server:
        robot = RemoteRobot(RemoteRobotConfig(port=server.address[1]))
        robot.connect()
        with pytest.raises(RemoteError, match="MAX_SENSOR_PAYLOAD"):
            robot.read_sensors()
        assert not robot.is_connected
    with _serve(CameraArm()) as server:  # a client may set a tighter bound than the protocol's
        robot = RemoteRobot(RemoteRobotConfig(port=server.address[1], max_sensor_bytes=64 * 1024))
        robot.connect()
        with pytest.raises(ProtocolError, match="exceeds the limit"):
            robot.read_sensors()
        assert not robot.is_connected
    big = SensorArray("observation.depth.x", np.zeros((MAX_SENSOR_PAYLOAD // 4 + 1,), np.float32), 0)
    with pytest.raises(ProtocolError, match="MAX_SENSOR_PAYLOAD"):
        Sensors(1, (big,)).encode()


def test_sensor_payloads_are_decoded_strictly():
    payload = Sensors(7, (SensorArray("a", np.arange(6, dtype=np.float32).reshape(2, 3), 5),)).encode()
    decoded = Sensors.decode(payload)
    assert decoded.ack_seq == 7 and decoded.arrays[0].data.shape == (2, 3)
    for bad, why in ((payload[:-1], "24 data bytes announced, 23 left"), (payload + b"\0", "1 trailing bytes"),
                     (payload[:12], "bad name length")):
        with pytest.raises(ProtocolError, match=why):
            Sensors.decode(bad)
    with pytest.raises(ProtocolError, match="dtype"):
        Sensors(1, (SensorArray("b", np.zeros(3, np.int32), 0),)).encode()
    rng = np.random.default_rng(1)
    for _ in range(300):  # mutated payloads: a ProtocolError or a valid message, nothing else
        mutated = bytearray(payload)
        mutated[rng.integers(len(mutated))] = rng.integers(256)
        try:
            Sensors.decode(bytes(mutated))
        except ProtocolError:
            pass


def test_a_backend_without_sensors_answers_empty():
    with _serve(SimulatedJointRobot()) as server, RemoteRobot(RemoteRobotConfig(port=server.address[1])) as robot:
        assert robot.read_sensors() == {}
        assert robot.sensor_calibration() == {}
        assert robot.is_connected
        q = robot.get_observation()[JOINT_POS]
        np.testing.assert_allclose(robot.send_action({JOINT_POS: q})[JOINT_POS], q)
