"""Safety layer: each limit clamps as specified, bad commands are refused, the e-stop latches, the watchdog holds."""

from __future__ import annotations

import time

import numpy as np
import pytest

from real.emulated.sim_robot import SimulatedJointRobot, SimulatedJointRobotConfig
from real.robot import JOINT_POS, JOINT_TARGET, JOINT_VEL, SAFETY_CLAMPED, SAFETY_REFUSED, SAFETY_STATUS
from real.safe_robot import SafeRobot, SafeRobotConfig
from real.safety import Refusal, SafetyConfig, SafetyLayer, Status
from real.watchdog import Watchdog

BIG = 1e9


def _layer(**overrides) -> SafetyLayer:
    """Two joints in [-1, 1]; every limit not under test is made huge so one rule acts at a time."""
    fields = dict(lower=(-1.0, -1.0), upper=(1.0, 1.0), max_velocity=(BIG, BIG), max_acceleration=(BIG, BIG),
                  max_step=BIG, max_dt=0.05, max_command_age=0.1, workspace_lower=(-0.5, -1.0, 0.0),
                  workspace_upper=(0.5, 1.0, 1.0))
    fk = overrides.pop("fk", None)
    fields.update(overrides)
    return SafetyLayer(SafetyConfig(**fields), fk=fk)


def test_position_limits_clamp_each_joint():
    layer = _layer()
    layer.reset(np.array([0.99, -0.99]), now=0.0)
    verdict = layer.filter(np.array([1.5, -3.0]), now=0.01)
    np.testing.assert_array_equal(verdict.target, [1.0, -1.0])
    assert verdict.clamps == ("position",) and layer.clamp_counts["position"] == 1 and layer.n_clamped == 1


def test_a_target_within_every_limit_passes_bit_exactly():
    layer = _layer(max_velocity=(1.0, 1.0), max_acceleration=(100.0, 100.0), max_step=0.1)
    layer.reset(np.zeros(2), now=0.0)
    target = np.array([0.001, -0.0003])
    verdict = layer.filter(target, now=0.01)
    np.testing.assert_array_equal(verdict.target, target)
    assert verdict.clamps == () and layer.n_clamped == 0


def test_velocity_limit_bounds_the_change_per_elapsed_time():
    layer = _layer(max_velocity=(1.0, 2.0))
    layer.reset(np.zeros(2), now=0.0)
    verdict = layer.filter(np.array([0.5, -0.5]), now=0.01)
    np.testing.assert_allclose(verdict.target, [0.01, -0.02])
    assert verdict.clamps == ("velocity",)


def test_velocity_limit_uses_the_senders_timestamps_capped_at_max_dt():
    layer = _layer(max_velocity=(1.0, 1.0))
    layer.reset(np.zeros(2), now=0.0)
    # Arrival jitter does not matter: the sender's stamps are 10 ms apart.
    verdict = layer.filter(np.array([0.5, 0.5]), now=0.013, sent_at=0.010)
    np.testing.assert_allclose(verdict.target, [0.01, 0.01])
    # A long pause does not allow a jump: dt is capped at max_dt = 50 ms.
    verdict = layer.filter(np.array([0.5, 0.5]), now=5.0, sent_at=5.0)
    np.testing.assert_allclose(verdict.target, [0.06, 0.06])


def test_acceleration_limit_ramps_the_commanded_velocity():
    layer = _layer(max_acceleration=(10.0, 10.0))
    layer.reset(np.zeros(2), now=0.0)
    positions = []
    for k in range(1, 6):
        verdict = layer.filter(np.array([0.02, 0.0]), now=0.01 * k)
        positions.append(verdict.target[0])
        assert verdict.clamps == ("acceleration",)
    # From rest, v grows by a*dt = 0.1 rad/s per 10 ms step: positions 0.001, 0.003, 0.006, 0.010, 0.015.
    np.testing.assert_allclose(positions, [0.001, 0.003, 0.006, 0.010, 0.015])
    # Braking is limited the same way: asking to stop at once only sheds 0.1 rad/s per step.
    verdict = layer.filter(np.array([positions[-1], 0.0]), now=0.06)
    np.testing.assert_allclose(verdict.target[0], positions[-1] + 0.004)


