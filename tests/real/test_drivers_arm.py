"""ServoArmRobot (SO-100 on Feetech, Koch on Dynamixel) on the emulated bus, and its calibration."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest

from real.drivers import (
    ArmCalibration,
    EmulatedServoBus,
    JointCalibration,
    ServoArmConfig,
    ServoArmRobot,
    koch_config,
    so100_config,
)
from real.robot import DeviceNotConnectedError, check_values

pytest.importorskip("dynamixel_sdk")
pytest.importorskip("scservo_sdk")

TICK = 2 * math.pi / 4096
NAMES = ["pan", "lift", "elbow"]
JOINTS = [JointCalibration("pan", 1, offset=2048, direction=1, min_rad=-1.0, max_rad=1.0),
          JointCalibration("lift", 2, offset=1500, direction=-1, min_rad=-1.2, max_rad=0.8),
          JointCalibration("elbow", 3, offset=2600, direction=1, min_rad=-0.5, max_rad=0.5)]
START = {1: 2048 + 200, 2: 1500 + 100, 3: 2600}  # pan +0.307 rad, lift -0.153 rad, elbow 0


def wait_until(condition, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


@pytest.fixture(params=["dynamixel", "feetech"])
def protocol(request):
    return request.param


@pytest.fixture()
def emulated(protocol):
    with EmulatedServoBus(protocol, [1, 2, 3], ticks=START) as emu:
        yield emu


def make_robot(protocol: str, port: str, **kwargs) -> ServoArmRobot:
    return ServoArmRobot(ServoArmConfig(protocol=protocol, port=port, joints=JOINTS, timeout_ms=300, **kwargs))


# ---------------------------------------------------------------------------- calibration


def test_calibration_round_trips():
    cal = ArmCalibration(JOINTS)
    ticks = np.array([0, 1500, 4095])
    lift_ticks_span = np.arange(300, 3500, 7)
    assert np.array_equal(cal.rad_to_ticks(cal.ticks_to_rad(ticks)), ticks)
    for t in lift_ticks_span[:50]:
        assert np.array_equal(cal.rad_to_ticks(cal.ticks_to_rad([t, t, t])), [t, t, t])
    rng = np.random.default_rng(0)
    rad = rng.uniform(cal.lower, cal.upper, size=(200, 3))
    back = np.stack([cal.ticks_to_rad(cal.rad_to_ticks(r)) for r in rad])
    assert np.max(np.abs(back - rad)) <= TICK / 2 + 1e-12
    # direction -1: more ticks is a smaller angle
    assert cal.ticks_to_rad([2048, 1600, 2600])[1] == pytest.approx(-100 * TICK)
    assert cal.velocity_to_rad_s([10, 10, 10]).tolist() == pytest.approx([10 * TICK, -10 * TICK, 10 * TICK])
    rezeroed = cal.with_zero_at([2000, 1500, 2600])
    assert rezeroed.ticks_to_rad([2000, 1500, 2600]).tolist() == [0.0, 0.0, 0.0]


def test_calibration_refuses_bad_values():
    cal = ArmCalibration(JOINTS)
    with pytest.raises(ValueError, match=r"joint\(s\) \['elbow'\]"):
        cal.rad_to_ticks([0.0, 0.0, 3.0])  # beyond tick 4095
    with pytest.raises(ValueError, match="non-finite"):
        cal.rad_to_ticks([np.nan, 0.0, 0.0])
    with pytest.raises(ValueError, match="expected 3"):
        cal.ticks_to_rad([1, 2])
    with pytest.raises(ValueError, match="joint 'pan' limit"):
        ArmCalibration([JointCalibration("pan", 1, offset=100, min_rad=-1.0, max_rad=1.0)])
    with pytest.raises(ValueError, match="direction"):
        JointCalibration("pan", 1, direction=2)
    with pytest.raises(ValueError, match="unique names and motor ids"):
        ArmCalibration([JointCalibration("a", 1), JointCalibration("b", 1)])


def test_calibration_file_round_trip_and_errors(tmp_path):
    cal = ArmCalibration(JOINTS)
    path = tmp_path / "arm" / "calibration.json"
    cal.save(path)
    assert [p.name for p in path.parent.iterdir()] == ["calibration.json"]  # no temp file left behind
    loaded = ArmCalibration.load(path)
    assert loaded.to_dict() == cal.to_dict()
    config = ServoArmConfig.from_calibration_file(str(path), protocol="feetech", port="/dev/null")
    assert [j.name for j in config.joints] == NAMES

    data = json.loads(path.read_text())
    del data["joints"][1]["offset"]
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"calibration\.json: joints\[1\] must have exactly the fields"):
        ArmCalibration.load(path)
    data["joints"][1]["offset"] = 1500
    data["format_version"] = 99
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="format_version"):
        ArmCalibration.load(path)
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        ArmCalibration.load(path)


# ---------------------------------------------------------------------------- robot


def test_features_before_connect_and_config_errors():
    robot = ServoArmRobot(so100_config("/dev/ttyACM0"))
    assert not robot.is_connected
    assert robot.action_features["joint.pos"] == {"dtype": "float64", "shape": [6], "names": list(robot.joint_names)}
    assert set(robot.observation_features) == {"joint.pos", "joint.vel", "joint.target", "timestamp"}
    assert ServoArmRobot(koch_config("/dev/ttyUSB0")).config.protocol == "dynamixel"
    with pytest.raises(DeviceNotConnectedError, match=r"get_observation\(\).*not connected"):
        robot.get_observation()
    with pytest.raises(ValueError, match="protocol"):
        ServoArmConfig(protocol="herkulex", port="/dev/x", joints=JOINTS)
    with pytest.raises(ValueError, match="port"):
        ServoArmConfig(protocol="feetech", port="", joints=JOINTS)
    with pytest.raises(ValueError, match="max_relative_target"):
        ServoArmConfig(protocol="feetech", port="/dev/x", joints=JOINTS, max_relative_target=0.0)


def test_connect_holds_then_tracks_targets(protocol, emulated):
    robot = make_robot(protocol, emulated.port)
    robot.connect()
    try:
        # connect: goal := present, torque on, so nothing moves
        for i in (1, 2, 3):
            assert emulated.register(i, "torque_enable") == 1
            assert emulated.register(i, "goal_position") == START[i]
        obs = robot.get_observation()
        check_values(obs, robot.observation_features, "observation")
        expected = [200 * TICK, -100 * TICK, 0.0]
        assert obs["joint.pos"] == pytest.approx(expected, abs=1e-12)
        assert obs["joint.target"] == pytest.approx(expected, abs=1e-12)
        assert obs["joint.vel"].tolist() == [0.0, 0.0, 0.0]

        target = np.array([-0.4, 0.5, 0.25])
        sent = robot.send_action({"joint.pos": target})["joint.pos"]
        assert np.max(np.abs(sent - target)) <= TICK / 2 + 1e-12
        assert wait_until(lambda: np.max(np.abs(robot.get_observation()["joint.pos"] - sent)) < 1e-9)
        assert np.max(np.abs(robot.get_observation()["joint.pos"] - target)) <= TICK  # within a tick
        assert round(emulated.position(2)) == 1500 - round(0.5 / TICK)  # direction -1 on the wire
    finally:
        robot.disconnect()


def test_targets_are_clamped_and_bad_ones_refused(protocol, emulated):
    with make_robot(protocol, emulated.port, max_relative_target=0.2) as robot:
        start = robot.get_observation()["joint.pos"]
        sent = robot.send_action({"joint.pos": np.array([5.0, -5.0, 0.1])})["joint.pos"]
        assert sent == pytest.approx([start[0] + 0.2, start[1] - 0.2, 0.1], abs=TICK)
        for _ in range(20):
            sent = robot.send_action({"joint.pos": np.array([5.0, -5.0, 0.1])})["joint.pos"]
        assert sent == pytest.approx([1.0, -1.2, 0.1], abs=TICK)  # joint range reached, never passed
        assert robot.clamp_count > 0
        goal_before = emulated.register(1, "goal_position")
        with pytest.raises(ValueError, match="non-finite"):
            robot.send_action({"joint.pos": np.array([np.nan, 0.0, 0.0])})
        with pytest.raises(KeyError, match="joint.vel"):
            robot.send_action({"joint.vel": np.zeros(3)})
        with pytest.raises(ValueError, match="shape"):
            robot.send_action({"joint.pos": np.zeros(4)})
        assert emulated.register(1, "goal_position") == goal_before  # nothing was sent


def test_disconnect_while_moving_holds_with_torque_on(protocol):
    with EmulatedServoBus(protocol, [1, 2, 3], ticks=START, speed=1000.0) as emulated:  # ~0.85 s to the goal
        robot = make_robot(protocol, emulated.port)
        robot.connect()
        robot.send_action({"joint.pos": np.array([-1.0, 0.8, 0.0])})
        time.sleep(0.05)
        robot.disconnect()
        assert not robot.is_connected
        held = emulated.register(1, "goal_position")
        assert held > 2048 - round(1.0 / TICK) + 50  # the goal is where it was, not the old target
        assert wait_until(lambda: abs(emulated.position(1) - held) < 0.5)
        time.sleep(0.1)
        assert abs(emulated.position(1) - held) < 0.5  # and it stays there, torque on
        assert emulated.register(1, "torque_enable") == 1


def test_torque_off_on_disconnect_and_operating_mode_fixed_on_connect(protocol, emulated):
    wrong_mode = 1  # velocity (Dynamixel) / wheel (Feetech) mode
    emulated.set_register(3, "operating_mode", wrong_mode)
    robot = make_robot(protocol, emulated.port, torque_off_on_disconnect=True)
    robot.connect()
    assert emulated.register(3, "operating_mode") == emulated.table.position_mode
    robot.disconnect()
    assert [emulated.register(i, "torque_enable") for i in (1, 2, 3)] == [0, 0, 0]


def test_connect_names_a_missing_servo(protocol, emulated):
    emulated.set_responding(2, False)
    robot = ServoArmRobot(ServoArmConfig(protocol=protocol, port=emulated.port, joints=JOINTS, num_retries=1,
                                         timeout_ms=250))
    with pytest.raises(ConnectionError, match=r"servo id\(s\) \[2\]"):
        robot.connect()
    assert not robot.is_connected
    assert emulated.register(1, "torque_enable") == 0  # nothing was enabled
