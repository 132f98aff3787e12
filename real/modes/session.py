"""What deploy and collect mode share while a twin and a robot run together: :class:`TwinSession`, which owns the
clock that maps twin time to the wall clock, the thread that streams joint targets to the robot, the sync meter,
the measurement (robot sensors -> frames -> twin) and the twin's physics paced to the wall clock; plus the start
check and the episode's figures. Deploy and collect differ only in where the actions come from."""

from __future__ import annotations

import bisect
import collections
import contextlib
import dataclasses
import functools
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from real.modes.block_sync import BlockSyncMeter
from real.modes.smoother import JointSmoother
from real.robot import JOINT_POS, JOINT_TARGET, SAFETY_CLAMPED, SAFETY_STATUS, Robot
from real.safety import SafetyConfig, Status
from real.sensors import TRUTH_BLOCK_POSE, SensorReading, color_frames, depth_frames
from sim.episode_log import EpisodeRecorder

GIL_SWITCH_S = 0.0005  # s; with Python's default 5 ms a busy twin thread delays every reply the streamer waits for
LATE_FRACTION = 0.8  # x the watchdog timeout: a command this late first asks whether the robot held meanwhile
RESYNC_TOLERANCE = 1e-5  # rad; a reply target farther than this from the command: the safety layer changed it


@dataclasses.dataclass
class TwinClock:
    """Maps twin time (s) to wall-clock time (``time.monotonic()`` s); the twin runs at ``time_scale`` twin seconds
    per wall second from (``wall0``, ``sim0``)."""

    time_scale: float = 1.0
    wall0: float = 0.0
    sim0: float = 0.0

    def start(self, sim_time: float) -> None:
        """Ties twin time ``sim_time`` to now."""
        self.wall0, self.sim0 = time.monotonic(), float(sim_time)

    def sim_time_of(self, stamp: float) -> float:
        """Twin time of a wall-clock stamp."""
        return self.sim0 + (stamp - self.wall0) * self.time_scale

    def wall_time_of(self, sim_time: float) -> float:
        """Wall-clock stamp a twin time belongs to."""
        return self.wall0 + (sim_time - self.sim0) / self.time_scale

    def elapsed(self) -> float:
        """Wall seconds since :meth:`start` (at least 1 ns)."""
        return max(time.monotonic() - self.wall0, 1e-9)


