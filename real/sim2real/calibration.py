"""The calibrated column of ``scripts/eval_sim2real.py``: the twin evaluated offline with reality's identified physics.

The twin's uncalibrated offline evaluation is optimistic (issue 20: twin 0.83 vs real 0.63 over 8 checkpoints): it
evaluates a world without reality's friction, mass and pushes. The deployments already measure them: every deployed
episode's log (``<output_dir>/episodes/<checkpoint>/episode_<i>.npz``) holds the twin's corrections. From at most
``max_episodes`` of them (by default the first checkpoint's deployment, or ``run_dir``'s logs) the physics are
identified once (:func:`real.sim2real.identify.identify`), and every checkpoint's env gets its domain randomisation
drawn around them (:func:`real.sim2real.identified_env.identified_env`) for a second offline column on the same seeds.

This module holds the configuration, the identification record kept in ``sim2real.json`` (so a resumed run does not
identify again) and the figures that compare the columns: mean absolute error and the offline speed-up.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from real.sim2real.identify import MAX_EPISODES, Identification, identify, log_paths
from sim.episode_log import load_log

IDENTIFIED_ENV = "identified_env.yaml"  # <output_dir>/identified_env.yaml: the env the calibrated column runs in


@dataclasses.dataclass
class CalibrationConfig:
    """``calibration.*`` of ``scripts/eval_sim2real.py``: where reality's physics are identified from."""

    enabled: bool = True  # false: no calibrated column (and no identification)
    max_episodes: int = MAX_EPISODES  # the first this many episode logs (1 to 10)
    # a scripts/deploy.py run (its episodes/episode_<i>.npz) or a folder of logs; "": the first checkpoint's
    # deployed episodes of this run (<output_dir>/episodes/<checkpoint>/)
    run_dir: str = ""
    reference_push_force: float | None = None  # N; a known push size, which makes the block mass identifiable

    def __post_init__(self) -> None:
        if not 1 <= self.max_episodes <= MAX_EPISODES:
            raise ValueError(f"calibration.max_episodes must be in [1, {MAX_EPISODES}], got {self.max_episodes}")
        if self.reference_push_force is not None and self.reference_push_force <= 0:
            raise ValueError(f"calibration.reference_push_force must be > 0 N, got {self.reference_push_force}")


def identify_logs(source: str | Path, config: CalibrationConfig) -> dict[str, Any]:
    """Identifies reality's physics from the first ``config.max_episodes`` logs of ``source``; returns the record
    kept in ``sim2real.json``: ``source``, ``logs`` (paths), ``nominal_mass`` (kg, the twin's block mass the logs
    were recorded with) and ``identification`` (:meth:`Identification.figures`).

    Raises:
        EpisodeLogError: ``source`` has no logs, a log is bad, or the logs show no free slide to measure friction
            from (e.g. a policy that never moved the block: set ``calibration.run_dir`` to a better deployment).
    """
    paths = log_paths(source)[: config.max_episodes]
    ident = identify(paths, reference_push_force=config.reference_push_force)
    return {"source": str(source), "logs": [str(p) for p in paths],
            "nominal_mass": float(load_log(paths[0])[1]["block_mass"]), "identification": ident.figures()}


def identification_of(record: dict[str, Any]) -> Identification:
    """The :class:`Identification` of a record written by :func:`identify_logs` (its figures are plain floats)."""
    figures = dict(record["identification"])
    figures["mass_identified"] = bool(figures["mass_identified"])
    figures["friction_identified"] = bool(figures.get("friction_identified", True))  # records before it was kept
    figures["n_pushes"], figures["n_episodes"] = int(figures["n_pushes"]), int(figures["n_episodes"])
    return Identification(**figures)


def mean_absolute_error(predicted: Sequence[float], actual: Sequence[float]) -> float:
    """Mean of ``|predicted - actual|`` over the pairs where both are finite; NaN when there is none.

    Raises:
        ValueError: the series differ in length.
    """
    a, b = np.asarray(predicted, dtype=float), np.asarray(actual, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"mean_absolute_error needs series of equal length, got {a.shape} and {b.shape}")
    both = np.isfinite(a) & np.isfinite(b)
    return float(np.abs(a[both] - b[both]).mean()) if both.any() else float("nan")


def offline_speedup(deployed_s: Sequence[float], offline_s: Sequence[float]) -> float:
    """Seconds per deployed episode over seconds per offline episode, each the mean of its finite values (per
    checkpoint); NaN when either has none or the offline time is not positive."""
    deployed = [s for s in deployed_s if np.isfinite(s)]
    offline = [s for s in offline_s if np.isfinite(s)]
    if not deployed or not offline or np.mean(offline) <= 0:
        return float("nan")
    return float(np.mean(deployed) / np.mean(offline))
