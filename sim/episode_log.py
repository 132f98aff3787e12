"""Logs of a twin that follows reality, every ``log_dt`` s of twin time: what identifying reality's physics needs.

A control step (0.1 s) is longer than a push (0.1 s) or a free slide (~0.1 s), so the recorder logs at a finer
period (default 20 ms, ~one measurement of the twin) from inside the twin's physics advance (``wrap_physics``).
One episode is one ``.npz`` file written atomically (temp file, then rename) with these arrays, one row per log step
(``n`` rows), and a JSON ``meta`` string (units, the twin's nominal physics, ``log_dt``):

====================  =========  =============================================================================
key                   shape      meaning (SI units, as ``meta["units"]`` says)
====================  =========  =============================================================================
``time``              (n,)       twin time at the end of the log step (s)
``twin_pose``         (n, 3)     the twin's block pose x, y, theta (m, m, rad)
``twin_velocity``     (n, 3)     its planar velocity vx, vy (m/s, world frame, centre of mass) and wz (rad/s)
``wrench``            (n, 3)     mean correction wrench on the block over the step: fx, fy (N), tz (N m)
``measured_pose``     (n, 3)     latest accepted measurement of the real block's pose (NaN before any)
``measured_time``     (n,)       its capture time on the twin's clock (s; NaN before any): identification fits
                                 reality's motion to these (the twin's own velocity slides with the twin's friction
                                 between measurements)
``pusher_xy``         (n, 2)     pusher tip position (m)
``pusher_velocity``   (n, 2)     pusher tip velocity (m/s)
``contact``           (n,)       the pusher touched the block during the step (bool)
====================  =========  =============================================================================
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import mujoco
import numpy as np

FORMAT = "realsim.episode_log/2"  # 2: measured_time
UNITS = {"time": "s", "twin_pose": "m,m,rad", "twin_velocity": "m/s,m/s,rad/s", "wrench": "N,N,N*m",
         "measured_pose": "m,m,rad", "measured_time": "s", "pusher_xy": "m", "pusher_velocity": "m/s", "contact": "bool"}
WIDTHS = {"time": 0, "twin_pose": 3, "twin_velocity": 3, "wrench": 3, "measured_pose": 3, "measured_time": 0, "pusher_xy": 2,
          "pusher_velocity": 2, "contact": 0}


class EpisodeLogError(ValueError):
    """A log that identification cannot use; the message names the file and the field."""


class EpisodeRecorder:
    """Records one episode of a ``sim.twin.DigitalTwin`` every ``log_dt`` s of twin time: :meth:`attach` (after the
    twin's own ``attach``, so the recorder wraps the correction), run the episode, :meth:`detach`, :meth:`save`. The
    wrench logged is the mean the twin applied since the previous row (``twin.tally``)."""

    def __init__(self, twin: Any, log_dt: float = 0.02) -> None:
        steps = int(round(log_dt / twin.env.model.opt.timestep))
        if steps < 1:
            raise ValueError(f"EpisodeRecorder log_dt must be >= the physics timestep, got {log_dt}")
        self.twin, self.log_dt, self._steps = twin, steps * twin.env.model.opt.timestep, steps
        self.rows: dict[str, list] = {key: [] for key in UNITS}
        self._pending = 0
        self._unwrap: Any = None
        twin.tally.take()  # start afresh: what came before the episode is not part of it

    def attach(self) -> None:
        """Starts recording inside the twin env's physics advance (outermost wrapper so far)."""
        self._unwrap = self.twin.env.wrap_physics(self._advance)

    def detach(self) -> None:
        """Stops recording (a no-op when not attached)."""
        if self._unwrap is not None:
            self._unwrap()
            self._unwrap = None

    def _advance(self, inner: Any, n_steps: int) -> None:
        while n_steps > 0:
            k = min(n_steps, self._steps - self._pending)
            inner(k)
            n_steps -= k
            self._pending += k
            if self._pending >= self._steps:
                self._pending = 0
                self.record()

    def record(self) -> None:
        """Appends the twin's state now and the correction applied since the last call."""
        twin, env = self.twin, self.twin.env
        model, data = env.model, env.data
        wrench, contact = twin.tally.take()
        velocity = np.zeros(6)
        block = model.body("block").id
        mujoco.mj_objectVelocity(model, data, mujoco.mjtObj.mjOBJ_BODY, block, velocity, 0)
        tip = np.zeros(6)
        mujoco.mj_objectVelocity(model, data, mujoco.mjtObj.mjOBJ_SITE, model.site("pusher_tip").id, tip, 0)
        measured = twin.measured_pose
        row = {"time": float(data.time), "twin_pose": env.block_pose, "twin_velocity": velocity[[3, 4, 2]],
               "wrench": wrench, "measured_pose": np.full(3, np.nan) if measured is None else measured,
               "measured_time": np.nan if measured is None else twin.measured_time,
               "pusher_xy": env.pusher_xy, "pusher_velocity": tip[3:5], "contact": bool(contact)}
        for key, value in row.items():
            self.rows[key].append(value)

    def meta(self) -> dict[str, Any]:
        """Units and the twin's nominal physics the log was recorded with (what identification compares against)."""
        model = self.twin.env.model
        block = model.body("block").id
        friction = {name: float(model.geom_friction[model.geom(name).id, 0])
                    for name in ("block_bar", "table", "pusher")}
        return {"format": FORMAT, "units": UNITS, "log_dt": self.log_dt,
                "block_mass": float(model.body_mass[block]), "block_inertia_z": float(model.body_inertia[block][2]),
                "gravity": float(-model.opt.gravity[2]), "friction": friction,
                "twin_correction": self.twin.config.correction}

    def save(self, path: str | os.PathLike) -> Path:
        """Writes the episode atomically to ``path`` (``.npz``); returns the path."""
        arrays = {key: np.asarray(values, dtype=bool if key == "contact" else np.float64)
                  for key, values in self.rows.items()}
        return save_log(path, arrays, self.meta())


def save_log(path: str | os.PathLike, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> Path:
    """Writes ``arrays`` and ``meta`` (JSON) to ``path`` atomically (a temp file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.npz")
    np.savez(tmp, meta=np.array(json.dumps(meta)), **arrays)
    os.replace(tmp, path)
    return path


def load_log(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Reads and checks one episode log; returns its arrays and meta.

    Raises:
        EpisodeLogError: the file is missing or unreadable, a field is missing, empty, of the wrong shape or
            non-finite, or its units are not the format's (the message names the file and the field).
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (OSError, ValueError) as err:
        raise EpisodeLogError(f"{path}: not a readable episode log ({err})") from err
    if "meta" not in arrays:
        raise EpisodeLogError(f"{path}: field 'meta' is missing (units and the twin's nominal physics)")
    meta = json.loads(str(arrays.pop("meta")))
    units = meta.get("units", {})
    for key, width in WIDTHS.items():
        if key not in arrays:
            raise EpisodeLogError(f"{path}: field {key!r} is missing (format {meta.get('format')!r}; this "
                                  f"version reads {FORMAT!r})")
        if units.get(key) != UNITS[key]:
            raise EpisodeLogError(f"{path}: field {key!r} has units {units.get(key)!r}, expected {UNITS[key]!r}")
        value = arrays[key]
        if len(value) == 0:
            raise EpisodeLogError(f"{path}: field {key!r} is empty (an episode without control steps)")
        expected = (len(arrays["time"]),) + ((width,) if width else ())
        if value.shape != expected:
            raise EpisodeLogError(f"{path}: field {key!r} has shape {value.shape}, expected {expected}")
        if key not in ("measured_pose", "measured_time", "contact") and not np.all(np.isfinite(value)):
            raise EpisodeLogError(f"{path}: field {key!r} has non-finite values")
    for key in ("block_mass", "gravity", "log_dt", "friction"):
        if key not in meta:
            raise EpisodeLogError(f"{path}: meta field {key!r} is missing")
    return arrays, meta