class JointStreamer:
    """Streams a joint trajectory to a robot from its own thread, every ``1 / stream_hz`` s, and keeps its watchdog fed.

    The trajectory is a list of ``(wall time, joint targets)`` samples (:meth:`add`), linearly interpolated
    (:meth:`sample_at`; past the last sample: the last sample). Each command follows the trajectory at the current time
    plus ``lead_s`` through a :class:`real.modes.smoother.JointSmoother`: it is the trajectory itself where that is
    within ``margin`` x the safety layer's velocity, acceleration and step limits, and the closest command that is not
    where the trajectory is not (a kink, a step, a starved stream), so the safety layer only guards. Each command is
    stamped with the current time, the stamp the safety layer's rate limits use.

    The smoother mirrors the safety layer's reference, so it follows it where the layer restarts: a command later than
    ``LATE_FRACTION`` of the watchdog timeout first asks whether the robot held meanwhile (then both restart from rest
    at the hold target: ``n_restarts``); a command the layer changed anyway (a hold that raced with it: stamped before
    the hold, it is clamped to the hold target, at rest) is followed from what the layer let through (``n_resyncs``).
    :meth:`clamp_fraction` reads the layer's own count of clamped commands from the robot's replies.

    Args:
        robot: a connected robot whose ``send_action`` takes ``sent_at`` (``RemoteRobot``, ``SafeRobot``).
        stream_hz: commands per second.
        lead_s: how far ahead of now the trajectory is sampled (the robot's servo lag).
        limits: the safety layer's limits the commands must keep; default: the robot's own (``SafeRobot``'s config,
            or the limits a ``RemoteRobot``'s server announced), else the Panda's (``SafetyConfig()``).
        margin: the fraction of each limit the commands may use, in (0, 1].

    Raises:
        ValueError: ``margin`` outside (0, 1]; from :meth:`start`, limits for another number of joints than the
            robot has.
    """

    def __init__(self, robot: Robot, stream_hz: float, lead_s: float = 0.0, limits: SafetyConfig | None = None,
                 margin: float = 0.8) -> None:
        if not 0 < margin <= 1:
            raise ValueError(f"JointStreamer margin must be in (0, 1], got {margin}")
        self.robot, self.period, self.lead_s = robot, 1.0 / stream_hz, lead_s
        self.limits, self.margin = limits, margin
        self.smoother: JointSmoother | None = None  # built by start() from the limits
        self._samples: collections.deque[tuple[float, np.ndarray]] = collections.deque()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._past_end = False
        self._error: BaseException | None = None
        self._tracking: list[float] = []
        self._smoothing: list[float] = []  # per command: RMS over joints of the command vs the trajectory (rad)
        self.n_sent = 0
        self.n_starved = 0  # commands sent past the trajectory's last sample (the twin was late: the robot held)
        self.n_clamped = 0  # commands the robot's safety layer clamped (from its own counter; see clamp_fraction)
        self.n_restarts = 0  # times the stream restarted from a watchdog hold (it was late)
        self.n_resyncs = 0  # times the safety layer changed a command and the stream went on from what it let through
        self._last_sent = 0.0
        self._clamped0: int | None = None  # the safety layer's counter when streaming started (None: no counter)

    def add(self, stamp: float, q: np.ndarray) -> None:
        """Plans the joint targets ``q`` (rad) for wall time ``stamp``, replacing any later plan; a sample equal to the
        previous one is skipped (the trajectory then ramps to the next change); samples older than 1 s are forgotten."""
        with self._lock:
            samples = self._samples
            while samples and samples[-1][0] >= stamp:
                samples.pop()
            if samples and np.array_equal(samples[-1][1], q):
                return
            samples.append((float(stamp), np.array(q, dtype=np.float64)))
            while len(samples) > 2 and samples[1][0] < stamp - 1.0:
                samples.popleft()

    def sample_at(self, stamp: float) -> np.ndarray:
        """The trajectory at wall time ``stamp`` (rad).

        Raises:
            RuntimeError: no sample was added yet.
        """
        return self.reference_at(stamp)[0]

    def reference_at(self, stamp: float) -> tuple[np.ndarray, np.ndarray]:
        """The trajectory at wall time ``stamp`` and its velocity there (rad, rad/s): linear between samples, at rest
        before the first and past the last.

        Raises:
            RuntimeError: no sample was added yet.
        """
        with self._lock:
            if not self._samples:
                raise RuntimeError("JointStreamer has no trajectory sample yet: add() one before start()")
            times = [t for t, _ in self._samples]
            i = bisect.bisect_right(times, stamp)
            self._past_end = i == len(times)
            if i == 0 or i == len(times):
                q = self._samples[0 if i == 0 else -1][1]
                return q.copy(), np.zeros_like(q)
            (t0, q0), (t1, q1) = self._samples[i - 1], self._samples[i]
        velocity = (q1 - q0) / max(t1 - t0, 1e-9)
        return q0 + velocity * (stamp - t0), velocity

    def start(self) -> None:
        """Starts the smoother at rest where the robot's target is now, and the streaming thread (and shortens the
        interpreter's GIL switch interval until :meth:`stop`).

        Raises:
            ValueError: the limits describe another number of joints than the robot has.
        """
        limits = self.limits if self.limits is not None else safety_limits(self.robot)
        if limits.n_joints != len(self.robot.joint_names):
            raise ValueError(f"JointStreamer limits describe {limits.n_joints} joints but {self.robot!r} has "
                             f"{len(self.robot.joint_names)}: pass limits= for this robot")
        state = self.robot.get_joint_state()
        _, self._clamped0 = robot_feedback(self.robot)  # the count before the first command
        self.smoother = JointSmoother(limits, self.margin)
        self._last_sent = time.monotonic()
        self.smoother.reset(state.get(JOINT_TARGET, state[JOINT_POS]), self._last_sent)
        self._switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(GIL_SWITCH_S)
        self._thread = threading.Thread(target=self._run, name="joint-streamer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stops the thread (the caller then holds the robot)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)
            sys.setswitchinterval(self._switch_interval)
            self._thread = None

    def check(self) -> None:
        """Raises ConnectionError if streaming failed (the robot's server then holds it on its own)."""
        if self._error is not None:
            raise ConnectionError(f"streaming joint targets to {self.robot!r} failed: "
                                  f"{type(self._error).__name__}: {self._error}") from self._error

    def tracking_rms(self) -> float:
        """RMS over the commands of the robot's joints vs the target sent (rad); NaN before any."""
        return float(np.sqrt(np.mean(np.square(self._tracking)))) if self._tracking else float("nan")

    def clamp_fraction(self) -> float:
        """Commands the robot's safety layer clamped / commands sent (its ``safety.clamped`` counter, read from the
        reply to each command); NaN for a robot without a safety layer, 0 before any command."""
        return self.n_clamped / max(self.n_sent, 1) if self._clamped0 is not None else float("nan")

    def smoothing_rms(self) -> float:
        """RMS over the commands of their distance to the trajectory they follow (rad): what the smoother changed
        (0 where the trajectory was within the limits); NaN before any."""
        return float(np.sqrt(np.mean(np.square(self._smoothing)))) if self._smoothing else float("nan")

    @property
    def last_tracking_error(self) -> float:
        """The latest command's RMS joint error (rad); 0 before any."""
        return self._tracking[-1] if self._tracking else 0.0

    def _run(self) -> None:
        next_time = time.monotonic()
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                if now - self._last_sent > LATE_FRACTION * self.smoother.limits.watchdog_timeout:
                    self._restart_if_held()
                    now = time.monotonic()
                target, velocity = self.reference_at(now + self.lead_s)
                q = self.smoother.step(now, target, velocity)
                self._smoothing.append(float(np.sqrt(np.mean(np.square(q - target)))))
                sent = self.robot.send_action({JOINT_POS: q}, sent_at=now)[JOINT_POS]
                self._last_sent = now
                if np.abs(sent - q).max() > RESYNC_TOLERANCE:
                    # The safety layer changed it: a watchdog hold raced with it (stamped before the hold, it was
                    # clamped to the hold target, at rest), or it was refused. Go on from what the robot tracks.
                    self.smoother.reset(sent, now)
                    self.n_resyncs += 1
                self.n_sent += 1
                self.n_starved += self._past_end
                measured, clamped = robot_feedback(self.robot)
                if clamped is not None and self._clamped0 is not None:
                    self.n_clamped = clamped - self._clamped0
                self._tracking.append(float(np.sqrt(np.mean(np.square(measured - q)))))
                next_time += self.period
                delay = next_time - time.monotonic()
                if delay > 0:
                    self._stop.wait(delay)
                else:
                    next_time = time.monotonic()
        except BaseException as exc:
            self._error = exc
            self._stop.set()

    def _restart_if_held(self) -> None:
        """After a late command: if the robot's watchdog made it hold meanwhile (its safety layer then restarts from
        rest at the hold target), the smoother restarts there too, so the next command is measured from the same
        reference as the safety layer's and is not clamped."""
        state = self.robot.get_joint_state()
        remote = getattr(self.robot, "last_state", None)  # a RemoteRobot's state carries the status bits
        status = remote.status if remote is not None else int(np.asarray(state.get(SAFETY_STATUS, [0])).reshape(-1)[0])
        if status & Status.HOLDING:
            self.smoother.reset(state.get(JOINT_TARGET, state[JOINT_POS]), time.monotonic())
            self.n_restarts += 1


def measured_joints(robot: Robot) -> np.ndarray:
    """The robot's latest joint positions (rad): the state its last command returned, when it keeps one."""
    return robot_feedback(robot)[0]


def robot_feedback(robot: Robot) -> tuple[np.ndarray, int | None]:
    """The robot's latest joint positions (rad) and its safety layer's count of clamped commands (``safety.clamped``;
    ``None`` for a robot without a safety layer): from the state its last command returned, when it keeps one
    (``RemoteRobot``: no extra request), else from ``get_joint_state()`` (``SafeRobot``)."""
    state = getattr(robot, "last_state", None)
    if state is not None:
        return np.array(state.positions), int(state.clamped)
    obs = robot.get_joint_state()
    clamped = obs.get(SAFETY_CLAMPED)
    return np.array(obs[JOINT_POS]), None if clamped is None else int(np.asarray(clamped).reshape(-1)[0])


def safety_limits(robot: Robot) -> SafetyConfig:
    """The limits of the safety layer the robot's commands pass: a ``SafeRobot``'s own, those a ``RemoteRobot``'s
    server announced at connect (its WELCOME), else the Panda's defaults (``SafetyConfig()``)."""
    own = getattr(getattr(robot, "config", None), "safety", None)
    if isinstance(own, SafetyConfig):
        return own
    announced = (getattr(robot, "server_info", None) or {}).get("safety")
    if isinstance(announced, dict):
        fields = {f.name for f in dataclasses.fields(SafetyConfig)}
        return SafetyConfig(**{key: value for key, value in announced.items() if key in fields})
    return SafetyConfig()


def check_start(measured: np.ndarray, initial: np.ndarray, tolerance: float, seed: int, key: str) -> None:
    """Refuses to start when the robot is farther than ``tolerance`` (rad, config key ``key``) from the twin's initial
    joints for ``seed``.

    Raises:
        ValueError: naming the gap, the seed and the key.
    """
    gap = float(np.abs(np.asarray(measured) - np.asarray(initial)).max())
    if gap > tolerance:
        raise ValueError(f"the robot starts {gap:.3f} rad from the twin's initial joints (seed {seed}); {key} is "
                         f"{tolerance}: start reality from the same seed (the twin's block starts where the seed puts it)")


def episode_metrics(env: Any, steps: int, coverage_twin: float, peak_coverage_twin: float, sync: BlockSyncMeter,
                    streamer: JointStreamer, n_measurements: int, clock: TwinClock) -> dict[str, float]:
    """An episode's figures: ``steps``; the twin's final ``coverage_twin`` and ``success_twin`` (its coverage reached
    the success threshold, ``peak_coverage_twin``); the truth's final ``coverage_real``, its best ``peak_coverage_real``
    over every reading, its best ``judged_coverage_real`` at the instants the twin judges success
    (``sync.judged_coverage``) and ``success_real`` (that best reached the threshold: PushT's criterion at the twin's
    control steps, as the twin's offline episodes, which end at the first step that covers the goal);
    ``sync_rms_mm``/``sync_rms_deg`` (NaN without truth), ``tracking_rms_rad``, ``stream_hz`` (per wall second),
    ``starved_fraction`` (commands for which the twin had not computed the trajectory yet), ``safety_clamp_fraction``
    (commands the robot's safety layer clamped) and ``correction_hz`` (per second of the world's time)."""
    threshold = env.config.success_threshold
    truth = sync.truth
    real = float(env.coverage(truth.data)) if truth is not None else float("nan")
    judged = sync.judged_coverage()
    judged_real = float(judged.max()) if len(judged) else float("nan")
    sync_mm, sync_deg = sync.rms()
    elapsed = clock.elapsed()
    return {
        "steps": float(steps),
        "coverage_twin": float(coverage_twin),
        "success_twin": float(peak_coverage_twin >= threshold),
        "coverage_real": real,
        "peak_coverage_real": sync.peak_coverage,
        "judged_coverage_real": judged_real,
        "success_real": float(judged_real >= threshold) if np.isfinite(judged_real) else float("nan"),
        "sync_rms_mm": sync_mm,
        "sync_rms_deg": sync_deg,
        "tracking_rms_rad": streamer.tracking_rms(),
        "stream_hz": streamer.n_sent / elapsed,
        "starved_fraction": streamer.n_starved / max(streamer.n_sent, 1),
        "safety_clamp_fraction": streamer.clamp_fraction(),
        "correction_hz": n_measurements / (elapsed * clock.time_scale),
    }


class TwinSession:
    """One episode of a twin and a robot running together on the wall clock (deploy and collect mode).

    The session owns the :class:`TwinClock`, the :class:`JointStreamer`, the :class:`BlockSyncMeter`, the
    measurement (:meth:`measure`: the robot's sensor readings -> depth frames for the twin, truth to the sync meter)
    and the paced advance: inside :meth:`episode` every physics advance of the twin's env runs in chunks of one stream
    period, at most ``lookahead_s`` ahead of the wall clock, and after each chunk the twin's block pose is recorded
    for the sync error, stamped with the wall time it stands for.

    Args:
        twin: a ``sim.twin.DigitalTwin``.
        robot: its robot (``send_action`` takes ``sent_at``); connected by :meth:`episode`.
        stream_hz: joint targets streamed per second.
        time_scale: twin seconds per wall second (the emulated reality's; hardware: 1).
        history_s: seconds of twin block poses kept to compare with truth.
        lead_s: the streamer samples the trajectory this far ahead (the robot's servo lag).
        lookahead_s: wall seconds the twin may run ahead of the wall clock.
    """

    def __init__(self, twin: Any, robot: Robot, stream_hz: float, time_scale: float = 1.0, history_s: float = 2.0,
                 lead_s: float = 0.0, lookahead_s: float = 0.0) -> None:
        self.twin, self.robot, self.lookahead_s = twin, robot, lookahead_s
        self.clock = TwinClock(time_scale)
        self.streamer = JointStreamer(robot, stream_hz, lead_s=lead_s)
        self.sync = BlockSyncMeter(history_s, coverage=twin.env.coverage)
        self.calibration: dict[str, np.ndarray] = {}
        self.readings: dict[str, SensorReading] = {}  # the latest sensor readings
        self.n_measurements = 0
        self.recorder: EpisodeRecorder | None = None  # the episode's log, when :meth:`episode` was given ``log_dt``
        self._chunk = max(1, int(round(time_scale / (stream_hz * twin.env.model.opt.timestep))))

    @property
    def chunk_s(self) -> float:
        """Twin seconds of one paced chunk (one stream period of wall time, rounded to whole physics steps)."""
        return self._chunk * self.twin.env.model.opt.timestep

    def check_log_dt(self, log_dt: float, key: str) -> None:
        """Refuses an episode-log period that is not a whole number of paced chunks (config key ``key``), so every
        log row falls at the end of a chunk and logging never splits the pacing.

        Raises:
            ValueError: naming ``key``, the chunk and the nearest valid periods.
        """
        n = log_dt / self.chunk_s
        if log_dt <= 0 or abs(n - round(n)) > 1e-6 or round(n) < 1:
            below, above = max(1, int(n)) * self.chunk_s, (int(n) + 1) * self.chunk_s
            raise ValueError(f"{key} ({log_dt} s) must be a positive multiple of the pacing chunk ({self._chunk} "
                             f"physics steps = {self.chunk_s:g} s of twin time: time_scale / stream_hz, rounded to "
                             f"physics steps): e.g. {below:g} or {above:g}")

    @contextlib.contextmanager
    def episode(self, initial_joints: np.ndarray, seed: int, tolerance: float, key: str, *, correct: bool = True,
                stand_in: Callable[[Callable[[int], None], int], None] | None = None,
                before_chunk: Callable[[int], None] | None = None,
                after_chunk: Callable[[float], None] | None = None,
                log_dt: float | None = None) -> Iterator[TwinSession]:
        """Connects the robot, checks it starts at ``initial_joints`` (:func:`check_start`), reads the calibration
        and the first readings, hooks the twin's physics and starts the clock; on leaving, whatever ends the episode,
        stops the streamer, unhooks the physics and lets the robot hold and disconnect.

        Args:
            correct: the twin corrects itself from :meth:`measure` (``DigitalTwin.attach``).
            stand_in: a physics wrapper inside the pacing (the raw baseline's kinematic stand-in for physics).
            before_chunk: called with the chunk's first physics step (0 for the first chunk of an advance).
            after_chunk: called with the wall stamp the chunk's end stands for.
            log_dt: s of twin time; the corrected twin's episode is logged every ``log_dt`` into :attr:`recorder`
                (``sim.episode_log.EpisodeRecorder``, inside the pacing, so rows fall at chunk ends); needs
                ``correct`` and a multiple of :attr:`chunk_s` (:meth:`check_log_dt`). None: no log.
        """
        env = self.twin.env
        with self.robot:
            check_start(self.robot.get_joint_state()[JOINT_POS], initial_joints, tolerance, seed, key)
            self.calibration = self.robot.sensor_calibration()
            self.readings = self.robot.read_sensors()
            unwraps = [env.wrap_physics(stand_in)] if stand_in is not None else []
            if correct:
                self.twin.attach(self.measure, sim_time_of=self.clock.sim_time_of)
            self.recorder = None
            if log_dt is not None and correct:
                self.recorder = EpisodeRecorder(self.twin, log_dt)
                self.recorder.attach()
                unwraps.append(self.recorder.detach)
            unwraps.append(env.wrap_physics(functools.partial(self._paced, before_chunk, after_chunk)))
            self.clock.start(env.data.time)
            try:
                yield self
            finally:
                self.streamer.stop()
                for unwrap in reversed(unwraps):
                    unwrap()
                self.twin.detach()

    def start_streaming(self, joints: np.ndarray) -> None:
        """Starts streaming the trajectory from ``joints`` (rad) at the clock's start."""
        self.streamer.add(self.clock.wall0, joints)
        self.streamer.start()

    def measure(self) -> list:
        """The twin's measurement: the robot's latest depth frames and RGB frames, where its cameras send them (truth
        goes to the sync meter, never the twin)."""
        self.readings = self.robot.read_sensors()
        self.n_measurements += 1
        self.sync.compare(self.readings.get(TRUTH_BLOCK_POSE))
        cameras = self.twin.config.cameras
        return (depth_frames(self.readings, self.calibration, cameras)
                + color_frames(self.readings, self.calibration, cameras))

    def wall_stamp(self) -> float:
        """The wall time the twin's current state stands for."""
        return self.clock.wall_time_of(self.twin.env.data.time)

    def judge(self) -> None:
        """Marks the twin's current instant as one at which the real block's success is judged."""
        self.sync.judge_at(self.wall_stamp())

    def _paced(self, before_chunk: Callable[[int], None] | None, after_chunk: Callable[[float], None] | None,
               inner: Callable[[int], None], n_steps: int) -> None:
        """The pacing wrapper: ``n_steps`` of ``inner`` in chunks of one stream period, each recorded for the sync
        error and slept on until the twin is at most ``lookahead_s`` ahead of the wall clock."""
        env = self.twin.env
        for start in range(0, n_steps, self._chunk):
            if before_chunk is not None:
                before_chunk(start)
            inner(min(self._chunk, n_steps - start))
            stamp = self.wall_stamp()
            if after_chunk is not None:
                after_chunk(stamp)
            self.sync.record(stamp, env.block_pose)
            ahead = stamp - time.monotonic() - self.lookahead_s
            if ahead > 0:
                time.sleep(ahead)
            self.streamer.check()

    def metrics(self, steps: int, coverage_twin: float, peak_coverage_twin: float) -> dict[str, float]:
        """The episode's figures (:func:`episode_metrics`)."""
        return episode_metrics(self.twin.env, steps, coverage_twin, peak_coverage_twin, self.sync, self.streamer,
                               self.n_measurements, self.clock)
