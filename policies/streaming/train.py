"""Trains the streaming video model (:mod:`perception.streaming`) on clips of labelled twin videos.

One step: ``batch_size`` clips of ``clips.clip_frames`` frames (:func:`policies.streaming.clips.sample_clip`), one
causal pass (:meth:`StreamingModel.forward`, each frame seeing exactly its streaming context), every head's loss
(:func:`perception.streaming.loss.streaming_loss`), AdamW with warm-up and cosine decay to 10%.

Budget (DESIGN.md 4b; ``conf/streaming/streaming_tiny.yaml``): the tiny model costs ~7.2 MFLOP per frame forward
(:func:`perception.streaming.model.forward_flops_per_frame`), ~22 MFLOP with backward; a step of 12 clips x 48 frames
is 576 frames ~ 13 GFLOP. Measured ~0.5 s a step on this machine's 2 idle cores: the preset's 1600 steps ~14 min,
920k frames, ~57 passes over 150 episodes of ~108 frames.

Run directory::

    <out_dir>/checkpoints/last.pt     weights, optimizer, scheduler, step, RNGs, model config (atomic; resumed from)
    <out_dir>/model/                  the final model (perception.streaming.save_streaming: model.safetensors,
                                      config.json), what scripts/eval_streaming.py and StreamingEstimator load
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from perception.streaming import StreamingConfig, StreamingModel, save_streaming, streaming_loss
from policies.common.train_state import TrainState, load_state, new_state, optimizer_step, run_steps, save_state
from policies.runtime import resolve_device
from policies.streaming.clips import ClipConfig, collate, sample_clip
from policies.streaming.data import StreamEpisode
from policies.tracking import Tracker

CHECKPOINT = Path("checkpoints") / "last.pt"
MODEL_DIR = "model"


@dataclass
class StreamTrainConfig:
    """Optimisation of the streaming model."""

    steps: int = 1600  # optimizer steps
    batch_size: int = 12  # clips per step
    lr: float = 2.0e-3  # AdamW peak learning rate (linear warm-up, cosine decay to 10%)
    weight_decay: float = 0.01
    warmup_steps: int = 50
    grad_clip: float = 1.0  # max gradient norm
    # streaming_loss term -> weight (1 when absent); the pose terms are small numbers (m / pose_scale, squared), the
    # events term a mean over 4 events: at weight 1 they were not learnt (conf/train_streaming.yaml)
    loss_weights: dict[str, float] = field(default_factory=lambda: {"pose_xy": 10.0, "pose_yaw": 3.0, "events": 4.0})
    event_pos_weight: float = 5.0  # weight of an event's positive frames in the events term (they are rare)
    log_every: int = 25  # steps between train/ logs
    checkpoint_every: int = 100  # steps between checkpoints (and one at the end)
    seed: int = 0
    device: str = "cpu"  # cpu | cuda | auto
    threads: int = 0  # torch threads; 0: torch's default

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "log_every", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        if self.event_pos_weight <= 0:
            raise ValueError(f"train.event_pos_weight must be > 0, got {self.event_pos_weight}")
        if self.lr <= 0 or self.grad_clip <= 0 or self.weight_decay < 0 or self.warmup_steps < 0 or self.threads < 0:
            raise ValueError("train.lr and train.grad_clip must be > 0; weight_decay, warmup_steps, threads >= 0")
        if self.device not in ("cpu", "cuda", "auto"):
            raise ValueError(f"train.device must be cpu, cuda or auto, got {self.device!r}")


def build_state(model_cfg: StreamingConfig, t: StreamTrainConfig, device: torch.device) -> TrainState:
    """A fresh model (seeded by ``t.seed``), AdamW and its warm-up + cosine (to 10%) schedule."""
    torch.manual_seed(t.seed)
    model = StreamingModel(model_cfg).to(device)
    return new_state(model, t.lr, t.weight_decay, t.warmup_steps, t.steps, t.seed)


def save_checkpoint(state: TrainState, path: Path) -> None:
    """Writes the resumable state to ``path`` atomically (:func:`policies.common.train_state.save_state`)."""
    save_state(state, path, dataclasses.asdict(state.model.config))


def restore_state(model_cfg: StreamingConfig, t: StreamTrainConfig, path: Path, device: torch.device) -> TrainState:
    """The state saved at ``path``.

    Raises:
        ValueError: the checkpoint holds another model config (names both).
    """
    return load_state(path, dataclasses.asdict(model_cfg), device, lambda _: build_state(model_cfg, t, device))


def train_step(state: TrainState, episodes: Sequence[StreamEpisode], t: StreamTrainConfig,
               clips: ClipConfig) -> dict[str, float]:
    """One AdamW step on a batch of sampled clips; returns ``train/loss`` and the ``losses/<term>`` figures."""
    config = state.model.config
    batch = [sample_clip(episodes, clips, state.rng) for _ in range(t.batch_size)]
    frames, tokens, targets = collate(batch, config.max_instruction_tokens)
    device = state.model.embed.weight.device
    targets = dataclasses.replace(targets, **{k: v.to(device) for k, v in vars(targets).items() if v is not None})
    state.model.train()
    outputs = state.model(frames.to(device), tokens.to(device))
    loss, terms = streaming_loss(outputs, targets, config.pose_scale, t.loss_weights, t.event_pos_weight)
    optimizer_step(state, loss, t.grad_clip)
    return {"train/loss": float(loss.detach()), **terms}


def train_streaming(model_cfg: StreamingConfig, t: StreamTrainConfig, clips: ClipConfig,
                    episodes: Sequence[StreamEpisode], out_dir: str | Path,
                    tracker: Tracker | None = None) -> StreamingModel:
    """Trains (or resumes from ``<out_dir>/checkpoints/last.pt``) and saves the final model in ``<out_dir>/model``;
    returns it (eval mode).

    Raises:
        ValueError: no training episodes, or a checkpoint of another model config.
    """
    if not episodes:
        raise ValueError("train_streaming needs at least one training episode")
    if t.threads:
        torch.set_num_threads(t.threads)
    out_dir, device = Path(out_dir), resolve_device(t.device)
    ckpt = out_dir / CHECKPOINT
    state = restore_state(model_cfg, t, ckpt, device) if ckpt.is_file() else build_state(model_cfg, t, device)
    run_steps(state, lambda: train_step(state, episodes, t, clips), t.steps, t.log_every, t.checkpoint_every,
              lambda: save_checkpoint(state, ckpt), tracker)
    save_streaming(state.model, out_dir / MODEL_DIR)
    return state.model.eval()
