"""Watch the twin and reality side by side in Rerun (issue 18, "Seeing it"): ``python scripts/view.py``.

An offline twin run: the scripted expert acts on the twin; a second PushT world stands for reality (other friction
and mass, unmodelled pushes) with its arm at the twin's joint targets, stepped in lock-step to the twin's time at
every measurement, when its cameras' RGB and depth frames are rendered and handed to the twin's correction
(``twin.correction``: depth ``pose`` / ``forces``, RGB-only ``recon`` with ``twin.recon_model``, or ``none``).
Logged per control step, on the ``step`` and ``sim_time`` timelines:

=====================================  ==============================================================
entity                                 what
=====================================  ==============================================================
``world/twin/block``                   the twin's block surface (blue) at its pose; ``world/twin/pusher`` its pusher
``world/reality/block``                reality's block (green) at its true pose; ``world/reality/pusher``
``world/measured/block``               the estimator's latest pose (orange), ``pose`` / ``recon`` corrections
``world/recon/points``                 the reconstruction's opaque points in their colours (``recon``);
                                       ``world/recon/block_points`` those registered to the block
``world/cameras/<camera>``             reality's camera: pinhole, pose, ``rgb`` and ``depth`` images
``sync/position_mm``, ``sync/angle_deg``  the twin's block error against reality's
=====================================  ==============================================================

Saved to ``<out>`` (an ``.rrd`` file, ``rerun <out>`` opens it) unless ``spawn`` starts a live viewer instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import mujoco
import numpy as np
from hydra.core.config_store import ConfigStore

from perception.frames import ColorFrame, DepthFrame, Frame
from sim.block_perception import SURFACE_SPACING, block_surface
from sim.disturbance import PushSchedule
from sim.expert import PushTExpert
from sim.pusht_config import DomainRandomizationConfig, PushTConfig
from sim.pusht_env import PushTEnv
from sim.pusht_geometry import wrap_angle
from sim.twin import DigitalTwin, TwinConfig, following_env

MAX_DEPTH = 2.0  # m; farther (the background) reads 0, as a depth sensor without a return


@dataclass
class ViewConfig:
    """What ``scripts/view.py`` runs and where it logs (units m, N, s).

    Raises:
        ValueError: a field out of range (the message names it).
    """

    out: str = "outputs/view/twin.rrd"  # the .rrd file written (ignored with spawn)
    spawn: bool = False  # a live Rerun viewer instead of the file
    seed: int = 0  # the episode (the twin's and reality's reset)
    n_steps: int = 100  # control steps of the expert
    image_size: list[int] = field(default_factory=lambda: [96, 96])  # (height, width) of reality's camera frames
    friction_scale: float = 0.7  # reality's friction against the twin's nominal
    block_mass_scale: float = 1.3  # reality's block mass against the twin's nominal
    push_force: float = 1.5  # N, reality's unmodelled pushes on the block (0: none)
    twin: TwinConfig = field(default_factory=lambda: TwinConfig(mode="deploy", rate_hz=20.0))

    def __post_init__(self) -> None:
        if self.n_steps < 1 or len(self.image_size) != 2 or min(self.image_size) < 1:
            raise ValueError(f"view.n_steps must be >= 1 and view.image_size a (height, width), got {self.n_steps} "
                             f"and {self.image_size}")
        if self.friction_scale <= 0 or self.block_mass_scale <= 0 or self.push_force < 0:
            raise ValueError("view.friction_scale and view.block_mass_scale must be > 0 and view.push_force >= 0")
        if not self.spawn and not self.out:
            raise ValueError("view.out must name the .rrd file to write (or spawn=true for a live viewer)")


class LockstepReality:
    """The stand-in reality: a PushT world stepped to the twin's time at each measurement, rendering its cameras."""

    def __init__(self, config: ViewConfig, twin: DigitalTwin) -> None:
        randomization = DomainRandomizationConfig(friction_scale=(config.friction_scale,) * 2,
                                                  block_mass_scale=(config.block_mass_scale,) * 2)
        self.env = PushTEnv(PushTConfig(randomization=randomization), render_mode=None)
        self.twin, self.size = twin, tuple(config.image_size)
        self.pushes = (PushSchedule(np.random.default_rng([config.seed, 7]), (2.0, 4.0), config.push_force, 0.1)
                       if config.push_force > 0 else None)
        self.calibration: dict[str, Any] = {}  # the twin's camera models, read once its world has been reset
        self.frames: list[Frame] = []  # the latest measurement's frames

    def measure(self) -> list[Frame]:
        """Steps reality to the twin's time (arm at the twin's joint targets) and renders RGB and depth frames."""
        data, block = self.env.data, self.env.model.body("block").id
        data.ctrl[:] = self.twin.env.data.ctrl
        while data.time < self.twin.env.data.time - 1e-9:
            if self.pushes is not None:
                data.xfrc_applied[block, :2] = self.pushes.force_at(data.time)
            mujoco.mj_step(self.env.model, data)
        if not self.calibration:
            self.calibration = {c: self.twin.camera_calibration(c) for c in self.twin.config.cameras}
        frames: list[Frame] = []
        for camera in self.twin.config.cameras:
            depth = self.env.render_camera(camera, self.size, depth=True)
            depth[depth > MAX_DEPTH] = 0.0
            model = self.calibration[camera]
            frames.append(DepthFrame(camera, depth, *model, timestamp=float(data.time)))
            frames.append(ColorFrame(camera, self.env.render_camera(camera, self.size), *model,
                                     timestamp=float(data.time)))
        self.frames = frames
        return frames


