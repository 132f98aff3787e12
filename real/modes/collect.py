"""Collect mode of Real-is-Sim: a teleoperator drives the real robot, the twin follows it, and demonstrations are
recorded from the twin's state.

Timeline of one :meth:`Collector.run` (wall clock)::

    frames (main thread)   |f0|----- twin ticks for 1/fps s, paced to the wall clock -----|f1|---- ... ----|
    frame                  record the twin's observation; teleoperator.command() -> pusher xy (the action) + joints
    twin tick              every 1/stream_hz s (real.modes.session.TwinSession's pacing): robot.get_joint_state() ->
                           twin.follow_joints(q, qdot) -> physics
    twin correction        every 1/twin.rate_hz s of twin time: robot.read_sensors() depth -> ICP -> PD pull
    streamer (own thread)  q  q  q  q  q  q  q  q  q  q ...  the commanded joints, interpolated over 1/fps s

A recorded frame is the twin's env observation (the keys and dtypes of ``PushTEnv`` observations, so
``scripts/train.py dataset.root=<collected>`` trains on it) and, as ``action``, the pusher xy target the
teleoperator commanded at that frame (the env's ``pusher_xy`` action, as in the scripted expert's demonstrations).
The twin's arm is never simulated from the commands: every tick it takes the robot's *measured* joints and moves on
at their measured velocity until the next tick (``DigitalTwin.follow_joints``), so the twin's block is pushed by
where the real pusher is. The block is corrected from the robot's depth frames exactly as in deploy mode
(``DigitalTwin.attach``). The joint targets jump once per frame; the streamer moves towards them linearly over the
frame (a leader arm would be sampled at the stream rate instead) and keeps the robot's watchdog (25 ms) fed.

The episode ends on the twin's success or after ``max_steps`` frames. Success and coverage are judged in the twin,
and also from ``truth.block_pose`` when the robot provides it (the emulated reality does; only the sync error, the
real coverage and the :class:`ExpertTeleoperator`, which plays a human's eyes, read it). The robot is used as a
context manager: whatever ends the episode, the streamer is stopped and the robot holds and disconnects.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np

from real.modes.session import TwinSession
from real.robot import JOINT_POS, JOINT_VEL, TIMESTAMP, Robot
from real.sensors import TRUTH_BLOCK_POSE, SensorReading


@dataclasses.dataclass
class CollectConfig:
    """One collected episode."""

    seed: int = 0  # twin reset seed (the emulated reality must start from the same one)
    max_steps: int = 300  # recorded frames at most
    fps: int = 10  # recorded frames per second; must equal the twin env's control_hz (one frame per policy step)
    stream_hz: float = 100.0  # joint targets sent to the robot per second (the watchdog needs >= 40)
    stop_on_success: bool = True  # end the episode when the twin reports success
    start_tolerance: float = 0.05  # rad; the robot must start this close to the twin's initial joints (same seed)
    history_s: float = 2.0  # s of twin block poses kept to compare with truth at its capture time
    # simulated seconds of the twin per wall second; must equal the emulated reality's time_scale (hardware: 1)
    time_scale: float = 1.0

    def __post_init__(self) -> None:
        if self.max_steps < 1 or self.fps <= 0 or self.stream_hz < 40:
            raise ValueError(f"collect: need max_steps >= 1, fps > 0 and stream_hz >= 40 (the watchdog holds the robot "
                             f"below), got {self.max_steps}, {self.fps}, {self.stream_hz}")
        if self.start_tolerance <= 0 or self.time_scale <= 0 or self.history_s <= 0:
            raise ValueError(f"collect: need start_tolerance, time_scale and history_s > 0, got "
                             f"{self.start_tolerance}, {self.time_scale}, {self.history_s}")


@dataclasses.dataclass(frozen=True)
class TeleopCommand:
    """What a teleoperator commands at one frame."""

    pusher_xy: np.ndarray  # (2,) float32 m, world: the recorded action (the env's ``pusher_xy`` action space)
    joint_targets: np.ndarray  # (n_joints,) rad: the joints the robot should reach one frame from now


class Teleoperator(Protocol):
    """The operator in collect mode. :class:`ExpertTeleoperator` emulates one; on hardware a leader arm would
    implement this too (``command`` reads the leader's joints as ``joint_targets`` and their forward kinematics as
    ``pusher_xy``)."""

    def reset(self, seed: int) -> None:
        """Starts an episode."""

    def command(self, joint_state: Mapping[str, np.ndarray], readings: Mapping[str, SensorReading]) -> TeleopCommand:
        """The command for one frame, from the robot's latest joint state and sensor readings."""