def test_per_step_limit_caps_any_single_change():
    layer = _layer(max_step=0.05)
    layer.reset(np.zeros(2), now=0.0)
    verdict = layer.filter(np.array([0.5, -0.02]), now=0.05)
    np.testing.assert_allclose(verdict.target, [0.05, -0.02])
    assert verdict.clamps == ("step",)


def test_stale_future_out_of_order_and_malformed_commands_are_refused_and_leave_the_reference():
    layer = _layer()
    layer.reset(np.zeros(2), now=0.0)
    assert layer.filter(np.array([0.1, 0.1]), now=1.0, sent_at=0.85).refusal == Refusal.STALE
    assert layer.filter(np.array([0.1, 0.1]), now=1.0, sent_at=1.2).refusal == Refusal.STALE
    assert layer.filter(np.array([0.1, 0.1]), now=1.0, sent_at=0.95, seq=5).accepted
    assert layer.filter(np.array([0.2, 0.2]), now=1.01, seq=5).refusal == Refusal.OUT_OF_ORDER
    assert layer.filter(np.array([0.2, 0.2]), now=1.01, seq=4).refusal == Refusal.OUT_OF_ORDER
    assert layer.filter(np.array([np.nan, 0.2]), now=1.01, seq=6).refusal == Refusal.MALFORMED
    assert layer.filter(np.array([0.2, 0.2, 0.2]), now=1.01, seq=6).refusal == Refusal.MALFORMED
    assert layer.filter(np.array([np.inf, 0.2]), now=1.01, seq=6).target is None
    np.testing.assert_array_equal(layer.reference, [0.1, 0.1])
    assert layer.filter(np.array([0.2, 0.2]), now=1.02, seq=6).accepted
    layer.new_session()  # a new commander numbers from 1 again
    assert layer.filter(np.array([0.2, 0.2]), now=1.03, seq=1).accepted
    assert layer.n_refused == 7 and layer.refusal_counts[Refusal.MALFORMED] == 3
    assert layer.refusal_counts[Refusal.STALE] == 2 and layer.refusal_counts[Refusal.OUT_OF_ORDER] == 2


def test_estop_latches_until_released_and_restarts_from_rest():
    layer = _layer(max_acceleration=(10.0, 10.0))
    layer.reset(np.zeros(2), now=0.0)
    layer.estop()
    for k in range(3):
        assert layer.filter(np.zeros(2), now=0.01 * (k + 1)).refusal == Refusal.ESTOP
    layer.release_estop(np.array([0.3, 0.3]), now=1.0)
    verdict = layer.filter(np.array([0.3 + 1e-4, 0.3]), now=1.01)  # 1e-4 rad in 10 ms is within a*dt^2 = 1e-3
    np.testing.assert_allclose(verdict.target, [0.3 + 1e-4, 0.3])
    assert layer.refusal_counts[Refusal.ESTOP] == 3


def _fk(q: np.ndarray) -> np.ndarray:
    """A toy arm whose end effector's x is joint 0 (m per rad)."""
    return np.array([q[0], 0.0, 0.5])


def test_workspace_pulls_the_target_back_to_the_boundary_along_the_segment():
    layer = _layer(fk=_fk)
    layer.reset(np.array([0.4, 0.0]), now=0.0)
    verdict = layer.filter(np.array([0.6, 0.2]), now=0.01)
    assert verdict.clamps == ("workspace",)
    assert 0.5 - 1e-3 < verdict.target[0] <= 0.5
    np.testing.assert_allclose(verdict.target[1], verdict.target[0] - 0.4, atol=1e-12)  # same fraction of the way


def test_workspace_refuses_when_the_reference_is_outside_unless_the_target_is_inside():
    layer = _layer(fk=_fk)
    layer.reset(np.array([0.7, 0.0]), now=0.0)
    assert layer.filter(np.array([0.8, 0.0]), now=0.01).refusal == Refusal.WORKSPACE
    assert layer.filter(np.array([0.3, 0.0]), now=0.02).accepted


