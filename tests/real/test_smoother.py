"""The streamed joint commands stay within the safety layer's limits (it never clamps them), converge to the
trajectory with a bounded lag, and every command the safety layer does clamp is counted and reported."""

from __future__ import annotations

import time

import numpy as np
import pytest

from real.bridge.client import RemoteRobot, RemoteRobotConfig
from real.bridge.server import ServerProcess
from real.emulated.sim_robot import SimulatedJointRobot
from real.modes.session import JointStreamer, robot_feedback, safety_limits
from real.modes.smoother import POSITION_INSET, JointSmoother
from real.panda import PANDA_HOME
from real.robot import JOINT_POS, JOINT_TARGET, SAFETY_CLAMPED, requires_connected
from real.safe_robot import SafeRobot, SafeRobotConfig
from real.safety import SafetyConfig, SafetyLayer

LIMITS = SafetyConfig()  # the Panda's: what the bridge server enforces
MARGIN = 0.8
HOME = np.array(PANDA_HOME)


def _stamps(duration: float, seed: int = 0, jitter: bool = True) -> np.ndarray:
    """Send times of a 100 Hz stream, jittered: gaps from 2 to 30 ms, as on a loaded machine."""
    if not jitter:
        return np.arange(1, int(round(duration / 0.01)) + 1) * 0.01
    stamps = np.cumsum(np.random.default_rng(seed).uniform(0.002, 0.03, size=int(duration / 0.002)))
    return stamps[stamps <= duration]


def _stream(trajectory, duration: float, seed: int = 0,
            jitter: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray, SafetyLayer]:
    """Runs the smoother over ``trajectory(t) -> (q, qdot)`` at jittered stamps and passes every command through the
    safety layer; returns (stamps, commands, targets, layer)."""
    smoother = JointSmoother(LIMITS, MARGIN)
    layer = SafetyLayer(LIMITS)
    smoother.reset(HOME, 0.0)
    layer.reset(HOME, 0.0)
    stamps = _stamps(duration, seed, jitter)
    commands, targets = [], []
    for t in stamps:
        target, velocity = trajectory(t)
        command = smoother.step(t, target, velocity)
        verdict = layer.filter(command, now=t)
        np.testing.assert_array_equal(verdict.target, command)  # the guard let it through unchanged
        commands.append(command)
        targets.append(target)
    return stamps, np.array(commands), np.array(targets), layer