def _block_points(surface: np.ndarray, pose: np.ndarray, height: float) -> np.ndarray:
    c, s = np.cos(pose[2]), np.sin(pose[2])
    return surface @ np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]).T + np.array([pose[0], pose[1], height])


class TwinLogger:
    """Logs one instant of a twin run to a Rerun recording (entities in the module docstring)."""

    def __init__(self, recording: Any, surface: np.ndarray, height: float) -> None:
        self.rec, self.surface, self.height = recording, surface, height
        self._cameras_logged = False

    def log(self, step: int, twin: DigitalTwin, reality: LockstepReality) -> None:
        """Logs the twin, reality, the measurement and the reconstruction at control step ``step``."""
        import rerun as rr

        rec = self.rec
        rec.set_time("step", sequence=step)
        rec.set_time("sim_time", duration=float(twin.env.data.time))
        for name, env, color in (("twin", twin.env, (60, 120, 255)), ("reality", reality.env, (40, 200, 80))):
            rec.log(f"world/{name}/block", rr.Points3D(_block_points(self.surface, env.block_pose, self.height),
                                                         colors=color, radii=0.002))
            rec.log(f"world/{name}/pusher", rr.Points3D([[*env.pusher_xy, 0.02]], colors=color, radii=0.01))
        measured = twin.measured_pose
        if measured is not None:
            rec.log("world/measured/block", rr.Points3D(_block_points(self.surface, measured, self.height),
                                                          colors=(255, 150, 30), radii=0.0015))
        estimator = twin.estimator
        if hasattr(estimator, "last_cloud"):
            rec.log("world/recon/points", rr.Points3D(estimator.last_cloud, colors=estimator.last_colors, radii=0.002))
            rec.log("world/recon/block_points", rr.Points3D(estimator.last_points, colors=(255, 0, 200), radii=0.003))
        self._log_frames(reality.frames)
        error = twin.env.block_pose - reality.env.block_pose
        rec.log("sync/position_mm", rr.Scalars(1e3 * float(np.linalg.norm(error[:2]))))
        rec.log("sync/angle_deg", rr.Scalars(float(np.degrees(abs(wrap_angle(error[2]))))))

    def _log_frames(self, frames: list[Frame]) -> None:
        import rerun as rr

        for frame in frames:
            path = f"world/cameras/{frame.camera}"
            if not self._cameras_logged:
                height, width = (frame.depth if isinstance(frame, DepthFrame) else frame.image).shape[:2]
                pose = np.asarray(frame.world_from_camera)
                self.rec.log(path, rr.Transform3D(translation=pose[:3, 3], mat3x3=pose[:3, :3]), static=True)
                self.rec.log(path, rr.Pinhole(image_from_camera=frame.intrinsics, resolution=[width, height]),
                             static=True)
            if isinstance(frame, DepthFrame):
                self.rec.log(f"{path}/depth", rr.DepthImage(frame.depth, meter=1.0))
            else:
                self.rec.log(f"{path}/rgb", rr.Image(frame.image))
        self._cameras_logged = self._cameras_logged or bool(frames)


def run_view(config: ViewConfig) -> Path | None:
    """Runs the twin against the stand-in reality for ``config.n_steps`` control steps, logging each step; returns
    the ``.rrd`` path written (None with ``spawn``).

    Raises:
        ValueError / FileNotFoundError: a bad twin config (``twin.correction=recon`` without ``twin.recon_model``).
    """
    import rerun as rr

    twin_env = following_env(replace(PushTConfig(), max_episode_steps=config.n_steps + 1))
    twin = DigitalTwin(twin_env, replace(config.twin, depth_size=tuple(config.image_size)))
    reality = LockstepReality(config, twin)
    rec = rr.RecordingStream("realsim_view")
    path = None
    if config.spawn:
        rec.spawn()
    else:
        path = Path(config.out)
        path.parent.mkdir(parents=True, exist_ok=True)
        rec.save(path)
    surface, _ = block_surface(twin_env.model, SURFACE_SPACING)
    logger = TwinLogger(rec, surface, float(twin_env.model.geom("block_bar").size[2]))
    obs, _ = twin_env.reset(seed=config.seed)
    reality.env.reset(seed=config.seed)
    expert = PushTExpert.for_env(twin_env, seed=config.seed)
    twin.attach(reality.measure)
    try:
        for step in range(config.n_steps):
            obs, *_ = twin_env.step(expert.act(obs))
            logger.log(step, twin, reality)
    finally:
        twin.detach()
        rec.flush()
        rec.disconnect()
    return path


def register_configs() -> None:
    """Registers ``view_schema`` (:class:`ViewConfig`) in Hydra's ConfigStore."""
    ConfigStore.instance().store(name="view_schema", node=ViewConfig)
