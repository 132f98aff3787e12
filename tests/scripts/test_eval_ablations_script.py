"""scripts/eval.py with ablation flags, as a user runs it, on a tiny PushT checkpoint; the held-out env override."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

import sim
from policies.evaluation import Evaluator
from policies.train_config import EvalRunConfig
from scripts import _entry
from tests.conftest import REPO_ROOT


def _eval(*overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "disabled", "HYDRA_FULL_ERROR": "0"}
    return subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "eval.py"), *overrides], cwd=REPO_ROOT,
                          env=env, capture_output=True, text=True, timeout=600)


def _figures(stdout: str) -> dict[str, str]:
    return dict(line.split(": ", 1) for line in stdout.splitlines() if ": " in line and not line.startswith(" "))


def test_eval_runs_each_ablation_on_the_same_seeds_and_prints_its_figures(tmp_path, tiny_checkpoint):
    out = tmp_path / "eval"
    proc = _eval(f"policy_path={tiny_checkpoint}", "n_episodes=1", "n_envs=1", "n_videos=1",
                 "ablations=[none,blank_images]", f"hydra.run.dir={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures = _figures(proc.stdout)
    for name in ("success_rate", "success_ci_low", "success_ci_high", "mean_coverage", "n_episodes",
                 "success_rate_blank_images", "success_rate_blank_images_ci_low", "success_rate_blank_images_ci_high"):
        assert name in figures, name
    info = json.loads((out / "eval_info.json").read_text())
    blank = info["ablations"]["blank_images"]
    assert float(figures["success_rate_blank_images"]) == blank["success_rate"]
    # PushT state: no images to blank, so the same policy noise on the same seeds gives the same episode
    assert blank["episodes"] == info["episodes"] and info["episodes"][0]["seed"] == 100000
    task = info["episodes"][0]["task"]
    assert task.startswith("Push the T") and list(info["per_instruction"]) == [task]
    assert "per-instruction success (none)" in proc.stdout and "per-instruction success (blank_images)" in proc.stdout
    assert (out / "videos" / "episode_100000.mp4").stat().st_size > 0
    assert (out / "blank_images" / "videos" / "episode_100000.mp4").stat().st_size > 0


def test_ablations_an_env_cannot_run_fail_naming_why(tmp_path, tiny_checkpoint):
    proc = _eval(f"policy_path={tiny_checkpoint}", "n_videos=0", "ablations=[none,heldout_paraphrases]",
                 f"hydra.run.dir={tmp_path / 'a'}")
    assert proc.returncode != 0 and "heldout_paraphrases" in proc.stderr and "instructions" in proc.stderr
    assert not (tmp_path / "a" / "eval_info.json").exists() and "success_rate" not in proc.stdout  # before any run
    envs = _entry.eval_envs(sim.EnvConfig())
    evaluator = Evaluator.from_config(EvalRunConfig(policy_path="p", output_dir="o", n_episodes=2, n_envs=1,
                                                    n_videos=0), envs, progress=False, ablation="shuffled_instructions")
    with pytest.raises(ValueError, match="at least two different targets"):  # PushT has one instruction
        evaluator.run(_StayPolicy())


class _StayPolicy:
    """Never reached: shuffling fails before the first step."""

    def reset(self) -> None:
        """Nothing to clear."""

    def select_action(self, obs: dict) -> torch.Tensor:
        """Hold the pusher where it is."""
        return obs["observation.state"]


def test_heldout_env_merges_its_kwargs_into_the_checkpoints_env():
    env_cfg = sim.EnvConfig()
    assert _entry.ablation_env(env_cfg, "none", {"instructions": "heldout"}) is env_cfg
    shorter = _entry.ablation_env(env_cfg, "heldout_paraphrases", {"max_episode_steps": 7})
    assert shorter.kwargs.max_episode_steps == 7 and list(shorter.kwargs.goal_pose) == list(env_cfg.kwargs.goal_pose)
    assert env_cfg.kwargs.max_episode_steps == 300  # the checkpoint's config is not changed
    assert isinstance(shorter.kwargs, sim.PushTConfig)
    with pytest.raises(ValueError, match=r"heldout_paraphrases.*instructions.*realsim/PushT-v0"):
        _entry.ablation_env(env_cfg, "heldout_paraphrases", {"instructions": "heldout"})


def test_policy_execution_a_checkpoint_lacks_fails_naming_the_key(tmp_path, tiny_checkpoint):
    proc = _eval(f"policy_path={tiny_checkpoint}", "n_videos=0", "policy_execution.execution=ensemble",
                 f"hydra.run.dir={tmp_path / 'x'}")
    assert proc.returncode != 0 and "policy_execution.execution" in proc.stderr and "FlowMatchingConfig" in proc.stderr
    assert "success_rate" not in proc.stdout
