"""Per-joint calibration of a servo arm: motor ticks <-> joint radians, and the joint ranges.

For joint ``j`` with zero offset ``offset`` (the tick reading at the joint's zero) and ``direction`` (+1 or -1)::

    q = direction * (ticks - offset) * 2 * pi / ticks_per_rev            (rad)
    ticks = round(offset + direction * q * ticks_per_rev / (2 * pi))      (rad -> nearest tick)
    qd = direction * raw_velocity * velocity_unit                         (rad/s)

so ``ticks -> rad -> ticks`` is exact and ``rad -> ticks -> rad`` is within half a tick (pi / ticks_per_rev).
A calibration is stored as JSON (written atomically) with one object per joint.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

FORMAT_VERSION = 1


@dataclasses.dataclass
class JointCalibration:
    """One joint of a servo arm.

    Attributes:
        name: joint name, e.g. ``"shoulder_pan"``.
        motor_id: servo id on the bus.
        offset: tick reading at the joint's zero position.
        direction: +1 if ticks grow with the joint angle, -1 if they shrink.
        min_rad: lower joint limit (rad); targets below are clamped to it.
        max_rad: upper joint limit (rad).
    """

    name: str
    motor_id: int
    offset: int = 2048
    direction: int = 1
    min_rad: float = -math.pi / 2
    max_rad: float = math.pi / 2

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"JointCalibration.name must be a non-empty string, got {self.name!r}")
        if not 0 <= int(self.motor_id) <= 252:
            raise ValueError(f"JointCalibration {self.name!r}: motor_id must be in 0..252, got {self.motor_id}")
        if self.direction not in (1, -1):
            raise ValueError(f"JointCalibration {self.name!r}: direction must be +1 or -1, got {self.direction}")
        if not (math.isfinite(self.min_rad) and math.isfinite(self.max_rad) and self.min_rad < self.max_rad):
            raise ValueError(f"JointCalibration {self.name!r}: need finite min_rad < max_rad, "
                             f"got [{self.min_rad}, {self.max_rad}]")


class ArmCalibration:
    """The calibration of every joint of an arm, vectorised over joints (order = command order).

    Args:
        joints: one :class:`JointCalibration` (or a dict of its fields) per joint.
        ticks_per_rev: encoder ticks per revolution.
        max_tick: largest valid position (valid ticks are ``0..max_tick``).
        velocity_unit: rad/s per unit of the servos' present velocity.

    Raises:
        ValueError: no joints, duplicate names or ids, or a joint range that maps outside ``0..max_tick``.
    """

    def __init__(self, joints: Sequence[JointCalibration | Mapping[str, Any]], ticks_per_rev: int = 4096,
                 max_tick: int = 4095, velocity_unit: float = 2.0 * math.pi / 4096) -> None:
        self.joints = [j if isinstance(j, JointCalibration) else JointCalibration(**dict(j)) for j in joints]
        names, ids = [j.name for j in self.joints], [int(j.motor_id) for j in self.joints]
        if not names or len(set(names)) != len(names) or len(set(ids)) != len(ids):
            raise ValueError(f"ArmCalibration needs joints with unique names and motor ids, got names {names}, ids {ids}")
        self.ticks_per_rev, self.max_tick, self.velocity_unit = int(ticks_per_rev), int(max_tick), float(velocity_unit)
        self.names, self.motor_ids = names, ids
        self.offset = np.array([j.offset for j in self.joints], dtype=np.float64)
        self.direction = np.array([j.direction for j in self.joints], dtype=np.float64)
        self.lower = np.array([j.min_rad for j in self.joints], dtype=np.float64)
        self.upper = np.array([j.max_rad for j in self.joints], dtype=np.float64)
        for bound in (self.lower, self.upper):
            ticks = self.offset + self.direction * bound * self.ticks_per_rev / (2.0 * math.pi)
            bad = [(n, float(b), float(t)) for n, b, t in zip(names, bound, ticks) if not -0.5 <= t <= max_tick + 0.5]
            if bad:
                name, rad, tick = bad[0]
                raise ValueError(f"ArmCalibration: joint {name!r} limit {rad:.4f} rad maps to tick {tick:.1f}, outside "
                                 f"0..{max_tick}; move its offset or narrow its range")

    def __len__(self) -> int:
        return len(self.joints)

    @property
    def rad_per_tick(self) -> float:
        """Joint angle of one encoder tick (rad)."""
        return 2.0 * math.pi / self.ticks_per_rev

    def ticks_to_rad(self, ticks: np.ndarray | Sequence[int]) -> np.ndarray:
        """Joint positions (rad, float64) from raw position ticks, one per joint.

        Raises:
            ValueError: wrong number of values.
        """
        ticks = self._vector(ticks, "ticks")
        return self.direction * (ticks - self.offset) * self.rad_per_tick

    def rad_to_ticks(self, rad: np.ndarray | Sequence[float]) -> np.ndarray:
        """Goal position ticks (int64, nearest tick) for joint positions in rad.

        Raises:
            ValueError: wrong number of values, a non-finite value, or a position outside the ticks' range
            (the message names the joint).
        """
        rad = self._vector(rad, "rad")
        if not np.all(np.isfinite(rad)):
            raise ValueError(f"rad_to_ticks: non-finite joint position for {self._names_where(~np.isfinite(rad))}")
        ticks = np.rint(self.offset + self.direction * rad / self.rad_per_tick).astype(np.int64)
        out = (ticks < 0) | (ticks > self.max_tick)
        if out.any():
            raise ValueError(f"rad_to_ticks: joint(s) {self._names_where(out)} at {rad[out]} rad map to ticks "
                             f"{ticks[out]}, outside 0..{self.max_tick}")
        return ticks

    def velocity_to_rad_s(self, raw: np.ndarray | Sequence[int]) -> np.ndarray:
        """Joint velocities (rad/s, float64) from the servos' raw present velocities."""
        return self.direction * self._vector(raw, "velocity") * self.velocity_unit

    def with_zero_at(self, ticks: np.ndarray | Sequence[int]) -> ArmCalibration:
        """A copy whose joint zeros are the given tick readings (the arm is held at its zero pose); ranges kept.

        Raises:
            ValueError: wrong number of values, or a range that no longer fits the ticks.
        """
        ticks = self._vector(ticks, "ticks")
        joints = [dataclasses.replace(j, offset=int(round(t))) for j, t in zip(self.joints, ticks)]
        return ArmCalibration(joints, self.ticks_per_rev, self.max_tick, self.velocity_unit)

    def _vector(self, values: np.ndarray | Sequence[float], what: str) -> np.ndarray:
        arr = np.asarray(values, dtype=np.float64).reshape(-1)
        if arr.shape != (len(self),):
            raise ValueError(f"expected {len(self)} {what} values (joints {self.names}), got {arr.shape[0]}")
        return arr

    def _names_where(self, mask: np.ndarray) -> list[str]:
        return [n for n, m in zip(self.names, mask) if m]

    # ------------------------------------------------------------------ files

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description (inverse of :meth:`from_dict`)."""
        return {"format_version": FORMAT_VERSION, "ticks_per_rev": self.ticks_per_rev, "max_tick": self.max_tick,
                "velocity_unit": self.velocity_unit, "joints": [dataclasses.asdict(j) for j in self.joints]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "calibration") -> ArmCalibration:
        """Build from :meth:`to_dict`'s output.

        Raises:
            ValueError: a missing or malformed field (the message names ``source`` and the field).
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"{source}: expected a JSON object, got {type(data).__name__}")
        if data.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{source}: field 'format_version' must be {FORMAT_VERSION}, got "
                             f"{data.get('format_version')!r}")
        joints = data.get("joints")
        if not isinstance(joints, list) or not joints:
            raise ValueError(f"{source}: field 'joints' must be a non-empty list")
        fields = {f.name for f in dataclasses.fields(JointCalibration)}
        parsed = []
        for k, joint in enumerate(joints):
            if not isinstance(joint, Mapping) or set(joint) != fields:
                got = sorted(joint) if isinstance(joint, Mapping) else type(joint).__name__
                raise ValueError(f"{source}: joints[{k}] must have exactly the fields {sorted(fields)}, got {got}")
            try:
                parsed.append(JointCalibration(**joint))
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{source}: joints[{k}]: {exc}") from exc
        try:
            return cls(parsed, int(data["ticks_per_rev"]), int(data["max_tick"]), float(data["velocity_unit"]))
        except KeyError as exc:
            raise ValueError(f"{source}: missing field {exc.args[0]!r}") from exc
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{source}: {exc}") from exc

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the calibration as JSON, atomically (temp file in the same folder, fsync, rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(self.to_dict(), f, indent=2)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ArmCalibration:
        """Read a calibration written by :meth:`save`.

        Raises:
            FileNotFoundError: no such file. ValueError: not JSON, or a missing/malformed field (names the file).
        """
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"calibration file {path}: not valid JSON: {exc}") from exc
        return cls.from_dict(data, source=f"calibration file {path}")
