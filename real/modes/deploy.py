"""Deploy mode of Real-is-Sim: the policy acts on the twin, the real robot tracks the twin's joint targets.

Timeline of one :meth:`Deployer.run` (wall clock)::

    policy (main thread)   |a0|---- twin physics 0.1 s, paced to the wall clock + lookahead_s ----|a1|---- ...
    twin correction        every 1/twin.rate_hz s of twin time: robot.read_sensors() depth -> ICP -> PD pull
    streamer (own thread)  q(t) q(t) q(t) ...  the twin's joint trajectory at wall time t, every 1/stream_hz s

The twin runs up to ``lookahead_s`` ahead of the wall clock; every twin state is stamped with the wall time it
belongs to. The robot plays the twin's *joint* trajectory (``qpos`` of its arm, not the IK targets behind them,
which jump every IK substep) interpolated at the current time and stamped with it, so the safety layer's velocity
and acceleration limits see the arm's own smooth motion, and the policy's thinking time never starves the stream.
The streamer keeps sending while the policy thinks, so the robot's watchdog (25 ms) never fires in normal
operation. Tracking error (robot joints vs the trajectory), sync error (the twin's block at the truth's capture time
vs the emulated reality's ``truth.block_pose``, when the robot provides it) and success (twin coverage, and the real
block's coverage from truth at the twin's control steps: a success if it reached the threshold at one, as offline)
are returned and logged
to a :class:`policies.tracking.Tracker`.

Baseline (``observation="raw"``): no twin. The env is only a kinematic model: after every stream period its arm
takes the robot's measured joints and, at ``twin.rate_hz``, its block takes the ICP pose of the newest depth frames
(``DigitalTwin.measure_block_pose``); nothing is simulated. The policy acts on that raw state and the IK targets
of its actions go to the robot directly. This is what Real-is-Sim is compared against.

Stopping safely: the robot is used as a context manager, so on a normal end, Ctrl-C, an exception or a lost
connection the streamer is stopped first and then ``hold()`` and ``disconnect()`` are commanded (a lost connection
makes the server hold on its own). Killing this process is covered by the server: its commander vanished, it holds.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mujoco
import numpy as np

from real.modes.session import TwinSession, measured_joints
from real.robot import Robot
from real.sensors import TRUTH_BLOCK_POSE

OBSERVATION_SOURCES = ("twin", "raw")


@dataclasses.dataclass
class DeployConfig:
    """One deployment episode."""

    seed: int = 100000  # twin reset seed (the emulated reality must start from the same one)
    max_steps: int = 300  # policy steps (10 Hz)
    stream_hz: float = 100.0  # joint targets sent to the robot per second (the watchdog needs >= 40)
    stop_on_success: bool = True  # end the episode when the twin reports success (confirmed, see confirm_s)
    # twin s the pusher holds still when the twin reports success, the twin correcting meanwhile; the episode ends
    # only if the settled twin still covers the goal (0: end at once)
    confirm_s: float = 0.5
    start_tolerance: float = 0.05  # rad; the robot must start this close to the twin's initial joints
    history_s: float = 2.0  # s of twin block poses kept to compare with truth at its capture time
    # twin: the policy acts on the corrected twin (Real-is-Sim); raw: the baseline without a twin, the policy acts on
    # reality's raw measurements (measured joints, a per-frame ICP pose of the block) and its IK targets go straight
    # to the robot.
    observation: str = "twin"
    # simulated seconds of the twin per wall second; must equal the emulated reality's time_scale (hardware: 1)
    time_scale: float = 1.0
    # wall s the twin runs ahead of reality: its joint trajectory is computed this long before the robot plays it,
    # so the policy's thinking time and the twin's bursts of computation never starve the stream
    lookahead_s: float = 0.06
    # s; the robot is sent the twin's joints from this far ahead, its servo lag (actuator delay + kv/kp), so the real
    # arm is where the twin's arm is at the same time (twin mode; at most lookahead_s)
    servo_lag_s: float = 0.04
    # write the twin's episode log (sim.episode_log: its state, correction wrenches, measured poses; what
    # scripts/identify.py reads) to the Deployer's log_path; twin observation only (the raw baseline has no twin)
    episode_log: bool = True
    # s of twin time between log rows: a multiple of the pacing chunk (time_scale / stream_hz, in physics steps)
    log_dt: float = 0.02

    def __post_init__(self) -> None:
        if self.observation not in OBSERVATION_SOURCES:
            raise ValueError(f"deploy.observation must be one of {OBSERVATION_SOURCES}, got {self.observation!r}")
        if self.time_scale <= 0 or not 0 <= self.servo_lag_s <= self.lookahead_s:
            raise ValueError(f"deploy: need time_scale > 0 and 0 <= servo_lag_s <= lookahead_s, got {self.time_scale}, "
                             f"{self.servo_lag_s} and {self.lookahead_s}")
        if self.log_dt <= 0:
            raise ValueError(f"deploy.log_dt must be > 0, got {self.log_dt}")
        if self.max_steps < 1 or self.stream_hz < 40 or self.start_tolerance <= 0 or self.confirm_s < 0:
            raise ValueError(f"deploy: need max_steps >= 1, stream_hz >= 40 (the watchdog holds the robot below), "
                             f"start_tolerance > 0 and confirm_s >= 0, got {self.max_steps}, {self.stream_hz}, "
                             f"{self.start_tolerance}, {self.confirm_s}")


class Deployer:
    """Runs a policy in the twin while the robot tracks the twin (module docstring).

    Args:
        twin: a ``sim.twin.DigitalTwin`` in ``deploy`` mode; its env must use ``pusher_xy`` actions.
        robot: the robot (a ``RemoteRobot`` for the emulated reality or hardware, or a ``SafeRobot``: its
            ``send_action`` takes ``sent_at``); connected here if it is not.
        policy: has ``reset()`` and ``select_action(batch) -> (1, 2) tensor`` (see policies.evaluation).
        config: the episode.
        tracker: optional ``policies.tracking.Tracker``; metrics are logged every policy step under ``deploy/``.
        act: optional ``act(obs) -> action`` used instead of ``policy`` (e.g. a scripted expert).
        stop_requested: polled every policy step; when true the episode ends as on Ctrl-C (``KeyboardInterrupt``),
            even if a native callback swallowed the real one.
        log_path: where a finished episode's log is written (``.npz``, ``sim.episode_log``) when
            ``config.episode_log`` and the twin observes (``observation="twin"``); None: no log.
        monitor: optional :class:`real.modes.monitoring.LiveMonitor`: at every control step it answers on the robot's
            latest colour frame (logged under ``monitor/``) and, with ``end_on_success``, its success call ends the
            episode; the run's figures then carry ``monitor_success``, ``monitor_progress``, ``monitor_frames`` and
            ``monitor_ended``.
        monitor_path: where the monitor's per-frame record is written (JSON lines); None: not written.

    Raises:
        ValueError: ``config.log_dt`` is not a multiple of the pacing chunk (naming ``deploy.log_dt``); from
            ``run()``, if the robot starts far from the twin's initial joints (the message says how far), or the
            twin is not in deploy mode.
        ConnectionError: from ``run()``, if the robot connection is lost (the robot is left holding).
    """

    def __init__(self, twin: Any, robot: Robot, policy: Any = None, config: DeployConfig | None = None,
                 tracker: Any = None, act: Callable[[dict[str, np.ndarray]], np.ndarray] | None = None,
                 stop_requested: Callable[[], bool] | None = None, log_path: str | os.PathLike | None = None,
                 monitor: Any = None, monitor_path: str | os.PathLike | None = None) -> None:
        if policy is None and act is None:
            raise ValueError("Deployer needs a policy or an act function")
        self.twin, self.robot, self.policy = twin, robot, policy
        self.config = cfg = config if config is not None else DeployConfig()
        self.tracker, self._act = tracker, act
        self.monitor, self.monitor_path = monitor, monitor_path
        self.monitor_ended = False  # the monitor's success call ended the episode
        # the clock, the streamer, the block's sync vs truth (when the robot has truth) and the paced physics
        self.session = TwinSession(twin, robot, cfg.stream_hz, cfg.time_scale, cfg.history_s,
                                   lead_s=cfg.servo_lag_s if cfg.observation == "twin" else 0.0,
                                   lookahead_s=cfg.lookahead_s)
        self.sync, self.clock, self.streamer = self.session.sync, self.session.clock, self.session.streamer
        logging = log_path is not None and cfg.episode_log and cfg.observation == "twin"
        self.log_path = Path(log_path) if logging else None
        if logging:
            self.session.check_log_dt(cfg.log_dt, "deploy.log_dt")
        self.peak_coverage_twin = 0.0
        self._last_frame_stamp = -np.inf
        self._next_raw_measurement = -np.inf
        self._stop_requested = stop_requested or (lambda: False)

    @property
    def n_measurements(self) -> int:
        """Sensor readings taken so far (corrections in twin mode, raw estimates in raw mode)."""
        return self.session.n_measurements

    @property
    def sync_errors(self) -> np.ndarray:
        """(N, 2) distance (m) and absolute angle (rad) between the deployment's block and the truth, one row per
        truth sample compared so far (at the truth's capture time)."""
        return self.sync.errors

    # ------------------------------------------------------------------------------------------------- run
    def run(self) -> dict[str, float]:
        """Run one episode; returns its figures (``real.modes.session.episode_metrics``)."""
        twin, env, cfg = self.twin, self.twin.env, self.config
        if twin.config.mode != "deploy":
            raise ValueError(f"Deployer needs twin.mode='deploy', got {twin.config.mode!r}")
        obs, info = env.reset(seed=cfg.seed)
        if self.policy is not None:
            self.policy.reset()
        if self.monitor is not None:
            self.monitor.reset(cfg.seed)
        raw = cfg.observation == "raw"
        episode = self.session.episode(info["joint_targets"], cfg.seed, cfg.start_tolerance, "deploy.start_tolerance",
                                       correct=not raw, stand_in=self._observe_raw if raw else None,
                                       before_chunk=self._stream_ik_target if raw else None,
                                       after_chunk=None if raw else self._stream_twin_joints,
                                       log_dt=cfg.log_dt if self.log_path is not None else None)
        with episode:
            self.session.start_streaming(self._joint_targets())
            steps = 0
            self._observe(steps)
            while steps < cfg.max_steps:
                if self._stop_requested():
                    raise KeyboardInterrupt("stop requested")
                obs, _, terminated, truncated, info = env.step(self._action(obs))
                steps += 1
                self._after_step(steps, info)
                self.peak_coverage_twin = max(self.peak_coverage_twin, float(info["coverage"]))
                if self.monitor is not None and self.monitor.should_end:
                    self.monitor_ended = True
                    break
                if terminated and cfg.stop_on_success and not truncated:
                    obs, info, steps, truncated = self._confirm_success(obs, info, steps)
                    if info["is_success"]:
                        break
                if truncated:
                    break
            self._read_last_truth()
        if self.session.recorder is not None:
            self.session.recorder.save(self.log_path)
        return self._summary(steps, info)

    def _after_step(self, steps: int, info: dict[str, Any]) -> None:
        """After a control step: the real block is judged at it, the stream is checked, the step is logged."""
        self.session.judge()
        self.streamer.check()
        self._log(steps, info)
        self._observe(steps)

    def _observe(self, steps: int) -> None:
        """The monitor's answer on the robot's newest colour frame (the session's latest readings), if it runs."""
        if self.monitor is not None:
            self.monitor.observe(self.session.readings, steps)

    def _confirm_success(self, obs: dict[str, np.ndarray], info: dict[str, Any],
                         steps: int) -> tuple[dict[str, np.ndarray], dict[str, Any], int, bool]:
        """The pusher holds still for ``confirm_s`` while the twin keeps correcting; returns the last step's
        observation, info, the step count and whether the episode was truncated meanwhile.

        While the block moves the twin runs slightly ahead of reality (its pusher leads the real one by the tracking
        lag), and at the success threshold a 2-3 mm lead is worth ~5% coverage; once still, the twin's block settles on
        the measured pose. If the settled twin no longer covers the goal, the policy starts afresh (``reset()``).
        """
        cfg, env = self.config, self.twin.env
        hold = np.asarray(obs["observation.state"], dtype=float)
        truncated = False
        for _ in range(int(round(cfg.confirm_s * env.config.control_hz))):
            if steps >= cfg.max_steps or truncated:
                break
            obs, _, _, truncated, info = env.step(hold)
            steps += 1
            self._after_step(steps, info)
        if not info["is_success"] and self.policy is not None:
            self.policy.reset()
        return obs, info, steps, truncated or steps >= cfg.max_steps

    def _read_last_truth(self) -> None:
        """Waits until the wall clock reaches the twin's last control step, then reads the robot's sensors once, so
        the truth there is judged too (the twin ran ``lookahead_s`` ahead of it)."""
        delay = self.session.wall_stamp() - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        self.sync.compare(self.robot.read_sensors().get(TRUTH_BLOCK_POSE))

    def _action(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        if self._act is not None:
            return np.asarray(self._act(obs), dtype=float)
        import torch

        from policies.evaluation import obs_to_torch
        from sim.pusht_env import TASK

        batch = obs_to_torch({key: np.asarray(value)[None] for key, value in obs.items()})
        batch["task"] = [TASK]
        with torch.no_grad():
            return self.policy.select_action(batch)[0].cpu().numpy().astype(float)

    # --------------------------------------------------------------------------------------- twin physics
    def _stream_twin_joints(self, stamp: float) -> None:
        """Twin mode, after each paced chunk: the twin's joints join the trajectory at the wall time they stand for."""
        self.streamer.add(stamp, self._joint_targets())

    def _stream_ik_target(self, start: int) -> None:
        """Raw mode, before each paced chunk: the IK target holds from when it is set."""
        self.streamer.add(self.session.wall_stamp(), self._joint_targets())

    def _joint_targets(self) -> np.ndarray:
        """What the robot tracks: the twin's joints (twin), or the IK targets computed from the raw state (raw)."""
        env = self.twin.env
        return env.data.ctrl.copy() if self.config.observation == "raw" else env.data.qpos[env.ik.qpos_adr].copy()

    def _observe_raw(self, inner: Callable[[int], None], n_steps: int) -> None:
        """Raw mode's stand-in for physics: the env's state becomes the latest measurement, nothing is simulated.

        The arm takes the robot's measured joints; the block takes the ICP pose of the newest depth frames (started
        from the previous estimate, kept when the fit is poor, searched for afresh when lost: the twin's tracking).
        The env's clock advances by ``n_steps`` so the wall clock pacing is the twin mode's; ``inner`` (the physics)
        is never called.
        """
        env = self.twin.env
        model, data = env.model, env.data
        data.time += n_steps * model.opt.timestep
        data.qpos[env.ik.qpos_adr] = measured_joints(self.robot)
        mujoco.mj_kinematics(model, data)
        if data.time < self._next_raw_measurement:
            return
        self._next_raw_measurement = data.time + 1.0 / self.twin.config.rate_hz
        frames = self.session.measure()
        stamp = max((frame.timestamp for frame in frames), default=-np.inf)
        if stamp > self._last_frame_stamp:
            self._last_frame_stamp = stamp
            pose = self.twin.measure_block_pose(frames)
            if pose is not None:
                env.set_block_pose(pose)
                mujoco.mj_kinematics(model, data)

    # -------------------------------------------------------------------------------------------- metrics
    def _log(self, step: int, info: dict[str, Any]) -> None:
        if self.tracker is None:
            return
        metrics = {"deploy/coverage_twin": float(info["coverage"]),
                   "deploy/tracking_error_rad": self.streamer.last_tracking_error}
        errors, truth, env = self.sync.errors, self.sync.truth, self.twin.env
        if len(errors):
            metrics["deploy/sync_error_mm"] = 1e3 * errors[-1, 0]
            metrics["deploy/sync_error_deg"] = float(np.degrees(errors[-1, 1]))
            metrics["deploy/coverage_real"] = float(env.coverage(truth.data))
        self.tracker.log(metrics, step=step)

    def _summary(self, steps: int, info: dict[str, Any]) -> dict[str, float]:
        """The episode's figures (``real.modes.session.episode_metrics``), logged as ``deploy/final_*``."""
        out = self.session.metrics(steps, info["coverage"], self.peak_coverage_twin)
        if self.monitor is not None:
            out |= self.monitor.finish(self.monitor_path) | {"monitor_ended": float(self.monitor_ended)}
        if self.tracker is not None:
            self.tracker.log({f"deploy/final_{k}": v for k, v in out.items()}, step=steps + 1)
        return out