def test_random_commands_never_pass_a_limit():
    cfg = dict(lower=(-1.0, -0.5), upper=(1.0, 0.5), max_velocity=(1.0, 2.0), max_acceleration=(20.0, 5.0),
               max_step=0.03)
    layer = _layer(**cfg)
    rng = np.random.default_rng(7)
    lower, upper = np.array(cfg["lower"]), np.array(cfg["upper"])
    vmax, amax = np.array(cfg["max_velocity"]), np.array(cfg["max_acceleration"])
    now, prev, prev_vel, prev_time = 0.0, np.zeros(2), np.zeros(2), 0.0
    layer.reset(prev, now)
    accepted = n_accel_exceptions = 0
    for _ in range(2000):
        now += float(rng.uniform(0.0005, 0.08))
        target = rng.normal(0.0, 2.0, 2) if rng.random() < 0.5 else prev + rng.normal(0.0, 0.01, 2)
        if rng.random() < 0.02:
            target[0] = np.nan
        verdict = layer.filter(target, now=now)
        if not verdict.accepted:
            continue
        accepted += 1
        out = verdict.target
        dt = min(now - prev_time, 0.05)  # max_dt
        vel = (out - prev) / dt
        assert np.all(out >= lower) and np.all(out <= upper)
        assert np.all(np.abs(out - prev) <= 0.03 + 1e-12)
        assert np.all(np.abs(vel) <= vmax + 1e-9)
        at_limit = (out == lower) | (out == upper)  # position limits win over the acceleration limit
        assert np.all((np.abs(vel - prev_vel) <= amax * dt + 1e-9) | at_limit)
        n_accel_exceptions += int(np.any((np.abs(vel - prev_vel) > amax * dt + 1e-9) & at_limit))
        prev, prev_vel, prev_time = out, vel, now
    assert accepted > 1900 and layer.n_refused == 2000 - accepted
    assert n_accel_exceptions < 0.01 * accepted  # braking before the limits makes these rare


@pytest.mark.parametrize(("field", "value", "match"), [
    ("upper", (1.0,), "upper must hold 2"),
    ("lower", (1.0, 2.0), "lower must be < upper"),
    ("max_velocity", (1.0, 0.0), "max_velocity"),
    ("max_step", 0.0, "max_step"),
    ("watchdog_timeout", -1.0, "watchdog_timeout"),
    ("workspace_upper", (1.0, 1.0), "workspace_upper"),
])
def test_config_errors_name_the_field(field, value, match):
    fields = dict(lower=(-1.0, -1.0), upper=(1.0, 1.0), max_velocity=(1.0, 1.0), max_acceleration=(1.0, 1.0))
    fields[field] = value
    with pytest.raises(ValueError, match=match):
        SafetyConfig(**fields)


# --- SafeRobot: the layer and the watchdog around a real (simulated) backend -----------------------------------------


def _safe_robot(watchdog_timeout: float = 0.025) -> SafeRobot:
    return SafeRobot(SimulatedJointRobot(), SafeRobotConfig(safety=SafetyConfig(watchdog_timeout=watchdog_timeout)))


def test_safe_robot_sends_only_the_clamped_target_to_the_backend():
    robot = _safe_robot(watchdog_timeout=5.0)
    with robot:
        q0 = robot.get_observation()[JOINT_POS]
        far = q0 + 10.0
        sent = robot.send_action({JOINT_POS: far})[JOINT_POS]
        backend_target = robot.backend.get_observation()[JOINT_TARGET]
        np.testing.assert_array_equal(sent, backend_target)
        assert np.all(np.abs(sent - q0) <= 0.1 + 1e-12)  # max_step
        assert np.all(sent <= np.array(robot.config.safety.upper))
        obs = robot.get_observation()
        assert obs[SAFETY_STATUS][0] & Status.CLAMPED and obs[SAFETY_CLAMPED][0] == 1
        before = robot.backend.get_observation()[JOINT_TARGET]
        unchanged = robot.send_action({JOINT_POS: np.full(7, np.nan)})[JOINT_POS]
        np.testing.assert_array_equal(unchanged, before)
        np.testing.assert_array_equal(robot.backend.get_observation()[JOINT_TARGET], before)
        obs = robot.get_observation()
        assert obs[SAFETY_STATUS][0] & Status.REFUSED and obs[SAFETY_REFUSED][0] == 1
        assert robot.last_verdict.refusal == Refusal.MALFORMED


