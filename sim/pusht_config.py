"""Typed configuration of the PushT twin environment and its domain randomisation."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

ACTION_MODES = ("pusher_xy", "joint_pos")
CAMERAS = ("overhead", "wrist", "side")


def _check_range(name: str, value: tuple[float, float], low: float | None = None) -> None:
    if len(value) != 2 or value[0] > value[1]:
        raise ValueError(f"{name} must be a (low, high) pair with low <= high, got {value!r}")
    if low is not None and value[0] < low:
        raise ValueError(f"{name} must be >= {low}, got {value!r}")


@dataclass
class DomainRandomizationConfig:
    """Per-episode randomisation of the twin's physics, sampled at reset from the reset seed.

    Scales multiply the nominal values of the MJCF; ``(1, 1)`` switches a term off. Friction and block mass are drawn
    uniformly from their range, or, when their ``*_mean`` is set (e.g. from an identified posterior,
    ``real.sim2real.identified_env``), from a normal ``N(mean, std)`` clipped to the range.
    """

    friction_scale: tuple[float, float] = (1.0, 1.0)  # block-table and pusher-block sliding friction
    block_mass_scale: tuple[float, float] = (1.0, 1.0)  # T-block mass and inertia
    # per-episode normal draws instead of uniform ones (None: uniform over the range, as before); clipped to the range
    friction_scale_mean: float | None = None
    friction_scale_std: float = 0.0
    block_mass_scale_mean: float | None = None
    block_mass_scale_std: float = 0.0
    joint_damping_scale: tuple[float, float] = (1.0, 1.0)  # arm joint damping
    init_pose_noise: tuple[float, float] = (0.0, 0.0)  # std of noise added to the block's initial (xy m, theta rad)
    # Disturbance model (sim.disturbance.PushSchedule): every push_interval s (uniform) a push_force N planar force in
    # a random direction acts on the block for push_duration s. 0 N switches it off.
    push_force: float = 0.0
    push_interval: tuple[float, float] = (2.0, 4.0)
    push_duration: float = 0.1
    push_force_std: float = 0.0  # N; > 0: each episode's push force ~ N(push_force, push_force_std), clipped at 0

    def __post_init__(self) -> None:
        _check_range("randomization.friction_scale", self.friction_scale, low=0.0)
        _check_range("randomization.block_mass_scale", self.block_mass_scale, low=1e-3)
        for name in ("friction_scale", "block_mass_scale"):
            _check_normal(name, getattr(self, name), getattr(self, f"{name}_mean"), getattr(self, f"{name}_std"))
        _check_range("randomization.joint_damping_scale", self.joint_damping_scale, low=0.0)
        if min(self.init_pose_noise) < 0:
            raise ValueError(f"randomization.init_pose_noise must be >= 0, got {self.init_pose_noise!r}")
        _check_range("randomization.push_interval", self.push_interval, low=0.0)
        if self.push_force < 0 or self.push_duration < 0 or self.push_force_std < 0:
            raise ValueError(f"randomization.push_force, push_duration and push_force_std must be >= 0, got "
                             f"{self.push_force}, {self.push_duration} and {self.push_force_std}")

    def draw_scale(self, name: str, rng: np.random.Generator) -> float:
        """One episode's ``friction_scale`` or ``block_mass_scale``: uniform over its range, or normal around its
        ``*_mean`` (``*_std``) clipped to the range when the mean is set."""
        low, high = getattr(self, name)
        mean = getattr(self, f"{name}_mean")
        if mean is None:
            return float(rng.uniform(low, high))
        return float(np.clip(rng.normal(mean, getattr(self, f"{name}_std")), low, high))


def _check_normal(name: str, value: tuple[float, float], mean: float | None, std: float) -> None:
    """A normal draw's mean must lie in the clipping range ``value`` and its std be >= 0 (ValueError naming them)."""
    if std < 0:
        raise ValueError(f"randomization.{name}_std must be >= 0, got {std}")
    if mean is not None and not value[0] <= mean <= value[1]:
        raise ValueError(f"randomization.{name}_mean ({mean}) must lie in randomization.{name} {tuple(value)!r}, the "
                         f"range its draws are clipped to")


