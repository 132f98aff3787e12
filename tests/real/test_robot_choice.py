"""The robot group's configs (safety limits per arm, calibration checks) and robot sessions against real server
processes: the twin-arm check reads the served robot's joints before anything is commanded."""

from __future__ import annotations

import functools
import math

import pytest

from real.bridge.server import ServerProcess
from real.drivers.calibration import ArmCalibration, JointCalibration
from real.drivers.servo_arm import ARM_JOINTS as SO100_JOINTS
from real.drivers.ur import UR_LOWER, UR_MAX_VELOCITY, UR_UPPER
from real.emulated.reality import EmulatedRealityConfig
from real.emulated.sim_robot import SimulatedJointRobot, SimulatedJointRobotConfig
from real.modes.deploy import DeployConfig
from real.modes.deploy_run import DeployRunConfig
from real.robot_choice import (
    EmulatedRobotChoice,
    RemoteRobotChoice,
    SO100RobotChoice,
    UR5eRobotChoice,
    check_twin_arm,
    robot_session,
    serve_process,
)
from sim.pusht_env import ARM_JOINTS


def test_the_twin_arm_check_wants_the_same_joints_in_the_same_order():
    check_twin_arm("robot=emulated", ARM_JOINTS)
    with pytest.raises(ValueError, match=r"robot=x has 7 joints \['joint2', 'joint1'.*scene for this arm is missing"):
        check_twin_arm("robot=x", ["joint2", "joint1", *ARM_JOINTS[2:]])


def test_so100_limits_come_from_its_calibration_and_the_ids_must_agree(tmp_path):
    uncalibrated = SO100RobotChoice(port="/dev/ttyACM0", servo_ids=[11, 12, 13, 14, 15, 16])
    arm = uncalibrated.servo_arm_config()
    assert [j.name for j in arm.joints] == list(SO100_JOINTS) and [j.motor_id for j in arm.joints] == [11, 12, 13, 14,
                                                                                                       15, 16]
    assert uncalibrated.safe_robot_config().safety.upper == (math.pi / 2,) * 6
    joints = [JointCalibration(n, i + 1, 2000, 1, -0.5 - 0.1 * i, 0.5) for i, n in enumerate(SO100_JOINTS)]
    ArmCalibration(joints).save(tmp_path / "so100.json")
    calibrated = SO100RobotChoice(port="/dev/ttyACM0", calibration=str(tmp_path / "so100.json"), max_velocity=1.5)
    safety = calibrated.safe_robot_config().safety
    assert safety.lower == pytest.approx([-0.5 - 0.1 * i for i in range(6)]) and safety.max_velocity == (1.5,) * 6
    with pytest.raises(ValueError, match=r"so100.json' is for servo ids \[1, 2, 3, 4, 5, 6\], robot.servo_ids is \[1, 2, 3, "
                                         r"4, 5, 7\]"):
        SO100RobotChoice(port="/dev/ttyACM0", calibration=str(tmp_path / "so100.json"), servo_ids=[1, 2, 3, 4, 5, 7]
                   ).servo_arm_config()
    with pytest.raises(ValueError, match="must list 6 servo ids"):
        SO100RobotChoice(port="/dev/ttyACM0", servo_ids=[1, 2]).servo_arm_config()


def test_ur5e_limits_are_the_drivers_and_its_checks_apply():
    safety = UR5eRobotChoice(host="192.168.1.10", max_acceleration=2.0).safe_robot_config().safety
    assert safety.lower == tuple(UR_LOWER) and safety.upper == tuple(UR_UPPER)
    assert safety.max_velocity == tuple(UR_MAX_VELOCITY) and safety.max_acceleration == (2.0,) * 6
    with pytest.raises(ValueError, match="gain"):
        UR5eRobotChoice(host="192.168.1.10", gain=5.0).ur_config()


def test_configs_refuse_what_cannot_run():
    with pytest.raises(ValueError, match="robot.port"):
        RemoteRobotChoice(port=0)
    with pytest.raises(TypeError, match="only a local robot"):
        serve_process(RemoteRobotChoice(port=5555), seed=0)
    with pytest.raises(ValueError, match=r"deploy.time_scale \(1.0\) must equal robot.reality.time_scale \(0.5\)"):
        DeployRunConfig(robot=EmulatedRobotChoice(EmulatedRealityConfig(time_scale=0.5)), deploy=DeployConfig(time_scale=1.0))


def test_a_remote_session_yields_an_unconnected_robot_with_the_twins_joints():
    with ServerProcess(SimulatedJointRobot) as server:
        with robot_session(RemoteRobotChoice(port=server.address[1]), seed=0) as robot:
            assert not robot.is_connected  # checked through the handshake only: nothing commanded yet
            assert robot.config.joint_names == ARM_JOINTS
            with robot:
                assert robot.get_joint_state()["joint.pos"].shape == (7,)


def test_a_remote_robot_with_other_joint_names_is_refused_naming_them():
    names = tuple(f"axis{i}" for i in range(7))
    factory = functools.partial(SimulatedJointRobot, SimulatedJointRobotConfig(joint_names=names))
    with ServerProcess(factory) as server:
        port = server.address[1]
        with pytest.raises(ValueError, match=rf"robot=remote \(sim_joint 'sim_panda' at 127.0.0.1:{port}\) has 7 joints "
                                             r"\['axis0'.*'axis6'\], but the twin's arm"):
            with robot_session(RemoteRobotChoice(port=port), seed=0):
                pass
