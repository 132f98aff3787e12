"""scripts/identify.py's logic: lock-step episode logs -> an env config whose randomisation is drawn around the
identified physics, which composes, loads and builds; runs without logs are refused naming the path."""

from __future__ import annotations

import numpy as np
import pytest
from omegaconf import OmegaConf

import sim
from real.modes.deploy_run import DEPLOYED_ENV, EPISODES_DIR
from real.sim2real.identified_env import IdentifyRunConfig, deployed_env, run_identification
from sim.episode_log import EpisodeLogError
from sim.lockstep import SyntheticReality, lockstep_episode

TRUTH = SyntheticReality(friction_scale=0.6, block_mass_scale=1.2, push_force=1.5, push_interval=(1.0, 2.0))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A deploy-like run dir: 3 lock-step episodes of 100 control steps and the deployed env (pusht_disturbed-like)."""
    run = tmp_path_factory.mktemp("deploy_run")
    for seed in range(3):
        lockstep_episode(TRUTH, seed, 100, run / EPISODES_DIR / f"episode_{seed}.npz")
    trained = sim.env_config_from_dict({"kwargs": {"max_episode_steps": 200, "randomization": {
        "friction_scale": [0.9, 1.1], "joint_damping_scale": [0.8, 1.2], "push_force": 1.0}}})
    OmegaConf.save(OmegaConf.structured(trained), run / EPISODES_DIR / DEPLOYED_ENV)
    return run


def _load(path) -> sim.EnvConfig:
    node = OmegaConf.load(path)
    assert list(node.pop("defaults")) == ["pusht_schema"]
    return sim.env_config_from_dict(OmegaConf.to_container(node))


def test_identified_env_randomises_around_the_identified_physics(run_dir, tmp_path):
    out = tmp_path / "identified_test.yaml"
    ident, path = run_identification(IdentifyRunConfig(run_dir=str(run_dir), out=str(out), output_dir=str(tmp_path)),
                                     conf_dir=tmp_path)
    assert path == out and ident.n_episodes == 3
    assert ident.friction_scale == pytest.approx(TRUTH.friction_scale, rel=0.2)
    env_cfg = _load(out)
    dr = env_cfg.kwargs.randomization
    assert dr.friction_scale_mean == pytest.approx(ident.friction_scale)
    assert dr.friction_scale_std == pytest.approx(ident.friction_scale_std)
    assert dr.block_mass_scale_mean == pytest.approx(1.0) and dr.block_mass_scale_std == pytest.approx(0.25)  # prior
    assert dr.push_force == pytest.approx(ident.push_force_n) and ident.n_pushes > 0
    assert np.mean(dr.push_interval) == pytest.approx(1 / ident.push_rate_hz)
    # the deployed env's other settings are kept
    assert env_cfg.kwargs.max_episode_steps == 200 and tuple(dr.joint_damping_scale) == (0.8, 1.2)
    env = sim.make_env(env_cfg, render_mode=None).unwrapped
    drawn = []
    for seed in range(10):
        env.reset(seed=seed)
        drawn.append(env.physics_params["friction_scale"])
    assert np.mean(drawn) == pytest.approx(TRUTH.friction_scale, rel=0.2)
    assert env.n_pushes == 0 and env._pushes is not None  # pushes scheduled


def test_a_reference_push_force_identifies_the_mass(run_dir, tmp_path):
    run = IdentifyRunConfig(run_dir=str(run_dir), out=str(tmp_path / "ref.yaml"), reference_push_force=1.5,
                            output_dir=str(tmp_path))
    ident, path = run_identification(run, conf_dir=tmp_path)
    dr = _load(path).kwargs.randomization
    assert ident.mass_identified
    assert dr.block_mass_scale_mean == pytest.approx(TRUTH.block_mass_scale, rel=0.2)


def test_default_output_is_the_env_group_of_the_conf_dir(tmp_path):
    assert IdentifyRunConfig(run_dir="r", name="lab", output_dir="o").out_path(tmp_path) == (
        tmp_path / "env" / "identified_lab.yaml")
    with pytest.raises(ValueError, match="name=<name>"):
        IdentifyRunConfig(run_dir="r", output_dir="o")


def test_a_run_without_logs_is_refused_naming_the_path(tmp_path):
    empty = tmp_path / "empty_run"
    empty.mkdir()
    run = IdentifyRunConfig(run_dir=str(empty), out=str(tmp_path / "x.yaml"), output_dir=str(tmp_path))
    with pytest.raises(EpisodeLogError, match=f"{empty}: no episode logs"):
        run_identification(run, conf_dir=tmp_path)
    missing = tmp_path / "no_such_run"
    run = IdentifyRunConfig(run_dir=str(missing), out=str(tmp_path / "x.yaml"), output_dir=str(tmp_path))
    with pytest.raises(EpisodeLogError, match=f"run_dir {missing}: no such folder"):
        run_identification(run, conf_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="no deployed env config"):
        deployed_env(empty)
    assert not (tmp_path / "x.yaml").exists()