def test_safe_robot_estop_latches_until_reset():
    robot = _safe_robot(watchdog_timeout=5.0)
    with robot:
        q0 = robot.get_observation()[JOINT_POS]
        robot.estop()
        for _ in range(3):
            np.testing.assert_array_equal(robot.send_action({JOINT_POS: q0 + 1e-4})[JOINT_POS], q0)
        assert robot.status & Status.ESTOP and robot.safety.refusal_counts[Refusal.ESTOP] == 3
        robot.reset_estop()
        assert not robot.status & Status.ESTOP
        time.sleep(0.02)
        np.testing.assert_allclose(robot.send_action({JOINT_POS: q0 + 1e-5})[JOINT_POS], q0 + 1e-5)


def test_safe_robot_watchdog_holds_when_commands_stop_and_the_next_command_resumes():
    robot = _safe_robot(watchdog_timeout=0.025)
    with robot:
        q0 = robot.get_observation()[JOINT_POS].copy()
        start = time.monotonic()
        while (t := time.monotonic() - start) < 0.3:  # a gentle ramp, within every limit after the first steps
            last_command = time.monotonic()  # taken before the send: the robot accepts the command after it
            robot.send_action({JOINT_POS: q0 + 0.05 * t * t})
            time.sleep(0.005)
        deadline = time.monotonic() + 2.0
        while robot.hold_reason is None and time.monotonic() < deadline:
            time.sleep(0.001)
        assert robot.hold_reason == "watchdog"
        assert robot.held_at - last_command >= 0.025  # never before the timeout
        assert robot.status & Status.WATCHDOG and robot.status & Status.HOLDING
        held_target = robot.get_observation()[JOINT_TARGET]
        time.sleep(0.1)
        obs = robot.get_observation()
        np.testing.assert_array_equal(obs[JOINT_TARGET], held_target)
        assert np.abs(obs[JOINT_VEL]).max() < 1e-3
        robot.send_action({JOINT_POS: held_target})
        assert robot.hold_reason is None and not robot.status & Status.HOLDING


def test_safe_robot_rejects_mismatched_limits_and_non_robots():
    three = SimulatedJointRobotConfig(joint_names=("a", "b", "c"), lower=(-1,) * 3, upper=(1,) * 3,
                                      max_velocity=(1,) * 3, max_acceleration=(1,) * 3, initial_positions=(0,) * 3)
    with pytest.raises(ValueError, match="7 joints but the robot has 3"):
        SafeRobot(SimulatedJointRobot(three))
    with pytest.raises(TypeError, match="Robot backend"):
        SafeRobot(object())
    config = SafeRobotConfig(safety={"lower": (-1,) * 3, "upper": (1,) * 3, "max_velocity": (1,) * 3,
                                     "max_acceleration": (1,) * 3})
    assert SafeRobot(SimulatedJointRobot(three), config).joint_names == ["a", "b", "c"]


def test_watchdog_fires_once_per_silence_and_not_while_fed():
    fired = []
    dog = Watchdog(0.05, fired.append)
    dog.start()
    try:
        dog.feed()
        time.sleep(0.2)
        assert len(fired) == 1 and not dog.armed
        dog.disarm()
        time.sleep(0.08)
        assert len(fired) == 1  # disarmed: nothing to fire
        dog.feed()
        dog.disarm()
        time.sleep(0.08)
        assert len(fired) == 1
    finally:
        dog.stop()
    with pytest.raises(ValueError, match="timeout"):
        Watchdog(0.0, fired.append)
