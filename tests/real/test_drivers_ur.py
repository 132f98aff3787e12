"""URRobot without a robot: features, config checks, the clamping of targets, and connect's failures."""

from __future__ import annotations

import math
import socket
import sys

import numpy as np
import pytest

from real.drivers import MissingDriverError, URConfig, URRobot
from real.drivers.ur import UR_JOINTS
from real.robot import DeviceNotConnectedError


def test_features_before_connect():
    robot = URRobot(URConfig(host="127.0.0.1"))
    assert not robot.is_connected
    assert robot.joint_names == UR_JOINTS
    assert robot.observation_features["joint.vel"]["shape"] == [6]
    with pytest.raises(DeviceNotConnectedError, match=r"send_action\(\).*not connected"):
        robot.send_action({"joint.pos": np.zeros(6)})
    with pytest.raises(DeviceNotConnectedError, match=r"hold\(\).*not connected"):
        robot.hold()


@pytest.mark.parametrize(("field", "value", "match"), [
    ("frequency", 1000.0, "frequency"),
    ("command_period", 0.0001, "command_period"),
    ("lookahead_time", 0.5, "lookahead_time"),
    ("gain", 50.0, "gain"),
    ("lower", [-7.0] * 6, "shoulder_pan"),
    ("upper", [1.0] * 5, "upper"),
    ("max_velocity", [4.0] * 6, "max_velocity"),
    ("host", "", "host"),
])
def test_config_rejects_bad_values(field, value, match):
    with pytest.raises(ValueError, match=match):
        URConfig(**{field: value})


def test_targets_are_clamped_to_range_and_step():
    cfg = URConfig(host="127.0.0.1", command_period=0.01, max_velocity=[1.0] * 6,
                   lower=[-1.0] * 6, upper=[1.0, 1.0, 0.5, 1.0, 1.0, 1.0])
    robot = URRobot(cfg)
    previous = np.array([0.0, 0.0, 0.495, 0.0, -0.999, 0.3])
    target = np.array([0.005, 0.5, 0.6, -0.5, -2.0, 0.3])
    clamped, mask = robot.clamp(target, previous)
    # at most 1 rad/s * 10 ms = 0.01 rad per command, and never past a limit
    assert clamped == pytest.approx([0.005, 0.01, 0.5, -0.01, -1.0, 0.3])
    assert mask.tolist() == [False, True, True, True, True, False]
    assert np.all(np.abs(clamped - previous) <= 0.01 + 1e-12)
    with pytest.raises(ValueError, match=r"non-finite target for joint\(s\) \['elbow'\]"):
        robot.clamp(np.array([0, 0, math.inf, 0, 0, 0.0]), previous)


def test_connect_without_ur_rtde_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "rtde_receive", None)
    robot = URRobot(URConfig(host="127.0.0.1"))
    with pytest.raises(MissingDriverError, match=r"realsim\[ur\]"):
        robot.connect()
    assert not robot.is_connected


def test_connect_to_no_controller_is_a_connection_error():
    pytest.importorskip("rtde_receive")
    with socket.socket() as probe:  # make sure nothing listens on the RTDE port here
        if probe.connect_ex(("127.0.0.1", 30004)) == 0:
            pytest.skip("something listens on 127.0.0.1:30004")
    robot = URRobot(URConfig(host="127.0.0.1"))
    with pytest.raises(ConnectionError, match="UR controller at '127.0.0.1'"):
        robot.connect()
    assert not robot.is_connected
