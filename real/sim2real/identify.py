"""Identify reality's block friction and its disturbances from a deployed twin's own logs (``sim.episode_log``).

Method (chosen over re-simulating candidate parameters, which costs minutes of MuJoCo per candidate): the twin's
correction keeps its block on the measured trajectory, and its logs hold both the twin's state and the measurements
it was corrected towards (``measured_pose`` with their capture times ``measured_time``).

* **friction** (block-table, sliding): from reality's free slides *as measured*. For every run of log steps in which
  the twin's block moves with no pusher contact, the measurements captured after the twin's peak speed (the push or
  the pusher's release is over) are projected on the slide's direction; one deceleration ``A`` shared by all slides
  is fitted by least squares to ``d(t) = c_k + v_k t - A t^2 / 2`` (each slide its own offset and initial speed),
  each slide cut where the fit says it stopped, refitted until the cuts settle. ``mu_eff = A / g``. Not from the
  twin's own velocity: between measurements the twin's block slides under the *twin's* friction and is pulled back
  at the next one, so its decelerations come out between the two frictions (measured on a slippery reality, friction
  x0.6: x0.78 from the twin's velocity, x0.62 from the measurements). MuJoCo's effective sliding friction is not
  exactly the geom's coefficient (soft contacts, elliptic cone), so ``mu_eff`` is turned into a scale of the MJCF's
  friction by the twin's own free slide at nominal friction (:func:`twin_sliding_friction`, simulated once).
* **pushes**: from the twin's block acceleration per log step (20 ms), ``a_i = (v_i - v_{i-1}) / dt``: steps without
  contact whose specific force not explained by friction, ``|a + mu_eff g v_hat|``, is above a robust threshold
  (median + ``k`` MAD, and at least ``min_push_accel``) form events; runs closer than ``PUSH_MERGE_S`` merge (the
  correction's ringing splits one push), and an event whose block never reaches ``MIN_PUSH_SPEED`` is the end of a
  slide, not a push. Rate = events / the time the pusher was away from the block (pushes near it are not told from
  contact), with a Poisson 95% interval (its std reported as ``(hi - lo) / 3.92``); size = the mean specific force of
  the events' steps above the threshold (m/s^2), its standard error over events; duration = steps x dt.
* **mass**: with Coulomb friction and a stiff pusher, every force reality applies to the block is proportional to
  its mass (friction, pusher contact) except the pushes, whose size is unknown. Block kinematics therefore identify
  ``push_force / block_mass`` but not each: the mass is reported as the twin's nominal with the prior's spread unless
  a reference push force is known (``reference_push_force``, e.g. a calibrated push), which fixes the mass.
* **pusher-block and table friction**: MuJoCo combines two geoms' friction by their maximum; the block's (0.4)
  dominates both the table's (0.4) and the pusher's (0.3) in every contact, so they are not distinguishable from the
  block's: the identified scale applies to all of them (as the env's ``friction_scale`` does).

Known limits, measured from 10 deployed episodes per reality (README): friction within 1% (x0.60) and 6% (x1.40); the
push rate 20-32% high (pushes that start by the pusher and carry the block away are seen, but that time is not in
the exposure; counting only pushes that start in it gave 22-35% low); push size 31-37% high (the correction's ringing
inflates the twin's accelerations). On the slippery lock-step synthetic reality (``sim.lockstep``, exact
measurements, the test's) friction is within 1%, the push rate within 3%.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats

from sim.episode_log import EpisodeLogError, load_log

MIN_SPEED = 0.02  # m/s; slower blocks are at rest (static friction holds them, the wrench says nothing)
MAX_EPISODES = 10
CONTACT_MARGIN = 3  # log steps around a contact that are not free
NEAR_MARGIN = 0.035  # m; pusher radius (15 mm) + 2 cm of twin-vs-reality offset
MIN_PUSH_STEPS = 2  # log steps; a shorter excursion is correction lag, not a push
PUSH_MERGE_S = 0.1  # s; events closer than this are one push (the correction rings after a push)
MIN_PUSH_SPEED = 0.1  # m/s; an event whose block stays slower is a slide's end (static friction takes over)
PUSHER_PACE = 0.5  # a slide ends where the pusher, near the block, moves along it at this fraction of its speed
MIN_SLIDE_POINTS = 4  # measurements a slide needs to fit its deceleration
MIN_SLIDES = 3  # slides friction is identified from (fewer: the prior)
MIN_SLIDE_LENGTH = 0.003  # m; shorter slides are within the measurements' noise


@dataclass
class Identification:
    """Identified physics with 1-sigma uncertainty (SI units; scales are factors on the MJCF's nominal values)."""

    friction_scale: float
    friction_scale_std: float
    block_friction: float  # effective block-table sliding friction coefficient
    block_friction_std: float
    friction_identified: bool  # False: fewer than 3 measured free slides, the nominal friction with the prior's spread
    block_mass: float  # kg
    block_mass_std: float
    mass_identified: bool  # False: the nominal mass with the prior's spread (no reference push force)
    push_rate_hz: float
    push_rate_hz_std: float
    push_accel: float  # m/s^2, push force / block mass
    push_accel_std: float
    push_force_n: float
    push_force_n_std: float
    push_duration_s: float
    n_pushes: int
    duration_s: float
    n_episodes: int

    def figures(self) -> dict[str, float]:
        """The ``name: value`` figures (``block_friction``, ``block_mass``, ``push_rate_hz``, ``push_force_n``, each
        with ``_std``, and the rest)."""
        return {key: float(value) for key, value in vars(self).items()}


def log_paths(run_dir: str | Path) -> list[Path]:
    """The episode logs of a run: ``<run_dir>/episodes/episode_*.npz`` (or ``<run_dir>/*.npz``).

    Raises:
        EpisodeLogError: none found.
    """
    run_dir = Path(run_dir)
    paths = sorted((run_dir / "episodes").glob("episode_*.npz")) or sorted(run_dir.glob("*.npz"))
    if not paths:
        raise EpisodeLogError(f"{run_dir}: no episode logs (episodes/episode_*.npz); deploy with the twin first")
    return paths


@functools.lru_cache(maxsize=1)
def twin_sliding_friction(speed: float = 0.3) -> float:
    """The twin's effective sliding friction at nominal physics: ``-a . v_hat / g`` of its block launched at ``speed``
    (m/s) with no pusher near, averaged while it slides faster than ``MIN_SPEED``."""
    import mujoco

    from sim.pusht_env import PushTEnv

    env = PushTEnv(render_mode=None)
    env.reset(seed=0, options={"pusher_xy": np.array([0.8, 0.3]), "block_pose": np.array([0.5, 0.0, 0.0])})
    env.data.qvel[env.block_dof.start] = speed
    speeds, dt = [], env.model.opt.timestep
    while env.data.qvel[env.block_dof.start] > MIN_SPEED:
        mujoco.mj_step(env.model, env.data)
        speeds.append(env.data.qvel[env.block_dof.start])
    return float((speeds[0] - speeds[-1]) / (dt * (len(speeds) - 1)) / -env.model.opt.gravity[2])


def _kinematics(arrays: dict[str, np.ndarray], dt: float) -> tuple[np.ndarray, ...]:
    """Per log step (from the second): acceleration (m/s^2), mid-step velocity, its speed, the no-contact mask (the
    twin's pusher touched the block in neither neighbouring step: free slides) and the far mask (no contact within
    ``CONTACT_MARGIN`` steps and the pusher farther than ``NEAR_MARGIN`` from the twin's block: where a push is told
    from the pusher, as reality's pusher may touch reality's block where the twin's does not yet)."""
    v = arrays["twin_velocity"][:, :2]
    accel = np.diff(v, axis=0) / dt
    mid = 0.5 * (v[1:] + v[:-1])
    touch = arrays["contact"]
    near = np.convolve((touch | _pusher_near(arrays)).astype(float), np.ones(2 * CONTACT_MARGIN + 1), mode="same") > 0
    return accel, mid, np.linalg.norm(mid, axis=1), ~(touch[1:] | touch[:-1]), ~(near[1:] | near[:-1])


def _pusher_near(arrays: dict[str, np.ndarray]) -> np.ndarray:
    """Per log step: the pusher tip lies within ``NEAR_MARGIN`` of the twin's block outline."""
    from sim.pusht_env import PushTEnv

    shape = _twin_shape()
    pose, pusher = arrays["twin_pose"], arrays["pusher_xy"]
    return np.array([shape.contains(PushTEnv._to_block_frame(p, b), margin=NEAR_MARGIN) for p, b in zip(pusher, pose)])


@functools.lru_cache(maxsize=1)
def _twin_shape():
    from sim.pusht_env import PushTEnv

    return PushTEnv(render_mode=None).shape


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(start, stop) of every run of True in ``mask``."""
    edges = np.diff(np.concatenate([[0], mask.astype(int), [0]]))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)))


def _poisson_ci(n: int, exposure: float) -> tuple[float, float]:
    """Exact (Garwood) 95% interval of a Poisson rate from ``n`` events in ``exposure`` s."""
    lo = 0.0 if n == 0 else stats.chi2.ppf(0.025, 2 * n) / 2
    hi = stats.chi2.ppf(0.975, 2 * n + 2) / 2
    return lo / exposure, hi / exposure


def identify(paths: list[str | Path], reference_push_force: float | None = None, mad_k: float = 6.0,
             min_push_accel: float = 1.5) -> Identification:
    """Identifies friction, pushes (and the mass, given a reference push force) from <= 10 episode logs.

    Args:
        paths: episode logs (``sim.episode_log`` format).
        reference_push_force: N; a known push size, which makes the mass identifiable (module docstring).
        mad_k: push threshold in robust standard deviations (1.4826 MAD) of the unexplained specific force.
        min_push_accel: m/s^2; no push is weaker than this (below: contact noise and correction lag).

    Raises:
        EpisodeLogError: a bad log (naming the file and field), no log, or more than ``MAX_EPISODES``.

    Warns:
        UserWarning: fewer than ``MIN_SLIDES`` measured free slides: the friction is the prior (``friction_identified``
            False).
    """
    if not paths or len(paths) > MAX_EPISODES:
        raise EpisodeLogError(f"identify needs 1 to {MAX_EPISODES} episode logs, got {len(paths)}")
    logs = [load_log(path) for path in paths]
    meta = logs[0][1]
    g, mass = meta["gravity"], meta["block_mass"]
    kin = [_kinematics(arrays, m["log_dt"]) for arrays, m in logs]
    nominal_mu = twin_sliding_friction()
    slides = [slide for (arrays, _), k in zip(logs, kin) for slide in _slides(arrays, k)]
    friction_identified = len(slides) >= MIN_SLIDES
    if friction_identified:
        mu, mu_std = _sliding_friction(slides, g)
    else:
        mu, mu_std = nominal_mu, 0.25 * nominal_mu  # the prior: nominal +- 25%
        warnings.warn(f"identify: {len(slides)} measured free slides (moving, no contact, >= {MIN_SLIDE_POINTS} "
                      f"measurements) in {len(paths)} logs, fewer than {MIN_SLIDES}: friction is the twin's nominal "
                      "with the prior's spread (friction_identified: 0)", stacklevel=2)
    unexplained = [np.linalg.norm(a + mu * g * m / np.maximum(s, 1e-9)[:, None] * (s > MIN_SPEED)[:, None], axis=1)
                   for a, m, s, _, _ in kin]
    pooled = np.concatenate([u[f] for u, (*_, f) in zip(unexplained, kin)])
    threshold = max(np.median(pooled) + mad_k * 1.4826 * stats.median_abs_deviation(pooled), min_push_accel)
    dt = meta["log_dt"]
    sizes, steps = [], 0
    for u, (_, _, speed, _, far) in zip(unexplained, kin):
        for start, stop in _push_events((u > threshold) & far, speed, dt):
            hot = u[start:stop][u[start:stop] > threshold]
            sizes.append(float(hot.mean()))
            steps += len(hot)
    exposure = max(float(sum(k[-1].sum() for k in kin)) * dt, dt)  # where a push would have been seen
    lo, hi = _poisson_ci(len(sizes), exposure)
    accel = float(np.mean(sizes)) if sizes else 0.0
    accel_std = float(np.std(sizes, ddof=1) / np.sqrt(len(sizes))) if len(sizes) > 1 else accel
    block_mass, mass_std, identified = mass, 0.25 * mass, False  # the prior: nominal +- 25%
    if reference_push_force is not None and accel > 0:
        block_mass = reference_push_force / accel
        mass_std, identified = block_mass * accel_std / accel, True
    return Identification(
        friction_scale=mu / nominal_mu, friction_scale_std=mu_std / nominal_mu,
        block_friction=mu, block_friction_std=mu_std, friction_identified=friction_identified,
        block_mass=block_mass, block_mass_std=mass_std,
        mass_identified=identified, push_rate_hz=len(sizes) / exposure, push_rate_hz_std=(hi - lo) / 3.92,
        push_accel=accel, push_accel_std=accel_std, push_force_n=accel * block_mass,
        push_force_n_std=float(np.hypot(accel_std * block_mass, accel * (0 if identified else mass_std))),
        push_duration_s=steps * dt / max(len(sizes), 1), n_pushes=len(sizes), duration_s=exposure,
        n_episodes=len(logs))


def _push_events(hot: np.ndarray, speed: np.ndarray, dt: float) -> list[tuple[int, int]]:
    """(start, stop) log steps of the pushes among the ``hot`` steps: runs closer than ``PUSH_MERGE_S`` merged, kept
    when at least ``MIN_PUSH_STEPS`` long and the block reached ``MIN_PUSH_SPEED`` (m/s) during them or just after."""
    merged: list[tuple[int, int]] = []
    for start, stop in _runs(hot):
        if merged and (start - merged[-1][1]) * dt <= PUSH_MERGE_S:
            merged[-1] = (merged[-1][0], stop)
        else:
            merged.append((start, stop))
    return [(start, stop) for start, stop in merged
            if stop - start >= MIN_PUSH_STEPS and speed[start:stop + 2].max() >= MIN_PUSH_SPEED]


def _slides(arrays: dict[str, np.ndarray], kin: tuple[np.ndarray, ...]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Reality's free slides as measured: for every run of free, moving log steps of the twin, the distinct
    measurements captured from the step after the twin's peak speed to the run's end or the first step in which the
    pusher keeps pace with the block near it (``PUSHER_PACE``, ``NEAR_MARGIN``), as (time since the first,
    distance along the slide from the first) (s, m); slides with fewer than ``MIN_SLIDE_POINTS`` measurements or
    shorter than ``MIN_SLIDE_LENGTH`` are left out."""
    _, mid, speed, free, _ = kin
    times, xy = arrays["measured_time"][1:], arrays["measured_pose"][1:, :2]
    # the pusher keeping pace with the block: reality's pusher may push where the twin's does not touch yet
    pace = ((arrays["pusher_velocity"][1:] * mid).sum(axis=1) / np.maximum(speed, 1e-9) > PUSHER_PACE * speed) \
        & _pusher_near(arrays)[1:]
    slides = []
    for start, stop in _runs(free & (speed > MIN_SPEED)):
        first = start + int(np.argmax(speed[start:stop])) + 1
        paced = np.flatnonzero(pace[first:stop])
        stop = first + int(paced[0]) if len(paced) else stop
        t, p = times[first:stop], xy[first:stop]
        known = np.isfinite(t) & np.all(np.isfinite(p), axis=1)
        t, index = np.unique(t[known], return_index=True)
        p = p[known][index]
        if len(t) < MIN_SLIDE_POINTS:
            continue
        length = float(np.linalg.norm(p[-1] - p[0]))
        if length >= MIN_SLIDE_LENGTH:
            slides.append((t - t[0], (p - p[0]) @ ((p[-1] - p[0]) / length)))
    return slides


def _deceleration(slides: list[tuple[np.ndarray, np.ndarray]], max_refits: int = 5) -> float:
    """The deceleration (m/s^2) shared by ``slides``: least squares of ``d(t) = c_k + v_k t - A t^2 / 2`` (each slide
    its own offset and initial speed), each slide cut where the fit says it stopped (``t > v_k / A``: at rest, static
    friction holds it), refitted until the cuts settle."""
    used = slides
    for _ in range(max_refits):
        rows = sum(len(t) for t, _ in used)
        design, target, row = np.zeros((rows, 2 * len(used) + 1)), np.zeros(rows), 0
        for j, (t, d) in enumerate(used):
            end = row + len(t)
            design[row:end, 2 * j], design[row:end, 2 * j + 1], design[row:end, -1] = 1.0, t, -0.5 * t ** 2
            target[row:end], row = d, end
        solution = np.linalg.lstsq(design, target, rcond=None)[0]
        decel = float(solution[-1])
        if decel <= 0:
            break
        cut = [(t[t <= v / decel], d[t <= v / decel]) for (t, d), v in zip(used, solution[1:-1:2])]
        cut = [(t, d) for t, d in cut if len(t) >= MIN_SLIDE_POINTS]
        if sum(len(t) for t, _ in cut) == rows or not cut:
            break
        used = cut
    return decel


def _robust_deceleration(slides: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """:func:`_deceleration` over the slides that a constant deceleration describes: each slide's residual RMS under
    the median of the slides' own decelerations (its offset and speed fitted) must be within 3x the median residual
    (+ 0.2 mm); a slide in which the block was pushed again, or turned, is left out rather than bending the fit."""
    own = np.median([_deceleration([slide]) for slide in slides])
    residuals = []
    for t, d in slides:
        linear = d + 0.5 * own * t ** 2
        fit = np.polyval(np.polyfit(t, linear, 1), t)
        residuals.append(float(np.sqrt(np.mean((linear - fit) ** 2))))
    limit = 3.0 * float(np.median(residuals)) + 2e-4
    return _deceleration([slide for slide, r in zip(slides, residuals) if r <= limit])


def _sliding_friction(slides: list[tuple[np.ndarray, np.ndarray]], g: float) -> tuple[float, float]:
    """``mu_eff = A / g`` from the measured free slides (:func:`_robust_deceleration`) and its std over 100 bootstrap
    resamples of the slides."""
    rng = np.random.default_rng(0)
    boot = [_robust_deceleration([slides[i] for i in rng.integers(0, len(slides), len(slides))]) for _ in range(100)]
    return _robust_deceleration(slides) / g, float(np.std(boot)) / g
