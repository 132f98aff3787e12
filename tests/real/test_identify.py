"""Identification from the twin's corrections: recovers a lock-step reality's known physics; refuses bad logs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from real.sim2real.identify import _push_events, _robust_deceleration, identify
from sim.episode_log import EpisodeLogError, load_log, save_log
from sim.lockstep import SyntheticReality, lockstep_episode

SLIPPERY = SyntheticReality(friction_scale=0.6, block_mass_scale=1.2, push_force=1.5, push_interval=(1.0, 2.0))


def _logs(tmp_path_factory, truth: SyntheticReality, name: str) -> list:
    folder = tmp_path_factory.mktemp(name)
    return [lockstep_episode(truth, seed, 100, folder / f"episode_{seed}.npz") and folder / f"episode_{seed}.npz"
            for seed in range(4)]


@pytest.fixture(scope="module")
def slippery_logs(tmp_path_factory):
    return _logs(tmp_path_factory, SLIPPERY, "slippery")


def test_recovers_friction_mass_and_pushes(slippery_logs):
    result = identify(slippery_logs, reference_push_force=SLIPPERY.push_force)
    assert result.friction_scale == pytest.approx(SLIPPERY.friction_scale, rel=0.2)
    assert result.block_mass == pytest.approx(0.2 * SLIPPERY.block_mass_scale, rel=0.2)
    assert result.push_accel == pytest.approx(SLIPPERY.push_force / (0.2 * SLIPPERY.block_mass_scale), rel=0.3)
    assert result.push_rate_hz == pytest.approx(1 / np.mean(SLIPPERY.push_interval), rel=0.3)
    assert result.mass_identified and result.friction_identified and result.n_episodes == 4


def test_without_reference_force_mass_is_the_prior(slippery_logs):
    result = identify(slippery_logs)
    assert not result.mass_identified
    assert result.block_mass == pytest.approx(0.2) and result.block_mass_std == pytest.approx(0.05)


def test_reality_without_pushes_gives_no_push_rate(tmp_path_factory):
    # The lock-step expert keeps its pusher on the block, so these logs hold no free slide: friction is the prior,
    # said so, and the pushes are still counted (none).
    truth = SyntheticReality(friction_scale=0.7, block_mass_scale=1.3, push_force=0.0)
    with pytest.warns(UserWarning, match="free slides.*friction is the twin's nominal"):
        result = identify(_logs(tmp_path_factory, truth, "calm"))
    assert result.push_rate_hz < 0.05
    assert not result.friction_identified and result.friction_scale == pytest.approx(1.0)


def _rewrite(src, dst, change) -> None:
    arrays, meta = load_log(src)
    change(arrays, meta)
    save_log(dst, arrays, meta)


def test_bad_logs_are_refused_naming_file_and_field(slippery_logs, tmp_path):
    missing = tmp_path / "missing.npz"
    _rewrite(slippery_logs[0], missing, lambda a, m: a.pop("wrench"))
    with pytest.raises(EpisodeLogError, match=r"missing\.npz.*'wrench' is missing"):
        identify([missing])
    units = tmp_path / "units.npz"
    _rewrite(slippery_logs[0], units, lambda a, m: m["units"].update(wrench="kN"))
    with pytest.raises(EpisodeLogError, match=r"units\.npz.*'wrench' has units 'kN'"):
        identify([units])
    empty = tmp_path / "empty.npz"
    _rewrite(slippery_logs[0], empty, lambda a, m: a.update({k: v[:0] for k, v in a.items()}))
    with pytest.raises(EpisodeLogError, match=r"empty\.npz.*'time' is empty"):
        identify([empty])
    old = tmp_path / "old.npz"  # a log of format 1, before the measurements' capture times were kept
    _rewrite(slippery_logs[0], old, lambda a, m: a.pop("measured_time"))
    with pytest.raises(EpisodeLogError, match=r"old\.npz.*'measured_time' is missing \(format"):
        identify([old])
    with pytest.raises(EpisodeLogError, match="1 to 10 episode logs"):
        identify([])
    assert json.loads(json.dumps(load_log(slippery_logs[0])[1]))["units"]["wrench"] == "N,N,N*m"


def test_slide_deceleration_is_fitted_through_noise_stops_and_a_pushed_slide():
    rng = np.random.default_rng(0)
    slides = []
    for speed in rng.uniform(0.15, 0.4, 12):  # 2.4 m/s^2 slides measured at 45 Hz with 1 mm noise, then at rest
        t = np.arange(0, 0.3, 1 / 45)
        moving = np.minimum(t, speed / 2.4)
        slides.append((t, speed * moving - 1.2 * moving ** 2 + rng.normal(0, 0.001, len(t))))
    t = np.arange(0, 0.3, 1 / 45)
    slides.append((t, 0.3 * t + 3.0 * t ** 2))  # pushed again mid-slide: it speeds up
    assert _robust_deceleration(slides) == pytest.approx(2.4, rel=0.1)


def test_push_events_merge_the_ringing_of_one_push_and_drop_a_slides_end():
    hot = np.zeros(40, bool)
    hot[[5, 6, 7, 10, 11]] = True  # one push, split by the correction's ringing (3 steps = 60 ms apart)
    hot[[30, 31]] = True  # the end of a slide: the block is nearly at rest
    speed = np.where(np.arange(40) < 20, 0.4, 0.03)
    assert _push_events(hot, speed, 0.02) == [(5, 12)]