class ExpertTeleoperator:
    """Plays the human operator in emulation: the scripted PushT expert looking at the real scene.

    Like a human's eyes, it sees the real block (``truth.block_pose``, which only an emulated reality provides) and
    the real pusher (forward kinematics of the measured joints). It asks :class:`sim.expert.PushTExpert` for a
    pusher target, clips it as ``PushTEnv.step`` does (workspace, ``max_pusher_step`` from the previous target) and
    turns it into joint targets with the env's IK along ``ik_substeps`` waypoints (the IK solves on its own scratch
    data, so the twin is not disturbed).

    Args:
        env: the twin's ``PushTEnv`` (T geometry, goal, action limits, IK).
        config: the expert's gains and noise (``sim.expert.ExpertConfig``).

    Raises:
        ValueError: from ``command``, when the readings carry no ``truth.block_pose`` (hardware: use a leader arm).
    """

    def __init__(self, env: Any, config: Any = None) -> None:
        from sim.expert import PushTExpert

        self.env = env
        self.expert = PushTExpert.for_env(env, config=config)
        self._target: np.ndarray | None = None  # last commanded pusher xy (m)
        self._joints: np.ndarray | None = None  # last commanded joint targets (rad)

    def reset(self, seed: int) -> None:
        """Forgets the previous targets and the expert's contact; reseeds its noise."""
        self.expert.reset(seed)
        self._target = self._joints = None

    def command(self, joint_state: Mapping[str, np.ndarray], readings: Mapping[str, SensorReading]) -> TeleopCommand:
        """The expert's pusher target for the real scene, and the joints that put the pusher there."""
        from sim.pusht_env import PUSHER_DOWN

        truth = readings.get(TRUTH_BLOCK_POSE)
        if truth is None:
            raise ValueError(f"ExpertTeleoperator sees the block through {TRUTH_BLOCK_POSE!r}, which this robot's "
                             f"readings do not have (only an emulated reality provides it; on hardware use a leader arm)")
        env, cfg = self.env, self.env.config
        measured = np.asarray(joint_state[JOINT_POS], dtype=float)
        pusher = env.ik.site_pose(measured)[0][:2]
        x, y, theta = np.asarray(truth.data, dtype=float)
        obs = {"observation.state": pusher, "observation.environment_state": np.array([x, y, np.cos(theta), np.sin(theta)])}
        start = pusher if self._target is None else self._target
        target = np.clip(np.asarray(self.expert.act(obs), dtype=float), cfg.workspace_low, cfg.workspace_high)
        step = np.linalg.norm(target - start)
        if step > cfg.max_pusher_step:
            target = start + (target - start) * (cfg.max_pusher_step / step)
        q = measured if self._joints is None else self._joints
        for k in range(1, cfg.ik_substeps + 1):
            waypoint = start + (target - start) * (k / cfg.ik_substeps)
            q = env.ik.solve(q, np.array([waypoint[0], waypoint[1], cfg.pusher_height]), PUSHER_DOWN)
        self._target, self._joints = target, q
        return TeleopCommand(target.astype(np.float32), q.copy())


@dataclasses.dataclass
class CollectedEpisode:
    """One episode recorded from the twin."""

    seed: int
    frames: list[dict[str, np.ndarray]]  # per frame: the twin's observation keys and ``action`` (pusher xy, float32)
    measured_joints: np.ndarray  # (N, n_joints) rad: the robot's measured joints the twin's arm was put at, per frame
    sync_errors: np.ndarray  # (M, 2): twin block vs truth, distance (m) and absolute angle (rad); empty without truth
    metrics: dict[str, float]  # see Collector.run

    @property
    def success(self) -> bool:
        """Whether the twin judged the episode a success."""
        return bool(self.metrics["success_twin"])

    def write(self, writer: Any, task: str) -> int:
        """Adds the frames to a ``LeRobotDatasetWriter`` and saves them as one episode; returns its index."""
        for frame in self.frames:
            writer.add_frame(frame, task=task)
        return writer.save_episode()


