"""An in-process joint-space robot: a 7-joint Panda (the twin's limits) tracking position targets, NumPy only.

It stands in for hardware in bridge tests and benchmarks. Time is real: the state is integrated up to the
caller's clock on every call, with 1 ms sub-steps, so a robot left alone keeps moving towards its target
exactly as a real arm would between two reads.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from real.connection import requires_connected, requires_disconnected
from real.panda import PANDA_HOME, PANDA_JOINT_NAMES, PANDA_LOWER, PANDA_MAX_ACCELERATION, PANDA_MAX_VELOCITY, PANDA_UPPER
from real.robot import JOINT_POS, Robot, RobotConfig, joint_action, joint_features, joint_state

log = logging.getLogger(__name__)


@dataclasses.dataclass
class SimulatedJointRobotConfig(RobotConfig):
    """Joint limits and tracking dynamics of the simulated arm (defaults: the twin's Panda)."""

    id: str = "sim_panda"
    # --- joints (one entry per joint, in command order) -------------------------------------------------------------
    joint_names: tuple[str, ...] = PANDA_JOINT_NAMES
    lower: tuple[float, ...] = PANDA_LOWER  # position limits (rad)
    upper: tuple[float, ...] = PANDA_UPPER
    max_velocity: tuple[float, ...] = PANDA_MAX_VELOCITY  # rad/s
    max_acceleration: tuple[float, ...] = PANDA_MAX_ACCELERATION  # rad/s^2
    initial_positions: tuple[float, ...] = PANDA_HOME  # rad, the pose at connect()
    # --- tracking model --------------------------------------------------------------------------------------------
    gain: float = 40.0  # 1/s: desired velocity = gain * error, capped by the limits (first-order tracking)
    substep: float = 0.001  # s, integration step
    position_noise: float = 0.0  # rad, std of Gaussian noise added to measured positions
    seed: int = 0  # seeds the measurement noise

    def __post_init__(self) -> None:
        super().__post_init__()
        n = len(self.joint_names)
        for field in ("lower", "upper", "max_velocity", "max_acceleration", "initial_positions"):
            value = tuple(float(v) for v in getattr(self, field))
            if len(value) != n or not all(math.isfinite(v) for v in value):
                raise ValueError(f"{field} must hold {n} finite values (one per joint), got {getattr(self, field)!r}")
            setattr(self, field, value)
        self.joint_names = tuple(str(n) for n in self.joint_names)
        if any(lo >= hi for lo, hi in zip(self.lower, self.upper)):
            raise ValueError(f"lower must be < upper per joint, got lower={self.lower}, upper={self.upper}")
        if any(v <= 0 for v in self.max_velocity + self.max_acceleration):
            raise ValueError("max_velocity and max_acceleration must be > 0 for every joint")
        if any(not lo <= q <= hi for q, lo, hi in zip(self.initial_positions, self.lower, self.upper)):
            raise ValueError(f"initial_positions {self.initial_positions} must lie within [lower, upper]")
        if self.gain <= 0 or not 0 < self.substep <= 0.01 or self.gain * self.substep >= 1:
            raise ValueError(f"need gain > 0, 0 < substep <= 0.01 and gain * substep < 1, got gain={self.gain}, "
                             f"substep={self.substep}")
        if self.position_noise < 0:
            raise ValueError(f"position_noise must be >= 0, got {self.position_noise}")


class SimulatedJointRobot(Robot):
    """A joint-space arm that tracks position targets with velocity and acceleration saturation.

    Per sub-step: ``v_des = sign(e) * min(gain*|e|, v_max, sqrt(2*a_max*|e|))`` with ``e = target - q`` (the
    square-root term brakes in time, so it does not overshoot), the velocity moves towards ``v_des`` by at most
    ``a_max * dt``, and the joints stop hard at their limits. Like a robot's own controller it clamps targets
    to the position limits (and logs it); it enforces nothing else: that is the safety layer's job.

    Args:
        config: joint limits and dynamics.
        clock: monotonic time source in seconds (default ``time.monotonic``); tests may pass a fake clock.
    """

    name = "sim_joint"
    config_class = SimulatedJointRobotConfig

    def __init__(self, config: SimulatedJointRobotConfig | None = None,
                 clock: Callable[[], float] | None = None) -> None:
        cfg = self.checked_config(config if config is not None else SimulatedJointRobotConfig())
        super().__init__(cfg, *joint_features(cfg.joint_names))
        self.config: SimulatedJointRobotConfig
        self._clock = clock or time.monotonic
        self._lower, self._upper = np.array(cfg.lower), np.array(cfg.upper)
        self._vmax, self._amax = np.array(cfg.max_velocity), np.array(cfg.max_acceleration)
        self._lock = threading.Lock()
        self._q = np.array(cfg.initial_positions)
        self._v = np.zeros_like(self._q)
        self._target = self._q.copy()
        self._t = 0.0
        self._rng = np.random.default_rng(cfg.seed)
        self.n_position_clamps = 0  # targets clamped to the position limits since construction

    @requires_disconnected
    def connect(self) -> None:
        """Start the clock; the arm is at rest at ``initial_positions`` (first connect) or where it was left."""
        with self._lock:
            self._t = self._clock()
            self._v[:] = 0.0
            self._target = self._q.copy()
            self._mark_connected()

    @requires_connected
    def disconnect(self) -> None:
        """Stop the arm where it is (the state is kept for the next ``connect()``)."""
        with self._lock:
            self._advance(self._clock())
            self._target = self._q.copy()
            self._v[:] = 0.0  # the brakes engage
            self._mark_disconnected()

    @requires_connected
    def get_observation(self) -> dict[str, np.ndarray]:
        """The state at the last completed sub-step (its time is ``timestamp``); positions carry ``position_noise``."""
        with self._lock:
            self._advance(self._clock())
            q = self._q if self.config.position_noise == 0 else self._q + self._rng.normal(
                0.0, self.config.position_noise, self._q.shape)
            return joint_state(q, self._v, self._target, self._t)

    @requires_connected
    def send_action(self, action: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Track ``action["joint.pos"]`` (rad) clamped to the position limits; returns the clamped target.

        Raises:
            KeyError, ValueError: malformed action; ValueError also for non-finite targets.
        """
        target = joint_action(action, len(self._q))
        if not np.all(np.isfinite(target)):
            raise ValueError(f"action[{JOINT_POS!r}] has non-finite values: {target}")
        clamped = np.clip(target, self._lower, self._upper)
        if not np.array_equal(clamped, target):
            self.n_position_clamps += 1
            log.debug("%r: target clamped to position limits on joints %s", self, np.flatnonzero(clamped != target))
        with self._lock:
            self._advance(self._clock())
            self._target = clamped
        return {JOINT_POS: clamped.copy()}

    @requires_connected
    def hold(self) -> None:
        """Brake at the acceleration limit and stay where the arm comes to rest.

        The target becomes each joint's stopping point ``q + v|v| / (2 a_max)`` (clamped to the limits), so the
        arm decelerates straight to rest, in ``|v| / a_max`` seconds, without coming back to where it was.
        """
        with self._lock:
            self._advance(self._clock())
            stop = self._q + self._v * np.abs(self._v) / (2.0 * self._amax)
            self._target = np.clip(stop, self._lower, self._upper)

    def _advance(self, now: float) -> None:
        """Integrate the tracking dynamics in whole ``substep`` steps up to ``now`` (s).

        Like a controller sampling at 1/substep, the state is that of the last completed sub-step; its time is
        ``self._t`` (the observation's timestamp).
        """
        dt = self.config.substep
        n = int((now - self._t) / dt)
        if n <= 0:
            return
        self._t += n * dt
        q, v, target = self._q, self._v, self._target
        if not v.any() and np.array_equal(q, target):
            return  # at rest on target
        gain, vmax, two_a, dv_max = self.config.gain, self._vmax, 2.0 * self._amax, self._amax * dt
        for _ in range(n):
            err = target - q
            abs_err = np.abs(err)
            speed = np.minimum(np.minimum(gain * abs_err, vmax), np.sqrt(two_a * abs_err))
            v += np.clip(np.copysign(speed, err) - v, -dv_max, dv_max)
            q += v * dt
            if abs_err.max() < 1e-9 and np.abs(v).max() < 1e-9:
                q[:] = target  # settled: snap and stop integrating
                v[:] = 0.0
                break
        if (q < self._lower).any() or (q > self._upper).any():  # hard stops (targets are clamped inside them)
            at_stop = (q < self._lower) | (q > self._upper)
            np.clip(q, self._lower, self._upper, out=q)
            v[at_stop] = 0.0
