"""Joint commands the safety layer never has to touch: an online velocity- and acceleration-limited tracker.

The streamer (``real.modes.session.JointStreamer``) plays the twin's joint trajectory, a list of (wall time, joints)
samples every ~8-10 ms, to the robot. Sent as is (linearly interpolated), the trajectory breaks the arm's limits in
three ways, which the safety layer (``real.safety.SafetyLayer``) then clamped, 30-85% of the commands in
``bench.py sync``:

* the twin's arm itself moves faster than a Panda may: its PD servo snaps to every new IK target. Recorded in one
  sync episode (seed 100002, half speed): a quarter of the samples accelerate beyond 0.8 x ``PANDA_MAX_ACCELERATION``
  (joint 4: 51 rad/s^2 at the 99th percentile against 12.5), joint 4 peaks at 1.96 rad/s (limit 2.175);
* the guard measures velocity and acceleration as finite differences over the *sender's* stamps, and commands are
  not evenly spaced on a loaded machine: an early command after a late one sees the same motion as a jump (a 20 ms
  gap then a 5 ms one triples the apparent acceleration of a smooth curve);
* when the twin falls behind, the stream holds its last sample and then jumps to the next (a step).

Why not an interpolating curve (cubic Hermite, minimum jerk) between twin samples: it smooths the shape but bounds
nothing, so the first cause passes through unchanged; its derivatives are those of a continuous curve, not the finite
differences over jittered stamps that the guard checks; and a step cannot be interpolated before the next sample
exists (minimum jerk between samples also needs the next one: one more sample of delay). A stream the guard never
clamps is one that keeps the guard's own rule, so the limit belongs at the source, computed as the guard computes it.

:class:`JointSmoother` is that limit, an online second-order tracker run once per command. It keeps the last command
and its velocity exactly as the guard computes them (``dt`` from the same stamps, capped at ``max_dt``) and picks the
next command so that, with a ``margin`` (< 1) on every limit:

* its velocity ``(q_new - q) / dt`` stays within ``margin * max_velocity``, the change of velocity within
  ``margin * max_acceleration * dt``, the step within ``margin * max_step``, and it stops ``POSITION_INSET`` inside
  the position limits (towards one, no faster than braking allows: the guard's ``sqrt(2 a d)`` rule);
* where the trajectory is itself within those limits, the command *is* the trajectory (dead-beat: it lands on the
  sample: no lag, no added delay);
* where it is not (a kink, a step, the twin's snaps), it closes the gap as fast as the limits allow without
  overshooting it: on top of the trajectory's own velocity (feed-forward, so a moving target is caught, not chased
  with a steady lag), the relative velocity is the lesser of the dead-beat one ``e / dt`` and the braking curve
  ``sqrt(2 (a / 2) |e|)``. Braking is planned at half the acceleration limit: with full braking the next command
  could not slow down enough if it came sooner than the last (jitter), and would overshoot.

The lag is zero on a feasible trajectory and, after a jump of the trajectory's velocity by ``dv``, about
``dv^2 / (2 a)`` (within ``dv^2 / a``: 1 rad/s at 6 rad/s^2 loses at most 0.17 rad, and catches up). Replaying the
recorded episode above at a jittered 100 Hz through the guard: the linear stream is clamped on 33% of the commands
and the guard's output is 24.8 mrad RMS from the trajectory (it limits with no braking curve, so it overshoots); the
smoother's commands are 12.7 mrad RMS from it, and none is clamped. The margin (0.8) leaves room for what the source
cannot see: the rounding of stamps on the wire, another clock's offset.
"""

from __future__ import annotations

import numpy as np

from real.safety import SafetyConfig

POSITION_INSET = 0.005  # rad; commands aim to stop this far inside each position limit (room for a late brake)