def _finite_differences(stamps: np.ndarray, commands: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Velocity and acceleration of the commands as the safety layer measures them (dt capped at max_dt)."""
    dt = np.minimum(np.diff(np.concatenate([[0.0], stamps])), LIMITS.max_dt)[:, None]
    velocity = np.diff(np.vstack([HOME, commands]), axis=0) / dt
    acceleration = np.diff(np.vstack([np.zeros(7), velocity]), axis=0) / dt
    return velocity, acceleration


def _assert_within_limits(stamps: np.ndarray, commands: np.ndarray) -> None:
    velocity, acceleration = _finite_differences(stamps, commands)
    assert np.all(np.abs(velocity) <= MARGIN * np.array(LIMITS.max_velocity) + 1e-9), np.abs(velocity).max(axis=0)
    assert np.all(np.abs(acceleration) <= MARGIN * np.array(LIMITS.max_acceleration) + 1e-6), \
        np.abs(acceleration).max(axis=0)


def test_a_kinked_trajectory_is_streamed_within_the_limits_and_never_clamped():
    # Every joint runs at 0.5 rad/s and reverses at t = 0.3 s: a velocity jump of 1 rad/s in no time.
    def kink(t):
        offset = 0.5 * np.where(t < 0.3, t, 0.6 - t)
        return HOME + offset, np.full(7, 0.5 if t < 0.3 else -0.5)

    stamps, commands, targets, layer = _stream(kink, 1.0)
    _assert_within_limits(stamps, commands)
    assert layer.n_clamped == 0 and sum(layer.clamp_counts.values()) == 0
    # once the reversal is absorbed it is back on the trajectory exactly (dead-beat)
    late = stamps > 0.8
    np.testing.assert_allclose(commands[late], targets[late], atol=1e-9)


def test_a_trajectory_into_a_position_limit_stops_there_within_the_limits():
    # Joint 4 (lower limit -3.0718 rad) driven down at 2 rad/s from -2.356 rad: it must brake before the limit.
    lower = LIMITS.lower[3]

    def dive(t):
        return HOME - np.eye(7)[3] * 2.0 * t, -np.eye(7)[3] * 2.0

    stamps, commands, _, layer = _stream(dive, 1.0, seed=4)
    _assert_within_limits(stamps, commands)
    assert layer.n_clamped == 0 and commands[:, 3].min() >= lower
    assert commands[-1, 3] == pytest.approx(lower + POSITION_INSET, abs=1e-9)  # it stops just inside the limit


def test_a_step_is_streamed_within_the_limits_and_converges_without_overshoot():
    step = np.array([0.5, -0.3, 0.2, 0.4, -0.5, 0.3, 0.6])

    def jump(t):
        return (HOME + step if t >= 0.05 else HOME), np.zeros(7)

    for jitter in (False, True):
        stamps, commands, targets, layer = _stream(jump, 1.5, seed=1, jitter=jitter)
        _assert_within_limits(stamps, commands)
        assert layer.n_clamped == 0
        np.testing.assert_allclose(commands[-1], HOME + step, atol=1e-12)  # converged to the final target
        overshoot = ((commands - HOME) * np.sign(step) - np.abs(step)).max(axis=0)
        # none at an even pace; with jitter at most what one braking step of a 30 ms gap then a 2 ms one can add
        bound = MARGIN * np.array(LIMITS.max_acceleration) * 0.03 ** 2 if jitter else 1e-12
        assert np.all(overshoot <= bound), overshoot


def test_the_lag_on_a_smooth_ramp_is_bounded_and_vanishes():
    # Starting from rest at 1 rad/s (within the limits): only the start needs the acceleration limit.
    speed, amax = 1.0, MARGIN * min(LIMITS.max_acceleration)

    def ramp(t):
        return HOME + speed * t, np.full(7, speed)

    stamps, commands, targets, _ = _stream(ramp, 1.0, seed=2)
    lag = np.abs(targets - commands).max(axis=1)
    # the error of starting at rest, closed on the braking curve: within twice the distance an ideal start loses
    assert lag.max() <= speed ** 2 / amax, lag.max()
    assert lag[stamps > 0.5].max() <= 1e-9
    _assert_within_limits(stamps, commands)


def test_a_trajectory_within_the_limits_is_streamed_unchanged():
    # from rest, peak 0.15 rad/s and 0.45 rad/s^2: feasible even where a 2 ms gap follows a 30 ms one (8x)
    def slow(t):
        return HOME + 0.05 * (1 - np.cos(3 * t)), np.full(7, 0.15 * np.sin(3 * t))

    smoother = JointSmoother(LIMITS, MARGIN)
    smoother.reset(HOME, 0.0)
    for t in _stamps(1.0, seed=3):
        target, velocity = slow(t)
        np.testing.assert_allclose(smoother.step(t, target, velocity), target, atol=1e-12)


def test_smoother_rejects_a_bad_margin_and_use_before_reset():
    with pytest.raises(ValueError, match="margin"):
        JointSmoother(LIMITS, 1.5)
    with pytest.raises(RuntimeError, match="before reset"):
        JointSmoother(LIMITS).step(0.0, HOME)
    with pytest.raises(TypeError, match="SafetyConfig"):
        JointSmoother({"max_velocity": 1.0})  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------- clamp counter
def _safe_robot() -> SafeRobot:
    return SafeRobot(SimulatedJointRobot(), SafeRobotConfig(safety=SafetyConfig(watchdog_timeout=1.0)))


def test_the_clamp_counter_counts_a_command_beyond_the_limits_and_not_one_within():
    with _safe_robot() as robot:
        start = robot.get_joint_state()[JOINT_TARGET]
        now = time.monotonic()
        robot.send_action({JOINT_POS: start + 0.0005}, sent_at=now + 0.01)  # <= 0.05 rad/s and 5 rad/s^2: within
        assert robot_feedback(robot)[1] == 0 and robot.get_joint_state()[SAFETY_CLAMPED][0] == 0
        robot.send_action({JOINT_POS: start + 0.5}, sent_at=now + 0.02)  # 50 rad/s: beyond
        assert robot_feedback(robot)[1] == 1 and robot.get_joint_state()[SAFETY_CLAMPED][0] == 1


def test_streamer_counts_the_safety_layers_clamps_and_its_smoothed_stream_has_none():
    goal = HOME + np.array([0.3, -0.2, 0.2, 0.3, -0.3, 0.2, 0.3])
    for limits, expect_clamps in ((None, False), (SafetyConfig(max_velocity=(1e3,) * 7,
                                                               max_acceleration=(1e6,) * 7, max_step=10.0), True)):
        with _safe_robot() as robot:
            # default: the robot's own limits; the second streamer believes in limits far above the robot's
            streamer = JointStreamer(robot, stream_hz=100.0, limits=limits, margin=1.0 if limits else 0.8)
            assert safety_limits(robot) is robot.config.safety
            now = time.monotonic()
            streamer.add(now, HOME)
            streamer.add(now + 0.02, goal)  # a step of up to 0.3 rad in 20 ms
            streamer.start()
            time.sleep(0.5)
            streamer.stop()
            streamer.check()
            assert streamer.n_sent >= 10
            if expect_clamps:
                assert streamer.n_clamped >= 1 and streamer.clamp_fraction() > 0
                assert streamer.n_clamped == robot.safety.n_clamped
            else:
                assert streamer.n_clamped == 0 and streamer.clamp_fraction() == 0.0
                np.testing.assert_allclose(robot.get_joint_state()[JOINT_TARGET], goal, atol=1e-9)


def test_streamer_refuses_limits_for_another_number_of_joints():
    with _safe_robot() as robot:
        two = SafetyConfig(lower=(-1.0, -1.0), upper=(1.0, 1.0), max_velocity=(1.0, 1.0),
                           max_acceleration=(1.0, 1.0))
        streamer = JointStreamer(robot, stream_hz=100.0, limits=two)
        streamer.add(time.monotonic(), HOME)
        with pytest.raises(ValueError, match="2 joints"):
            streamer.start()


def test_streamer_over_the_bridge_takes_the_servers_limits_and_counts_its_clamps():
    goal = HOME + np.array([0.3, -0.2, 0.2, 0.3, -0.3, 0.2, 0.3])
    loose = SafetyConfig(max_velocity=(1e3,) * 7, max_acceleration=(1e6,) * 7, max_step=10.0)
    served = SafetyConfig(watchdog_timeout=1.0)  # the Panda's limits; no watchdog hold on a loaded test machine
    with ServerProcess(SimulatedJointRobot, robot=SafeRobotConfig(safety=served)) as process:
        for limits in (None, loose):
            robot = RemoteRobot(RemoteRobotConfig(port=process.address[1]))
            with robot:
                assert safety_limits(robot) == served  # announced by the server at connect
                streamer = JointStreamer(robot, stream_hz=100.0, limits=limits, margin=1.0 if limits else 0.8)
                now = time.monotonic()
                streamer.add(now, robot.get_joint_state()[JOINT_TARGET])
                streamer.add(now + 0.02, goal)
                streamer.start()
                time.sleep(0.6)
                streamer.stop()
                streamer.check()
                assert streamer.n_sent >= 10
                if limits is None:
                    assert streamer.clamp_fraction() == 0.0
                    np.testing.assert_allclose(robot.get_joint_state()[JOINT_TARGET], goal, atol=1e-9)
                else:  # the server's counter, reported with each command's reply, counts what it clamped
                    assert streamer.n_clamped >= 1 and 0 < streamer.clamp_fraction() <= 1
            goal = HOME  # the second run goes back


class _StallingRobot(SafeRobot):
    """A SafeRobot whose 5th command reply comes 150 ms late: its watchdog (50 ms) makes it hold meanwhile."""

    calls = 0

    @requires_connected
    def send_action(self, action, sent_at=None, seq=None):
        reply = super().send_action(action, sent_at, seq)
        self.calls += 1
        if self.calls == 5:
            time.sleep(0.15)
        return reply


def test_streamer_restarts_from_a_watchdog_hold_without_a_clamp():
    robot = _StallingRobot(SimulatedJointRobot(), SafeRobotConfig(safety=SafetyConfig(watchdog_timeout=0.05)))
    with robot:
        streamer = JointStreamer(robot, stream_hz=100.0)
        now = time.monotonic()
        streamer.add(now, HOME)
        streamer.add(now + 2.0, HOME + 0.4)  # 0.2 rad/s: moving when the stream stalls
        streamer.start()
        time.sleep(0.4)
        streamer.stop()
        streamer.check()
        assert robot.calls > 10 and streamer.n_restarts >= 1
        assert streamer.n_clamped == robot.safety.n_clamped == 0


class _RacingRobot(SafeRobot):
    """A SafeRobot that holds (as its watchdog would) while its 5th command is in flight: that command, stamped before
    the hold, reaches the safety layer after it."""

    calls = 0

    @requires_connected
    def send_action(self, action, sent_at=None, seq=None):
        self.calls += 1
        if self.calls == 5:
            self.hold("watchdog")
        return super().send_action(action, sent_at, seq)


def test_streamer_goes_on_from_a_command_clamped_by_a_racing_hold_without_another_clamp():
    robot = _RacingRobot(SimulatedJointRobot(), SafeRobotConfig(safety=SafetyConfig(watchdog_timeout=1.0)))
    with robot:
        streamer = JointStreamer(robot, stream_hz=100.0)
        now = time.monotonic()
        streamer.add(now, HOME)
        streamer.add(now + 2.0, HOME + 0.4)
        streamer.start()
        time.sleep(0.4)
        streamer.stop()
        streamer.check()
        assert robot.calls > 10 and streamer.n_resyncs == 1
        assert streamer.n_clamped == robot.safety.n_clamped == 1  # the racing command only
