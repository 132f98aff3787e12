"""``torchrun --nproc_per_node=2 scripts/train.py`` (CPU, gloo) against one process with the same global batch.

Both runs draw the same global batch per step (seeded by (seed, step)) and cut it into the same two shards, each
shard drawing its noise from a generator seeded by (seed, step, shard) (policies/distributed.py). Two processes with
``optim.batch_size=16`` and one process with ``batch_size=8, grad_accum_steps=2`` then compute the same two shard
losses and average the same gradients; what differs is only floating-point summation order (DDP's gloo all-reduce
against ``.grad`` accumulation). Measured: relative loss differences <= 1e-7 over 20 steps; the test allows
``rtol=1e-4``, 1000x more, which is still far below what a real divergence gives (a run whose noise or samples differ
changes the loss by ~10% per step, and one extra or missing optimiser step by a few %).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

STEPS = 20
RESUME_AT = 10
TINY = [
    f"optim.steps={STEPS}", "optim.warmup_steps=2", "optim.lr=3e-3", "log_every=1", f"save_every={RESUME_AT}",
    "keep_checkpoints=3", "policy.mlp_hidden_dim=32", "policy.mlp_num_blocks=1", "dataset.n_episodes=2",
    "eval.every=0", "eval.n_episodes=1", "eval.n_videos=0", "eval.n_envs=1", "logger.mode=disabled", "device=cpu",
]
RTOL = 1e-4


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _train(run_dir: Path, *overrides: str, nproc: int = 1) -> subprocess.CompletedProcess:
    launcher = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
                f"--master_port={_free_port()}"] if nproc > 1 else [sys.executable]
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0"}
    proc = subprocess.run([*launcher, str(REPO_ROOT / "scripts" / "train.py"), f"hydra.run.dir={run_dir}", *overrides],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise AssertionError(f"train.py on {nproc} process(es) failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def _losses(run_dir: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    return {row["step"]: row["train/loss"] for row in rows}


def _resumable_copy(run_dir: Path, step: int, dst: Path) -> Path:
    """A run dir holding only checkpoint ``step`` of ``run_dir`` (as if the run had stopped there)."""
    name = f"{step:06d}"
    shutil.copytree(run_dir / "checkpoints" / name, dst / "checkpoints" / name, symlinks=True)
    os.symlink(name, dst / "checkpoints" / "last")
    return dst


def _assert_same_curve(got: dict[int, float], want: dict[int, float], steps: range) -> None:
    assert sorted(got) == list(steps)
    for step in steps:
        assert got[step] == pytest.approx(want[step], rel=RTOL), f"loss at step {step}"


@pytest.mark.slow
def test_two_processes_give_the_one_process_loss_curve_and_resume_across_process_counts(tmp_path):
    demos = f"dataset.root={tmp_path / 'demos'}"
    one = _train(tmp_path / "one", *TINY, demos, "optim.batch_size=8", "optim.grad_accum_steps=2")
    assert "collected 2 demos" in one.stdout
    two = _train(tmp_path / "two", *TINY, demos, "optim.batch_size=16", nproc=2)
    assert "collected" not in two.stdout + two.stderr  # rank 0 found the demos; nobody collected again
    reference, distributed = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    _assert_same_curve(distributed, reference, range(1, STEPS + 1))
    assert len({round(v, 3) for v in reference.values()}) > STEPS // 2, "a curve that moves, not a constant"
    assert json.loads((tmp_path / "two" / "checkpoints" / "000020" / "training_state" / "training_step.json")
                      .read_text()) == {"batch_shards": 2, "world_size": 2, "step": STEPS}
    assert sorted(p.name for p in (tmp_path / "two").iterdir() if p.name.startswith("results")) == ["results.json"]

    # the 2-process checkpoint of step 10 resumes in one process (its own config: batch_size 16) along the same curve
    resumed = _resumable_copy(tmp_path / "two", RESUME_AT, tmp_path / "two_resumed_on_one")
    proc = _train(resumed, "resume=true")
    assert f"at step {RESUME_AT}" in proc.stdout
    _assert_same_curve(_losses(resumed), reference, range(RESUME_AT + 1, STEPS + 1))

    # and the 1-process checkpoint resumes on two processes along the same curve
    resumed = _resumable_copy(tmp_path / "one", RESUME_AT, tmp_path / "one_resumed_on_two")
    _train(resumed, "resume=true", nproc=2)
    _assert_same_curve(_losses(resumed), reference, range(RESUME_AT + 1, STEPS + 1))


def test_a_batch_the_processes_cannot_share_is_refused_naming_both(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}",
         str(REPO_ROOT / "scripts" / "train.py"), f"hydra.run.dir={tmp_path / 'run'}", *TINY,
         f"dataset.root={tmp_path / 'demos'}", "optim.batch_size=15"],
        cwd=REPO_ROOT, env={**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0"},
        capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "optim.batch_size=15 must be divisible by the number of processes (2" in proc.stdout + proc.stderr
    assert not (tmp_path / "demos").exists()  # refused before any demonstration is collected
