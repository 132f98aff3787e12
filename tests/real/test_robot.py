"""The Robot interface: contracts checked at class definition, and one behaviour test run on every backend.

The interface tests run on the in-process simulated arm, on the same arm behind the safety layer, and on a
RemoteRobot talking to a server process over loopback TCP: the client must behave like a local robot.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import mujoco
import numpy as np
import pytest

from real.bridge.client import RemoteRobot, RemoteRobotConfig
from real.bridge.server import ServerProcess
from real.drivers.servo_arm import ServoArmRobot
from real.drivers.ur import URRobot
from real.emulated.reality import EmulatedRealityRobot
from real.emulated.sim_robot import SimulatedJointRobot, SimulatedJointRobotConfig
from real.panda import PANDA_JOINT_NAMES, PANDA_LOWER, PANDA_UPPER
from real.robot import (
    JOINT_POS,
    JOINT_TARGET,
    JOINT_VEL,
    SAFETY_STATUS,
    TIMESTAMP,
    DeviceAlreadyConnectedError,
    DeviceNotConnectedError,
    Robot,
    RobotConfig,
    check_values,
    joint_features,
    requires_connected,
    requires_disconnected,
)
from real.safe_robot import SafeRobot, SafeRobotConfig
from real.safety import SafetyConfig, Status

REPO = Path(__file__).resolve().parents[2]
# A generous watchdog here: these tests check the interface, not timing (tests/real/test_bridge.py does that).
RELAXED = SafeRobotConfig(safety=SafetyConfig(watchdog_timeout=0.5))


@pytest.fixture(scope="module")
def server():
    with ServerProcess(SimulatedJointRobot, robot=RELAXED) as process:
        yield process


@pytest.fixture(params=["sim", "safe", "remote"])
def make_robot(request):
    def make() -> Robot:
        if request.param == "sim":
            return SimulatedJointRobot()
        if request.param == "safe":
            return SafeRobot(SimulatedJointRobot(), RELAXED)
        return RemoteRobot(RemoteRobotConfig(port=request.getfixturevalue("server").address[1]))

    make.kind = request.param
    return make


def test_features_are_known_before_connect(make_robot):
    robot = make_robot()
    assert not robot.is_connected
    spec = {"dtype": "float64", "shape": [7], "names": list(PANDA_JOINT_NAMES)}
    assert robot.action_features == {JOINT_POS: spec}
    assert robot.observation_features[JOINT_POS] == spec and robot.observation_features[JOINT_VEL] == spec
    assert robot.observation_features[TIMESTAMP] == {"dtype": "float64", "shape": [1], "names": None}
    assert (SAFETY_STATUS in robot.observation_features) == (make_robot.kind != "sim")
    assert robot.joint_names == list(PANDA_JOINT_NAMES)


def test_connection_guards(make_robot):
    robot = make_robot()
    for call in (robot.get_observation, robot.hold, robot.disconnect, lambda: robot.send_action({JOINT_POS: 0})):
        with pytest.raises(DeviceNotConnectedError, match="not connected"):
            call()
    robot.connect()
    try:
        with pytest.raises(DeviceAlreadyConnectedError, match="already connected"):
            robot.connect()
    finally:
        robot.disconnect()
    assert not robot.is_connected


def test_observation_matches_the_declared_features_and_is_dated_on_our_clock(make_robot):
    with make_robot() as robot:
        before = time.monotonic()
        obs = robot.get_observation()
        after = time.monotonic()
        check_values(obs, robot.observation_features, "observation")
        # The state is sampled every 1 ms, so its time may precede the request by that much.
        assert before - 0.01 <= obs[TIMESTAMP][0] <= after + 0.001
        assert np.all(obs[JOINT_POS] >= np.array(PANDA_LOWER)) and np.all(obs[JOINT_POS] <= np.array(PANDA_UPPER))


def test_robot_tracks_commanded_targets_and_reports_what_it_sent(make_robot):
    with make_robot() as robot:
        q0 = robot.get_observation()[JOINT_POS].copy()
        goal = q0 + np.where(q0 + 0.05 < np.array(PANDA_UPPER), 0.05, -0.05)
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            sent = robot.send_action({JOINT_POS: goal})[JOINT_POS]
            obs = robot.get_observation()
            if np.array_equal(sent, goal) and np.abs(obs[JOINT_POS] - goal).max() < 1e-3:
                break
            time.sleep(0.005)
        np.testing.assert_array_equal(sent, goal)  # once reachable within the limits, the goal goes out unchanged
        np.testing.assert_array_equal(obs[JOINT_TARGET], goal)
        assert np.abs(obs[JOINT_POS] - goal).max() < 1e-3


def test_targets_beyond_the_joint_limits_are_never_sent(make_robot):
    with make_robot() as robot:
        upper = np.array(PANDA_UPPER)
        for _ in range(20):
            sent = robot.send_action({JOINT_POS: upper + 1.0})[JOINT_POS]
            assert np.all(sent <= upper)
            assert np.all(robot.get_observation()[JOINT_TARGET] <= upper)
            time.sleep(0.002)


def test_malformed_actions_raise_before_anything_is_sent(make_robot):
    with make_robot() as robot:
        target = robot.get_observation()[JOINT_TARGET]
        with pytest.raises(KeyError, match="joint.pos"):
            robot.send_action({"joint.vel": np.zeros(7)})
        with pytest.raises(ValueError, match="shape"):
            robot.send_action({JOINT_POS: np.zeros(6)})
        np.testing.assert_array_equal(robot.get_observation()[JOINT_TARGET], target)


def test_hold_stops_the_arm_and_keeps_the_target(make_robot):
    with make_robot() as robot:
        q0 = robot.get_observation()[JOINT_POS].copy()
        start = time.monotonic()
        while (t := time.monotonic() - start) < 0.3:  # get the arm moving smoothly
            robot.send_action({JOINT_POS: q0 + 0.2 * t * t})
            time.sleep(0.005)
        assert np.abs(robot.get_observation()[JOINT_VEL]).max() > 0.01
        robot.hold()
        held = robot.get_observation()[JOINT_TARGET]
        time.sleep(0.2)
        obs = robot.get_observation()
        np.testing.assert_array_equal(obs[JOINT_TARGET], held)
        assert np.abs(obs[JOINT_VEL]).max() < 1e-3
        if SAFETY_STATUS in obs:
            assert obs[SAFETY_STATUS][0] & Status.HOLDING


def test_context_manager_disconnects_even_when_the_block_raises(make_robot):
    robot = make_robot()
    with pytest.raises(RuntimeError, match="boom"), robot:
        robot.send_action({JOINT_POS: robot.get_observation()[JOINT_POS]})
        raise RuntimeError("boom")
    assert not robot.is_connected


# --- contracts --------------------------------------------------------------------------------------------------------


class _Minimal(Robot):
    """The smallest valid robot: holds a position; ``hold`` fails on demand."""

    name = "minimal_test_robot"
    config_class = RobotConfig
    fail_hold = False

    def __init__(self, config: RobotConfig | None = None) -> None:
        super().__init__(config or RobotConfig(), *joint_features(["j"]))
        self.holds = 0
        self.link_up = True

    def _link_alive(self) -> bool:
        return self.link_up

    @requires_disconnected
    def connect(self) -> None:
        self._mark_connected()

    @requires_connected
    def disconnect(self) -> None:
        self._mark_disconnected()

    @requires_connected
    def get_observation(self) -> dict:
        return {}

    @requires_connected
    def send_action(self, action):
        return dict(action)

    @requires_connected
    def hold(self) -> None:
        self.holds += 1
        if self.fail_hold:
            raise OSError("bus error")


def test_context_exit_holds_then_disconnects_even_if_hold_fails():
    robot = _Minimal()
    with robot:
        pass
    assert robot.holds == 1 and not robot.is_connected
    robot.fail_hold = True
    with robot:
        pass
    assert robot.holds == 2 and not robot.is_connected


def test_the_base_serves_the_features_given_to_its_constructor_before_connect():
    robot = _Minimal()
    assert robot.observation_features == joint_features(["j"])[0] and robot.action_features == joint_features(["j"])[1]
    assert robot.joint_names == ["j"] and not robot.is_connected


def test_is_connected_follows_connect_disconnect_and_a_lost_link():
    robot = _Minimal()
    robot.connect()
    assert robot.is_connected
    robot.link_up = False  # the link died on its own: commands are refused, and connect() may be called again
    assert not robot.is_connected
    with pytest.raises(DeviceNotConnectedError, match="not connected"):
        robot.hold()
    robot.link_up = True
    assert robot.is_connected
    with pytest.raises(DeviceAlreadyConnectedError, match="already connected"):
        robot.connect()
    robot.disconnect()
    assert not robot.is_connected


def test_every_backend_takes_its_features_from_the_base():
    """No backend re-declares the boilerplate the base owns (issue 14: six copies of it)."""
    for cls in (SimulatedJointRobot, SafeRobot, RemoteRobot, ServoArmRobot, URRobot, EmulatedRealityRobot):
        redeclared = {"observation_features", "action_features", "is_connected"} & set(vars(cls))
        assert not redeclared, f"{cls.__name__} re-declares {sorted(redeclared)}"


def test_a_robot_without_a_name_or_config_class_fails_at_definition():
    with pytest.raises(TypeError, match="name"):
        type("NoName", (_Minimal,), {"name": ""})
    with pytest.raises(TypeError, match="config_class"):
        type("NoConfig", (_Minimal,), {"name": "no_config", "config_class": dict})


def test_a_robot_with_an_unguarded_method_fails_at_definition():
    with pytest.raises(TypeError, match="send_action.*requires_connected"):
        type("Unguarded", (_Minimal,), {"name": "unguarded", "send_action": lambda self, action: action})
    with pytest.raises(TypeError, match="connect.*requires_disconnected"):
        type("WrongGuard", (_Minimal,), {"name": "wrong_guard", "connect": requires_connected(lambda self: None)})


def test_constructor_checks_the_config_type():
    @dataclasses.dataclass
    class OtherConfig(RobotConfig):
        pass

    with pytest.raises(TypeError, match="SimulatedJointRobotConfig"):
        SimulatedJointRobot(OtherConfig())
    with pytest.raises(ValueError, match="initial_positions"):
        SimulatedJointRobotConfig(initial_positions=(5.0,) * 7)
    with pytest.raises(ValueError, match="port"):
        RemoteRobotConfig(port=0)


def test_panda_limits_match_the_twins_mjcf():
    model = mujoco.MjModel.from_xml_path(str(REPO / "sim" / "assets" / "pusht.xml"))
    ranges = np.array([model.joint(name).range for name in PANDA_JOINT_NAMES])
    np.testing.assert_allclose(ranges[:, 0], PANDA_LOWER)
    np.testing.assert_allclose(ranges[:, 1], PANDA_UPPER)