@dataclass
class PushTConfig:
    """The PushT twin: task, action interface, observations and initial-state distribution.

    Units: m, rad, s. Planar poses are ``(x, y, theta)`` in the world frame (table top is z = 0).
    """

    # --- task -------------------------------------------------------------------------------------------
    goal_pose: tuple[float, float, float] = (0.55, 0.0, 0.0)  # where the T must go
    success_threshold: float = 0.95  # coverage for success (as gym-pusht)
    max_episode_steps: int = 300  # truncation, in control steps
    control_hz: float = 10.0  # policy rate; physics runs at 1 / timestep of the MJCF (500 Hz)

    # --- action ---------------------------------------------------------------------------------------------
    action_mode: str = "pusher_xy"  # "pusher_xy": target (x, y) of the pusher tip; "joint_pos": 7 joint targets
    workspace_low: tuple[float, float] = (0.25, -0.32)  # pusher target bounds (m)
    workspace_high: tuple[float, float] = (0.85, 0.32)
    max_pusher_step: float = 0.05  # largest pusher target change per control step (m), i.e. 0.5 m/s at 10 Hz
    pusher_height: float = 0.005  # height of the pusher tip above the table (m)
    ik_substeps: int = 5  # IK solves per control step along the interpolated target
    # Joint velocity and acceleration limits (rad/s, rad/s^2; pusher_xy actions) under which each IK solution is
    # reached, e.g. the robot's (real.panda.PANDA_MAX_VELOCITY / PANDA_MAX_ACCELERATION) so the robot can follow the
    # twin's arm exactly. () = unlimited, the default: the expert then moves joints up to ~3 rad/s, and a policy
    # trained that way loses half its success under the Panda's limits (0.88 -> 0.40 for the default run).
    joint_velocity_limit: tuple[float, ...] = ()
    joint_acceleration_limit: tuple[float, ...] = ()

    # --- observations ---------------------------------------------------------------------------------------
    state: bool = True  # observation.state (pusher xy)
    environment_state: bool = True  # observation.environment_state (block x, y, cos, sin): false for image policies
    joints: bool = False  # observation.joint_position and observation.joint_velocity (7 each)
    cameras: tuple[str, ...] = ()  # observation.images.<camera> for each named camera
    depth: bool = False  # also observation.depth.<camera> (m) for each camera
    image_size: tuple[int, int] = (96, 96)  # (height, width) of camera observations
    render_camera: str = "side"  # camera for render() (rollout videos): an oblique view the arm does not hide
    render_size: tuple[int, int] = (240, 240)

    # --- initial states -------------------------------------------------------------------------------------
    block_offset_range: tuple[float, float] = (0.06, 0.14)  # distance of the block's start from the goal (m)
    block_angle_range: tuple[float, float] = (-1.0, 1.0)  # block start angle relative to the goal (rad)
    pusher_start_box: tuple[float, float, float, float] = (0.35, -0.20, 0.75, 0.20)  # xmin, ymin, xmax, ymax

    randomization: DomainRandomizationConfig = field(default_factory=DomainRandomizationConfig)

    def __post_init__(self) -> None:
        if isinstance(self.randomization, dict):
            self.randomization = DomainRandomizationConfig(**self.randomization)
        if self.action_mode not in ACTION_MODES:
            raise ValueError(f"env.action_mode must be one of {ACTION_MODES}, got {self.action_mode!r}")
        unknown = [c for c in (*self.cameras, self.render_camera) if c not in CAMERAS]
        if unknown:
            raise ValueError(f"env.cameras / env.render_camera: unknown camera(s) {unknown}; known: {CAMERAS}")
        if not 0 < self.success_threshold <= 1:
            raise ValueError(f"env.success_threshold must be in (0, 1], got {self.success_threshold}")
        self.joint_velocity_limit = tuple(float(v) for v in self.joint_velocity_limit)
        self.joint_acceleration_limit = tuple(float(v) for v in self.joint_acceleration_limit)
        for name in ("joint_velocity_limit", "joint_acceleration_limit"):
            limit = getattr(self, name)
            if limit and (len(limit) != 7 or min(limit) <= 0):
                raise ValueError(f"env.{name} must be 7 positive values (one per joint) or empty, got {limit}")
        if self.max_episode_steps <= 0 or self.control_hz <= 0 or self.ik_substeps <= 0:
            raise ValueError("env.max_episode_steps, env.control_hz and env.ik_substeps must be positive")
        if self.depth and not self.cameras:
            raise ValueError("env.depth=true needs at least one camera in env.cameras")
        if any(lo >= hi for lo, hi in zip(self.workspace_low, self.workspace_high)):
            raise ValueError(f"env.workspace_low {self.workspace_low} must be below env.workspace_high")
        _check_range("env.block_offset_range", self.block_offset_range, low=0.0)
        _check_range("env.block_angle_range", self.block_angle_range)