class Collector:
    """Records one episode through a twin in collect mode (module docstring); one :meth:`run` per Collector and twin.

    Args:
        twin: a ``sim.twin.DigitalTwin`` in ``collect`` mode (its env: ``pusher_xy`` actions, ``control_hz == fps``).
        robot: the robot (a ``RemoteRobot`` for the emulated reality or hardware); connected here if it is not.
        teleop: the operator (:class:`Teleoperator`).
        config: the episode.
        monitor: optional :class:`real.modes.monitoring.LiveMonitor` answering on the robot's colour frame at every
            recorded frame (logged under ``monitor/``); with ``end_on_success`` its success call ends the episode.
            The metrics then carry ``monitor_success``, ``monitor_progress``, ``monitor_frames``, ``monitor_ended``.
        monitor_path: where the monitor's per-frame record is written (JSON lines); None: not written.

    Raises:
        ValueError: from ``run()``, if the twin is not in collect mode, its control rate is not ``fps``, or the robot
            starts far from the twin's initial joints (the message says how far).
        ConnectionError: from ``run()``, if the robot connection is lost (the robot is left holding).
        RuntimeError: from a second ``run()``.
    """

    def __init__(self, twin: Any, robot: Robot, teleop: Teleoperator, config: CollectConfig | None = None,
                 monitor: Any = None, monitor_path: str | os.PathLike | None = None) -> None:
        self.twin, self.robot, self.teleop = twin, robot, teleop
        self.monitor, self.monitor_path = monitor, monitor_path
        self.config = cfg = config if config is not None else CollectConfig()
        # the clock, the streamer, the block's sync vs truth (when the robot has truth) and the paced physics
        self.session = TwinSession(twin, robot, cfg.stream_hz, cfg.time_scale, cfg.history_s)
        self.sync, self.clock, self.streamer = self.session.sync, self.session.clock, self.session.streamer
        self._frame_wall_s = 1.0 / (cfg.fps * cfg.time_scale)  # wall seconds per frame
        self._state: dict[str, np.ndarray] = {}
        self._used = False

    @property
    def n_measurements(self) -> int:
        """Sensor readings taken for the twin's correction so far."""
        return self.session.n_measurements

    # ------------------------------------------------------------------------------------------------- run
    def run(self) -> CollectedEpisode:
        """Collects one episode. Metrics: ``steps``, twin ``coverage_twin``/``success_twin``, truth
        ``coverage_real``/``success_real`` (judged at every frame) and ``sync_rms_mm``/``sync_rms_deg`` (NaN without
        truth), ``tracking_rms_rad`` (robot joints vs the streamed targets), ``stream_hz``, ``correction_hz``."""
        env, cfg, session = self.twin.env, self.config, self.session
        self._check_twin()
        if self._used:
            raise RuntimeError("a Collector records one episode: build a new twin and Collector for the next one (the "
                               "twin keeps its correction state)")
        self._used = True
        _, info = env.reset(seed=cfg.seed)
        self.teleop.reset(cfg.seed)
        if self.monitor is not None:
            self.monitor.reset(cfg.seed)
        monitor_ended = False
        frames: list[dict[str, np.ndarray]] = []
        measured: list[np.ndarray] = []
        frame_steps = int(round(1.0 / (cfg.fps * env.model.opt.timestep)))
        with session.episode(info["joint_targets"], cfg.seed, cfg.start_tolerance, "collect.start_tolerance",
                             before_chunk=self._follow_robot_within_frame):
            self._follow_robot()
            session.start_streaming(np.asarray(self._state[JOINT_POS], dtype=float))
            for _ in range(cfg.max_steps):
                obs, _ = self.twin.observation()
                command = self.teleop.command(self._state, session.readings)
                frames.append({**obs, "action": np.asarray(command.pusher_xy, dtype=np.float32)})
                measured.append(np.asarray(self._state[JOINT_POS], dtype=float).copy())
                self._set_command(command.joint_targets)
                env.advance_physics(frame_steps)  # one frame of twin time, paced by the session
                session.judge()
                if self.monitor is not None:
                    self.monitor.observe(session.readings, len(frames))
                    monitor_ended = self.monitor.should_end
                if monitor_ended or (cfg.stop_on_success and env.coverage() >= env.config.success_threshold):
                    break
                self._follow_robot()
        metrics = self._summary(len(frames))
        if self.monitor is not None:
            metrics |= self.monitor.finish(self.monitor_path) | {"monitor_ended": float(monitor_ended)}
        return CollectedEpisode(cfg.seed, frames, np.array(measured).reshape(-1, len(env.arm_qpos_adr)), self.sync.errors,
                                metrics)

    def _check_twin(self) -> None:
        env = self.twin.env
        if self.twin.config.mode != "collect":
            raise ValueError(f"Collector needs twin.mode='collect' (the twin's arm follows the robot), got "
                             f"{self.twin.config.mode!r}")
        if env.config.action_mode != "pusher_xy" or env.config.control_hz != self.config.fps:
            raise ValueError(f"Collector records pusher_xy actions at collect.fps={self.config.fps}; the twin env has "
                             f"action_mode={env.config.action_mode!r}, control_hz={env.config.control_hz}")

    # ------------------------------------------------------------------------------------------ twin ticks
    def _follow_robot_within_frame(self, start: int) -> None:
        """Before every paced tick of a frame but its first (whose joints were taken for the frame): the twin's arm
        takes the robot's measured joints."""
        if start:
            self._follow_robot()

    def _follow_robot(self) -> None:
        """Puts the twin's arm at the robot's latest measured joints, moving on at their measured velocity."""
        state = self.robot.get_joint_state()
        self._state = state
        stamp = float(np.asarray(state[TIMESTAMP]).ravel()[0])
        self.twin.follow_joints(state[JOINT_POS], state[JOINT_VEL], measured_at=self.clock.sim_time_of(stamp))

    def _set_command(self, q: np.ndarray) -> None:
        """Moves the streamed joints from where they are now to ``q``, linearly over one frame. (Where the velocity
        jumps between frames the safety layer's acceleration limit smooths the robot's target; a velocity-continuous
        cubic segment was tried: it overshot where the operator reverses, and clamped as often.)"""
        now = time.monotonic()
        self.streamer.add(now, self.streamer.sample_at(now))
        self.streamer.add(now + self._frame_wall_s, q)

    # -------------------------------------------------------------------------------------------- metrics
    def _summary(self, steps: int) -> dict[str, float]:
        coverage = self.twin.env.coverage()  # a demonstration succeeds if it ends covering the goal (it is kept then)
        return self.session.metrics(steps, coverage, coverage)
