"""The always-on safety filter between a command source and a robot: limits, staleness, ordering, e-stop.

:class:`SafetyLayer` turns each joint target into a target the robot may track, or refuses it. It keeps a
reference (the last target it let through, with its time and velocity) and, in this order:

1. refuses a command when the e-stop is latched, when it is malformed (wrong size, NaN/inf), stale (older
   than ``max_command_age``, or dated that far in the future) or out of order (seq not above the last one);
2. clamps the target to the joint position limits;
3. limits the target's velocity ``(target - ref) / dt`` to ``max_velocity`` (and, towards a position limit,
   to ``sqrt(2 * max_acceleration * distance)`` so it can still stop in time) and its change of velocity to
   ``max_acceleration * dt``, where ``dt`` is the time since the reference (the sender's timestamps when given,
   so network jitter does not change the limit), capped at ``max_dt``;
4. limits the change per command to ``max_step``, and clamps to the position limits again: position limits
   win over the acceleration limit where the two conflict (a target stopped at a limit);
5. if a forward-kinematics callable is given, keeps the end effector inside the workspace box: a target
   outside is pulled back along the segment from the reference (bisection), or refused if the reference is
   outside too.

Nothing outside the limits is ever passed on. Each clamp and refusal is counted per kind and logged: every
event at DEBUG, and a WARNING at most once a second per kind with the count since the last one.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import math
import time
from collections.abc import Callable, Sequence

import numpy as np

from real.panda import PANDA_LOWER, PANDA_MAX_ACCELERATION, PANDA_MAX_VELOCITY, PANDA_UPPER

log = logging.getLogger(__name__)

CLAMP_KINDS = ("position", "velocity", "acceleration", "step", "workspace")


class Status(enum.IntFlag):
    """Bits of ``safety.status`` (and of the STATE message's ``status``)."""

    OK = 0
    ESTOP = 1  # the e-stop is latched; commands are refused until reset
    HOLDING = 2  # the robot holds its position (watchdog, disconnect, hold() or e-stop); cleared by a new command
    WATCHDOG = 4  # the current hold was caused by the watchdog
    CLAMPED = 8  # the last accepted command was clamped
    REFUSED = 16  # the last command was refused (its code is in ``last_refusal``)


class Refusal(enum.IntEnum):
    """Why a command was refused (0: it was not)."""

    NONE = 0
    MALFORMED = 1  # wrong size or non-finite values
    ESTOP = 2  # the e-stop is latched
    STALE = 3  # older than max_command_age (or dated in the future)
    OUT_OF_ORDER = 4  # seq not above the last accepted one
    WORKSPACE = 5  # end effector outside the workspace and no safe point towards it
    NOT_COMMANDER = 6  # another client holds the command slot (set by the server)


@dataclasses.dataclass
class SafetyConfig:
    """Limits the safety layer enforces (defaults: the twin's Panda, Franka's datasheet rates)."""

    # --- joint limits (one entry per joint, command order) ---------------------------------------------------------
    lower: tuple[float, ...] = PANDA_LOWER  # rad
    upper: tuple[float, ...] = PANDA_UPPER  # rad
    max_velocity: tuple[float, ...] = PANDA_MAX_VELOCITY  # rad/s, of the commanded target
    max_acceleration: tuple[float, ...] = PANDA_MAX_ACCELERATION  # rad/s^2, of the commanded target
    max_step: float = 0.1  # rad, largest change of any joint target per command
    max_dt: float = 0.05  # s, cap on the time between commands used by the velocity/acceleration limits
    # --- end-effector workspace box (m, world frame); used only when a forward-kinematics callable is given -------
    workspace_lower: tuple[float, float, float] = (-1.0, -1.0, 0.0)
    workspace_upper: tuple[float, float, float] = (1.0, 1.0, 1.2)
    # --- timing ----------------------------------------------------------------------------------------------------
    max_command_age: float = 0.1  # s, commands older than this on arrival are refused as stale
    watchdog_timeout: float = 0.025  # s without a fresh command before the robot holds

    def __post_init__(self) -> None:
        n = len(self.lower)
        for field in ("lower", "upper", "max_velocity", "max_acceleration"):
            value = tuple(float(v) for v in getattr(self, field))
            if len(value) != n or n == 0 or not all(math.isfinite(v) for v in value):
                raise ValueError(f"SafetyConfig.{field} must hold {n} finite values (one per joint), got "
                                 f"{getattr(self, field)!r}")
            setattr(self, field, value)
        if any(lo >= hi for lo, hi in zip(self.lower, self.upper)):
            raise ValueError(f"SafetyConfig: lower must be < upper per joint, got {self.lower} / {self.upper}")
        if any(v <= 0 for v in self.max_velocity + self.max_acceleration):
            raise ValueError("SafetyConfig.max_velocity and max_acceleration must be > 0 for every joint")
        for field in ("workspace_lower", "workspace_upper"):
            value = tuple(float(v) for v in getattr(self, field))
            if len(value) != 3:
                raise ValueError(f"SafetyConfig.{field} must be (x, y, z) in m, got {getattr(self, field)!r}")
            setattr(self, field, value)
        if any(lo >= hi for lo, hi in zip(self.workspace_lower, self.workspace_upper)):
            raise ValueError(f"SafetyConfig: workspace_lower {self.workspace_lower} must be < workspace_upper "
                             f"{self.workspace_upper}")
        for field in ("max_step", "max_dt", "max_command_age", "watchdog_timeout"):
            if not getattr(self, field) > 0:
                raise ValueError(f"SafetyConfig.{field} must be > 0, got {getattr(self, field)!r}")

    @property
    def n_joints(self) -> int:
        """Number of joints the limits describe."""
        return len(self.lower)


@dataclasses.dataclass(frozen=True)
class Verdict:
    """The safety layer's answer to one command: the target to send (``None`` if refused) and what it changed."""

    target: np.ndarray | None
    clamps: tuple[str, ...] = ()  # kinds from CLAMP_KINDS that changed the target
    refusal: Refusal = Refusal.NONE

    @property
    def accepted(self) -> bool:
        """Whether a target may be sent."""
        return self.target is not None


class _RateLimitedLog:
    """Each event at DEBUG, and a WARNING at most once per ``period`` seconds per kind with the count since the last.

    Messages are built lazily (``message()``), only when a line is actually written: the filter runs at 500 Hz.
    """

    def __init__(self, period: float = 1.0) -> None:
        self.period = period
        self._last: dict[str, float] = {}
        self._pending: dict[str, int] = {}

    def event(self, kind: str, message: Callable[[], str]) -> None:
        if log.isEnabledFor(logging.DEBUG):
            log.debug("safety %s: %s", kind, message())
        now = time.monotonic()
        self._pending[kind] = self._pending.get(kind, 0) + 1
        if now - self._last.get(kind, -math.inf) >= self.period:
            log.warning("safety %s (%d since last report): %s", kind, self._pending[kind], message())
            self._last[kind] = now
            self._pending[kind] = 0


class SafetyLayer:
    """Filters joint targets against :class:`SafetyConfig` (rules in the module docstring).

    Not thread-safe: the owner (``SafeRobot``) serialises calls. Times are seconds on one monotonic clock.

    Args:
        config: the limits.
        fk: optional forward kinematics, joint positions (rad) -> end-effector position(s) (m), shape (3,) or
            (k, 3); every point must stay inside the workspace box.

    Raises:
        TypeError: from the constructor, if ``config`` is not a SafetyConfig or ``fk`` is not callable.
    """

    def __init__(self, config: SafetyConfig, fk: Callable[[np.ndarray], np.ndarray] | None = None) -> None:
        if not isinstance(config, SafetyConfig):
            raise TypeError(f"SafetyLayer needs a SafetyConfig, got {type(config).__name__}")
        if fk is not None and not callable(fk):
            raise TypeError(f"fk must be callable, got {type(fk).__name__}")
        self.config = config
        self.fk = fk
        self._lower, self._upper = np.array(config.lower), np.array(config.upper)
        self._vmax, self._amax = np.array(config.max_velocity), np.array(config.max_acceleration)
        self._ws_lower, self._ws_upper = np.array(config.workspace_lower), np.array(config.workspace_upper)
        self._ref: np.ndarray | None = None  # last target let through (or the hold position)
        self._ref_vel = np.zeros(config.n_joints)
        self._ref_time = 0.0
        self._last_seq: int | None = None
        self.estopped = False
        self.clamp_counts = dict.fromkeys(CLAMP_KINDS, 0)
        self.refusal_counts = {r: 0 for r in Refusal if r != Refusal.NONE}
        self._log = _RateLimitedLog()
        self._n_clamped_commands = 0

    @property
    def n_clamped(self) -> int:
        """Commands accepted with at least one clamp, since construction."""
        return self._n_clamped_commands

    @property
    def n_refused(self) -> int:
        """Commands refused, since construction."""
        return sum(self.refusal_counts.values())

    @property
    def reference(self) -> np.ndarray | None:
        """The last target let through, or the position set by ``reset`` (rad); ``None`` before the first reset."""
        return None if self._ref is None else self._ref.copy()

    def reset(self, position: np.ndarray, now: float) -> None:
        """Restart from rest at ``position`` (rad) at time ``now`` (s): after connect, a hold, or an e-stop reset.

        Raises:
            ValueError: ``position`` has the wrong size or is not finite.
        """
        position = np.asarray(position, dtype=np.float64)
        if position.shape != (self.config.n_joints,) or not np.all(np.isfinite(position)):
            raise ValueError(f"reset position must be {self.config.n_joints} finite values, got {position}")
        self._ref = np.clip(position, self._lower, self._upper)
        self._ref_vel = np.zeros(self.config.n_joints)
        self._ref_time = now

    def new_session(self) -> None:
        """Forget the last seq (a new commanding connection starts its own numbering)."""
        self._last_seq = None

    def estop(self) -> None:
        """Latch the e-stop: every command is refused until :meth:`release_estop`."""
        if not self.estopped:
            log.warning("safety: e-stop latched")
        self.estopped = True

    def release_estop(self, position: np.ndarray, now: float) -> None:
        """Release the e-stop and restart from rest at ``position`` (rad)."""
        self.estopped = False
        self.reset(position, now)
        log.warning("safety: e-stop released")

    def record_refusal(self, refusal: Refusal, message: str) -> Verdict:
        """Count and log a refusal decided outside the layer (e.g. NOT_COMMANDER by the server)."""
        return self._refuse(refusal, message)

    def _refuse(self, refusal: Refusal, message: str) -> Verdict:
        if refusal == Refusal.NONE:
            raise ValueError("Refusal.NONE is not a refusal")
        self.refusal_counts[refusal] += 1
        self._log.event(f"refused/{refusal.name.lower()}", lambda: message)
        return Verdict(None, (), refusal)

    def filter(self, target: np.ndarray, now: float, sent_at: float | None = None, seq: int | None = None) -> Verdict:
        """Check and clamp one command; on acceptance the result becomes the new reference.

        Args:
            target: joint position targets (rad).
            now: arrival time (s).
            sent_at: when the sender built the command, on the same clock (s); ``None``: use ``now``.
            seq: the sender's sequence number; ``None``: do not check ordering.

        Returns:
            A :class:`Verdict`; its ``target`` is within every limit, or ``None`` when refused.

        Raises:
            RuntimeError: called before :meth:`reset`.
        """
        if self._ref is None:
            raise RuntimeError("SafetyLayer.filter() called before reset(position, now)")
        cfg = self.config
        if self.estopped:
            return self._refuse(Refusal.ESTOP, "command while the e-stop is latched")
        target = np.asarray(target, dtype=np.float64)
        if target.shape != (cfg.n_joints,) or not np.all(np.isfinite(target)):
            return self._refuse(Refusal.MALFORMED, f"target must be {cfg.n_joints} finite values, got {target}")
        stamp = now if sent_at is None else sent_at
        if abs(now - stamp) > cfg.max_command_age:
            return self._refuse(Refusal.STALE, f"command is {1e3 * (now - stamp):.1f} ms old "
                                               f"(limit {1e3 * cfg.max_command_age:.0f} ms)")
        if seq is not None and self._last_seq is not None and seq <= self._last_seq:
            return self._refuse(Refusal.OUT_OF_ORDER, f"seq {seq} after {self._last_seq}")

        clamps: list[str] = []
        desired = np.clip(target, self._lower, self._upper)
        if (desired != target).any():
            clamps.append("position")
        dt = min(max(stamp - self._ref_time, 1e-6), cfg.max_dt)
        vel = (desired - self._ref) / dt
        # Towards a position limit, no faster than a stop at max_acceleration allows: v <= sqrt(2 a d).
        up = np.minimum(self._vmax, np.sqrt(2.0 * self._amax * np.maximum(self._upper - self._ref, 0.0)))
        down = np.minimum(self._vmax, np.sqrt(2.0 * self._amax * np.maximum(self._ref - self._lower, 0.0)))
        limited = np.clip(vel, -down, up)
        if (limited != vel).any():
            clamps.append("velocity")
        vel = limited
        limited = np.clip(vel, self._ref_vel - self._amax * dt, self._ref_vel + self._amax * dt)
        if (limited != vel).any():
            clamps.append("acceleration")
        step = limited * dt
        limited = np.clip(step, -cfg.max_step, cfg.max_step)
        if (limited != step).any():
            clamps.append("step")
        rate_limited = any(kind in clamps for kind in ("velocity", "acceleration", "step"))
        # A target within the rate limits passes bit-exactly; a limited one is rebuilt from the step (and clipped
        # again, against rounding at a position limit).
        out = np.clip(self._ref + limited, self._lower, self._upper) if rate_limited else desired
        if self.fk is not None and not self._in_workspace(out):
            if not self._in_workspace(self._ref):
                return self._refuse(Refusal.WORKSPACE, "end effector outside the workspace at the reference and target")
            out = self._pull_into_workspace(self._ref, out)
            clamps.append("workspace")
        for kind in clamps:
            self.clamp_counts[kind] += 1
            self._log.event(f"clamp/{kind}", lambda: f"target {np.round(target, 4)} -> {np.round(out, 4)}")
        if clamps:
            self._n_clamped_commands += 1
        self._ref_vel = (out - self._ref) / dt
        self._ref, self._ref_time = out, stamp
        if seq is not None:
            self._last_seq = seq
        return Verdict(out.copy(), tuple(clamps), Refusal.NONE)

    def _in_workspace(self, q: np.ndarray) -> bool:
        points = np.atleast_2d(np.asarray(self.fk(q), dtype=np.float64))  # type: ignore[misc]
        return bool(np.all(np.isfinite(points)) and np.all(points >= self._ws_lower) and np.all(points <= self._ws_upper))

    def _pull_into_workspace(self, inside: np.ndarray, outside: np.ndarray, iterations: int = 12) -> np.ndarray:
        """The point furthest towards ``outside`` on the joint-space segment that is still inside (bisection)."""
        lo, hi = 0.0, 1.0
        for _ in range(iterations):
            mid = 0.5 * (lo + hi)
            if self._in_workspace(inside + mid * (outside - inside)):
                lo = mid
            else:
                hi = mid
        return inside + lo * (outside - inside)


def check_joint_count(config: SafetyConfig, joint_names: Sequence[str]) -> None:
    """Check that the limits describe as many joints as the robot has.

    Raises:
        ValueError: the counts differ (the message names both).
    """
    if config.n_joints != len(joint_names):
        raise ValueError(f"SafetyConfig describes {config.n_joints} joints but the robot has {len(joint_names)}: "
                         f"{list(joint_names)}")
