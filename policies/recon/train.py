"""Trains the reconstruction model (:mod:`perception.recon`) on the twin's scenes (:mod:`policies.recon.data`).

One step: ``batch_size`` random scenes, ``k`` input views (``k`` drawn per step in [``min_inputs``, ``max_inputs``],
the same for the whole batch) and ``n_query`` other views as queries; the model writes its fast weights from the
inputs and reads the queries' pixels; :func:`perception.recon.loss.recon_loss` (RGB MSE + depth + opacity terms);
AdamW with warm-up and cosine decay to 10%.

Budget (DESIGN.md 4b; recon_tiny, :func:`perception.recon.model.forward_flops`): a sample of 5 inputs (the mean k)
+ 2 queries at 32x32 is ~65 MFLOP forward, ~0.2 GFLOP with the backward pass; a step of 16 scenes ~3.1 GFLOP
(:func:`step_gflops`). Measured 0.73 s a step at nice 19 while a timed job held both cores (load 4.8); at the ~10
GFLOP/s these small matrices reach on 2 idle cores ~0.3 s, so the preset's 3000 steps ~15 min idle (~37 min shared;
48k scenes seen, ~24 passes over 2000 training scenes).

Run directory::

    <out_dir>/checkpoints/last.pt     weights, optimizer, scheduler, step, RNGs, model config (atomic; resumed from)
    <out_dir>/model/                  the final model (perception.recon.save_recon: model.safetensors, config.json)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from perception.recon.checkpoint import save_recon
from perception.recon.config import ReconConfig
from perception.recon.loss import recon_loss
from perception.recon.model import ReconModel, forward_flops
from policies.common.train_state import TrainState, load_state, new_state, optimizer_step, run_steps, save_state
from policies.recon.data import ReconScenes, sample_batch
from policies.runtime import resolve_device
from policies.tracking import Tracker

CHECKPOINT = Path("checkpoints") / "last.pt"
MODEL_DIR = "model"


@dataclass
class ReconTrainConfig:
    """Optimisation of the reconstruction model.

    Raises:
        ValueError: a field out of range (the message names it).
    """

    steps: int = 3000  # optimizer steps
    batch_size: int = 16  # scenes per step
    min_inputs: int = 2  # input views per scene: k drawn uniformly in [min_inputs, max_inputs] each step
    max_inputs: int = 8
    n_query: int = 2  # query views per scene (the loss is on their pixels)
    lr: float = 1.0e-3  # AdamW peak learning rate (linear warm-up, cosine decay to 10%)
    weight_decay: float = 0.01
    warmup_steps: int = 100
    grad_clip: float = 1.0  # max gradient norm
    depth_weight: float = 0.1  # recon_loss's depth term
    opacity_weight: float = 0.01  # recon_loss's opacity term
    log_every: int = 25  # steps between train/ logs
    checkpoint_every: int = 200  # steps between checkpoints (and one at the end)
    seed: int = 0
    device: str = "cpu"  # cpu | cuda | auto
    threads: int = 0  # torch threads; 0: torch's default

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "min_inputs", "n_query", "log_every", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        if self.max_inputs < self.min_inputs:
            raise ValueError(f"train.max_inputs ({self.max_inputs}) must be >= train.min_inputs ({self.min_inputs})")
        if self.lr <= 0 or self.grad_clip <= 0 or min(self.weight_decay, self.warmup_steps, self.threads) < 0:
            raise ValueError("train.lr and train.grad_clip must be > 0; weight_decay, warmup_steps, threads >= 0")
        if self.depth_weight < 0 or self.opacity_weight < 0:
            raise ValueError("train.depth_weight and train.opacity_weight must be >= 0")
        if self.device not in ("cpu", "cuda", "auto"):
            raise ValueError(f"train.device must be cpu, cuda or auto, got {self.device!r}")


def step_gflops(model_cfg: ReconConfig, t: ReconTrainConfig) -> float:
    """Forward + backward GFLOP of one step at the mean ``k`` (backward ~ 2x forward)."""
    mean_inputs = round((t.min_inputs + t.max_inputs) / 2)
    return 3.0 * t.batch_size * forward_flops(model_cfg, mean_inputs, t.n_query) / 1e9


def build_state(model_cfg: ReconConfig, t: ReconTrainConfig, device: torch.device) -> TrainState:
    """A fresh model (seeded by ``t.seed``), AdamW and its warm-up + cosine (to 10%) schedule."""
    torch.manual_seed(t.seed)
    model = ReconModel(model_cfg).to(device)
    return new_state(model, t.lr, t.weight_decay, t.warmup_steps, t.steps, t.seed)


def save_checkpoint(state: TrainState, path: Path) -> None:
    """Writes the resumable state to ``path`` atomically (:func:`policies.common.train_state.save_state`)."""
    save_state(state, path, dataclasses.asdict(state.model.config))


def restore_state(model_cfg: ReconConfig, t: ReconTrainConfig, path: Path, device: torch.device) -> TrainState:
    """The state saved at ``path``.

    Raises:
        ValueError: the checkpoint holds another model config (names both).
    """
    return load_state(path, dataclasses.asdict(model_cfg), device, lambda _: build_state(model_cfg, t, device))


def train_step(state: TrainState, scenes: ReconScenes, t: ReconTrainConfig) -> dict[str, float]:
    """One AdamW step on a sampled batch; returns ``train/loss``, ``train/n_inputs`` and the ``losses/<term>``."""
    device = next(state.model.parameters()).device
    n_inputs = int(state.rng.integers(t.min_inputs, t.max_inputs + 1))
    batch = sample_batch(scenes, state.rng, t.batch_size, n_inputs, t.n_query, device)
    state.model.train()
    out = state.model(batch.views, batch.queries)
    loss, terms = recon_loss(out, batch.rgb, batch.ray_depth, t.depth_weight, t.opacity_weight)
    optimizer_step(state, loss, t.grad_clip)
    return {"train/loss": float(loss.detach()), "train/n_inputs": float(n_inputs), **terms}


def train_recon(model_cfg: ReconConfig, t: ReconTrainConfig, scenes: ReconScenes, out_dir: str | Path,
                tracker: Tracker | None = None) -> ReconModel:
    """Trains (or resumes from ``<out_dir>/checkpoints/last.pt``) and saves the final model in ``<out_dir>/model``;
    returns it (eval mode).

    Raises:
        ValueError: no training scenes, scenes with too few views, or a checkpoint of another model config.
    """
    if len(scenes) == 0:
        raise ValueError("train_recon needs at least one training scene")
    if scenes.n_views < t.max_inputs + t.n_query:
        raise ValueError(f"train_recon: scenes have {scenes.n_views} views, fewer than train.max_inputs + "
                         f"train.n_query = {t.max_inputs + t.n_query}")
    if t.threads:
        torch.set_num_threads(t.threads)
    out_dir, device = Path(out_dir), resolve_device(t.device)
    ckpt = out_dir / CHECKPOINT
    state = restore_state(model_cfg, t, ckpt, device) if ckpt.is_file() else build_state(model_cfg, t, device)
    run_steps(state, lambda: train_step(state, scenes, t), t.steps, t.log_every, t.checkpoint_every,
              lambda: save_checkpoint(state, ckpt), tracker)
    save_recon(state.model, out_dir / MODEL_DIR)
    return state.model.eval()
