"""scripts/identify.py then scripts/eval.py env=identified_<name> as a user runs them: logs of a (lock-step) deployment
in, an env config out that eval.py evaluates a checkpoint in, with the identified physics and the checkpoint's
features; a run without logs is refused naming it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import sim
from scripts import _entry
from sim.lockstep import SyntheticReality, lockstep_episode
from tests.conftest import REPO_ROOT

FIGURES = ("block_friction", "block_friction_std", "block_mass", "block_mass_std", "push_rate_hz", "push_rate_hz_std",
           "push_force_n", "push_force_n_std")


def _run(script: str, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "disabled", "HYDRA_FULL_ERROR": "0"}
    return subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / script), *overrides], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


def _figures(stdout: str) -> dict[str, float]:
    return {k: float(v) for k, _, v in (line.partition(": ") for line in stdout.splitlines())
            if k in FIGURES or k == "friction_scale"}


@pytest.mark.slow
def test_identify_writes_an_env_that_eval_runs_a_checkpoint_in(tmp_path, tiny_checkpoint):
    truth = SyntheticReality(friction_scale=0.6, block_mass_scale=1.2, push_force=1.5, push_interval=(1.0, 2.0))
    run_dir = tmp_path / "deploy"
    for seed in range(3):  # deploy.py's layout without its env.yaml: the deployed env is then the policy's
        lockstep_episode(truth, seed, 100, run_dir / "episodes" / f"episode_{seed}.npz")
    (run_dir / ".hydra").mkdir()
    OmegaConf.save({"policy_path": str(tiny_checkpoint)}, run_dir / ".hydra" / "config.yaml")
    out = tmp_path / "conf" / "env" / "identified_t.yaml"
    proc = _run("identify.py", f"run_dir={run_dir}", f"out={out}", f"hydra.run.dir={tmp_path / 'identify'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures = _figures(proc.stdout)
    assert set(FIGURES) <= set(figures), proc.stdout
    assert figures["friction_scale"] == pytest.approx(truth.friction_scale, rel=0.2)
    assert (tmp_path / "identify" / "identification.json").is_file()

    searchpath = f"hydra.searchpath=[file://{tmp_path / 'conf'}]"
    proc = _run("eval.py", f"policy_path={tiny_checkpoint}", "env=identified_t", searchpath, "n_episodes=1",
                "n_envs=1", "n_videos=0", f"hydra.run.dir={tmp_path / 'eval'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "success_rate:" in proc.stdout and (tmp_path / "eval" / "eval_info.json").is_file()

    # the env eval.py builds: the checkpoint's, with the identified randomisation
    _entry.register_configs()
    with initialize_config_dir(str(_entry.CONF_DIR), version_base="1.3"):
        cfg = compose("eval", overrides=[f"policy_path={tiny_checkpoint}", "env=identified_t", searchpath,
                                         "output_dir=x"])
    _, env_cfg = _entry.load_checkpoint(str(tiny_checkpoint), "cpu", physics_of=OmegaConf.to_object(cfg).env)
    dr = env_cfg.kwargs.randomization
    assert dr.friction_scale_mean == pytest.approx(figures["friction_scale"], rel=1e-3)
    assert dr.push_force == pytest.approx(figures["push_force_n"], rel=1e-3)
    env = sim.make_env(env_cfg, render_mode=None).unwrapped
    env.reset(seed=0)
    assert env.physics_params["friction_scale"] == pytest.approx(truth.friction_scale, rel=0.3)


def test_identify_refuses_a_run_without_logs_naming_it(tmp_path):
    proc = _run("identify.py", f"run_dir={tmp_path}", "name=never", f"hydra.run.dir={tmp_path / 'identify'}")
    assert proc.returncode != 0
    assert f"{tmp_path}: no episode logs" in proc.stderr, proc.stderr[-3000:]
    assert not (_entry.CONF_DIR / "env" / "identified_never.yaml").exists()


def test_an_env_override_that_changes_features_is_refused_naming_the_key():
    trained = sim.EnvConfig()
    with pytest.raises(ValueError, match=r"env.kwargs.cameras: the override has \['overhead'\]"):
        sim.with_physics_of(trained, {"kwargs": {"cameras": ["overhead"], "environment_state": True}})
    with pytest.raises(ValueError, match="env.id"):
        sim.with_physics_of(trained, {"id": sim.TARGETS_ENV_ID})
    calm = sim.with_physics_of(trained, {"kwargs": {"max_episode_steps": 5, "randomization": {"push_force": 2.0}}})
    assert calm.kwargs.randomization.push_force == 2.0 and calm.kwargs.max_episode_steps == 300  # physics only