class JointSmoother:
    """An online tracker whose commands stay within ``margin`` x the safety layer's limits (module docstring).

    Args:
        limits: the safety layer's limits (the guard the stream must never trigger).
        margin: fraction of each velocity, acceleration and step limit the commands may use, in (0, 1].

    Raises:
        TypeError: ``limits`` is not a SafetyConfig.
        ValueError: ``margin`` outside (0, 1].
    """

    def __init__(self, limits: SafetyConfig, margin: float = 0.8) -> None:
        if not isinstance(limits, SafetyConfig):
            raise TypeError(f"JointSmoother needs a SafetyConfig, got {type(limits).__name__}")
        if not 0 < margin <= 1:
            raise ValueError(f"JointSmoother margin must be in (0, 1], got {margin}")
        self.limits, self.margin = limits, float(margin)
        self._vmax = margin * np.array(limits.max_velocity)
        self._amax = margin * np.array(limits.max_acceleration)
        self._max_step = margin * limits.max_step
        self._lower, self._upper = np.array(limits.lower), np.array(limits.upper)
        inset = np.minimum(POSITION_INSET, 0.25 * (self._upper - self._lower))
        self._lower_in, self._upper_in = self._lower + inset, self._upper - inset  # where the commands aim to stop
        self._q: np.ndarray | None = None  # last command (rad)
        self._v = np.zeros(limits.n_joints)  # its velocity as the guard computes it (rad/s)
        self._stamp = 0.0  # its stamp (s)

    @property
    def position(self) -> np.ndarray | None:
        """The last command (rad); ``None`` before :meth:`reset`."""
        return None if self._q is None else self._q.copy()

    @property
    def velocity(self) -> np.ndarray:
        """The last command's velocity, ``(q - q_before) / dt`` as the safety layer computes it (rad/s)."""
        return self._v.copy()

    def reset(self, position: np.ndarray, stamp: float) -> None:
        """Start at rest at ``position`` (rad) at time ``stamp`` (s): where the safety layer's reference is.

        Raises:
            ValueError: ``position`` has the wrong size or is not finite.
        """
        position = np.asarray(position, dtype=np.float64)
        if position.shape != (self.limits.n_joints,) or not np.all(np.isfinite(position)):
            raise ValueError(f"JointSmoother.reset needs {self.limits.n_joints} finite joint positions, got {position}")
        self._q = np.clip(position, self._lower, self._upper)
        self._v = np.zeros(self.limits.n_joints)
        self._stamp = float(stamp)

    def step(self, stamp: float, target: np.ndarray, target_velocity: np.ndarray | None = None) -> np.ndarray:
        """The command for time ``stamp`` (s, after the last one) towards the trajectory's ``target`` (rad) there,
        which moves at ``target_velocity`` (rad/s; default at rest); it becomes the new last command.

        Raises:
            RuntimeError: called before :meth:`reset`.
        """
        if self._q is None:
            raise RuntimeError("JointSmoother.step() called before reset(position, stamp)")
        dt = min(max(stamp - self._stamp, 1e-6), self.limits.max_dt)  # the safety layer's dt
        q, a = self._q, self._amax
        target = np.asarray(target, dtype=np.float64)
        inside = np.clip(target, self._lower_in, self._upper_in)
        moving = np.zeros_like(q) if target_velocity is None else np.asarray(target_velocity, dtype=np.float64)
        feed = np.where(inside == target, moving, 0.0)  # a target held at a limit does not move
        target = inside
        gap = target - feed * dt - q  # what remains beyond following the target
        velocity = feed + np.sign(gap) * np.minimum(np.abs(gap) / dt, self._braking_speed(gap))
        up = np.minimum(self._vmax, self._braking_speed(np.maximum(self._upper_in - q, 0.0)))
        down = np.minimum(self._vmax, self._braking_speed(np.maximum(q - self._lower_in, 0.0)))
        velocity = np.clip(velocity, -down, up)  # it can still stop before a position limit
        velocity = np.clip(velocity, self._v - a * dt, self._v + a * dt)
        velocity = np.clip(velocity, -self._max_step / dt, self._max_step / dt)
        command = np.clip(q + velocity * dt, self._lower, self._upper)
        self._q, self._stamp = command, float(stamp)
        self._v = (command - q) / dt
        return command.copy()

    def _braking_speed(self, distance: np.ndarray) -> np.ndarray:
        """Speed (rad/s) from which braking at half the acceleration limit stops within ``distance`` (rad; its size):
        ``sqrt(2 (a / 2) d)``. Half, so the braking stays within the limit when the next command comes sooner than the
        last (it then has less time to slow down)."""
        return np.sqrt(self._amax * np.abs(distance))
