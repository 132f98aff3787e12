"""Identification from the twin's corrections: recovers a lock-step reality's known physics; refuses bad logs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from real.sim2real.identify import identify
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
    assert result.mass_identified and result.n_episodes == 4


def test_without_reference_force_mass_is_the_prior(slippery_logs):
    result = identify(slippery_logs)
    assert not result.mass_identified
    assert result.block_mass == pytest.approx(0.2) and result.block_mass_std == pytest.approx(0.05)


def test_reality_without_pushes_gives_no_push_rate(tmp_path_factory):
    truth = SyntheticReality(friction_scale=0.7, block_mass_scale=1.3, push_force=0.0)
    result = identify(_logs(tmp_path_factory, truth, "calm"))
    assert result.push_rate_hz < 0.05
    assert result.friction_scale == pytest.approx(0.7, rel=0.2)


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
    with pytest.raises(EpisodeLogError, match="1 to 10 episode logs"):
        identify([])
    assert json.loads(json.dumps(load_log(slippery_logs[0])[1]))["units"]["wrench"] == "N,N,N*m"
