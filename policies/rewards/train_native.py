"""Trains the native TOPReward model: the next word after the prompt is "True" with the probability of true progress.

For each sampled training rollout (frames at 2 FPS) and ``prefixes_per_video`` sampled prefix lengths ``n``, the
target at the position before the final "True" is the soft distribution P("True") = floor + (1 - 2 floor) x
progress[n - 1], P("False") = the rest (no mass on other words); the loss is its cross-entropy with the model's
next-word distribution. So log P("True") rises with progress, and a prefix ending in a success (progress ~0.8-1)
scores near log 1. All prefixes of a rollout share one frame encoding and one forward (:func:`true_logits`). Some
videos are rewritten (one frame repeated, started at a random frame, played backwards: ``RewardTrainConfig``) so that
the number of frames alone does not predict the label.

Run directory::

    <out_dir>/checkpoints/last.pt      weights, optimizer, scheduler, step, RNG, vocabulary (atomic; resumed from)
    <out_dir>/model.pt, tokenizer.json, config.json      the final model (:func:`policies.rewards.native.load_native`)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from policies.common.train_state import TrainState, load_state, new_state, optimizer_step, run_steps, save_state
from policies.rewards.evaluate import MIN_PROGRESS_RANGE
from policies.rewards.native import (
    NativeScorer,
    NativeVLM,
    NativeVLMConfig,
    answer_ids,
    build_tokenizer,
    config_dict,
    make_batch,
    save_native,
    true_logits,
)
from policies.rewards.rollouts import Rollout
from policies.rewards.topreward import voc
from policies.tracking import Tracker
from policies.vla.tokenizer import WordTokenizer

CHECKPOINT = Path("checkpoints") / "last.pt"
VIDEO_AUGMENTS = ("static", "crop", "reverse")  # training videos rewritten so time alone does not give progress


@dataclass
class RewardTrainConfig:
    """Optimisation of the native reward model."""

    steps: int = 2400  # optimizer steps (~14 min on 2 idle cores at the defaults)
    batch_size: int = 12  # rollouts per step
    prefixes_per_video: int = 4  # prefix lengths sampled per rollout (all share one forward)
    lr: float = 1.0e-3  # AdamW peak learning rate (linear warm-up, cosine decay to 10%)
    weight_decay: float = 0.01
    warmup_steps: int = 100
    grad_clip: float = 1.0  # max gradient norm
    label_floor: float = 0.02  # target P("True") = floor + (1 - 2 floor) x progress: keeps log-probs finite
    # Shares of a batch's videos rewritten so that time alone does not predict progress (the rest are plain
    # rollouts; every label is still the progress of the frame a prefix ends on): static: one frame of the rollout
    # repeated (a camera that sees nothing move sees no progress); crop: the rollout from a random frame on (the
    # first frame already shows progress); reverse: played backwards (progress falls as time passes).
    static_fraction: float = 0.15
    crop_fraction: float = 0.25
    reverse_fraction: float = 0.15
    log_every: int = 50  # steps between train/ logs
    eval_every: int = 400  # steps between val/ evaluations (and checkpoints); 0: at the end only
    eval_prefixes: int = 15  # K of the validation VOC (linspace over each rollout)
    seed: int = 0
    device: str = "cpu"  # cpu | cuda | auto

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "prefixes_per_video", "log_every", "eval_prefixes"):
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0 or self.weight_decay < 0 or self.warmup_steps < 0 or self.eval_every < 0 or self.grad_clip <= 0:
            raise ValueError("train.lr and train.grad_clip must be > 0; weight_decay, warmup_steps, eval_every >= 0")
        shares = self.augment_shares()
        if min(shares.values()) < 0 or sum(shares.values()) > 1:
            raise ValueError(f"train.static_fraction, crop_fraction and reverse_fraction must be >= 0 with a sum "
                             f"<= 1, got {shares}")
        if not 0 <= self.label_floor < 0.5:
            raise ValueError(f"train.label_floor must be in [0, 0.5), got {self.label_floor}")
        if self.device not in ("cpu", "cuda", "auto"):
            raise ValueError(f"train.device must be cpu, cuda or auto, got {self.device!r}")

    def augment_shares(self) -> dict[str, float]:
        """The share of each of :data:`VIDEO_AUGMENTS` in a batch."""
        return {name: getattr(self, f"{name}_fraction") for name in VIDEO_AUGMENTS}


@dataclass
class NativeRewardConfig:
    """The native reward model and how it is trained."""

    model: NativeVLMConfig = field(default_factory=NativeVLMConfig)
    train: RewardTrainConfig = field(default_factory=RewardTrainConfig)


def soft_answer_loss(logits: Tensor, progress: Tensor, valid: Tensor, true_id: int, false_id: int,
                     floor: float) -> Tensor:
    """Mean over valid prefixes of ``-(p log q_True + (1 - p) log q_False)``, ``p = floor + (1 - 2 floor) progress``.

    ``logits`` ``(B, K, V)``; ``progress`` ``(B, K)`` in [0, 1]; ``valid`` bool ``(B, K)``.
    """
    log_q = logits.float().log_softmax(-1)
    p = floor + (1.0 - 2.0 * floor) * progress
    loss = -(p * log_q[..., true_id] + (1.0 - p) * log_q[..., false_id])
    return (loss * valid).sum() / valid.sum().clamp(min=1)


def augment_video(rollout: Rollout, kind: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``(frames, progress per frame)`` of ``rollout`` rewritten as ``kind`` (``plain`` or one of
    :data:`VIDEO_AUGMENTS`; see :class:`RewardTrainConfig`)."""
    images, progress = rollout.images, rollout.progress
    if kind == "static":
        frame = int(rng.integers(len(images)))
        return np.repeat(images[frame: frame + 1], len(images), axis=0), np.full(len(images), progress[frame])
    if kind == "crop":
        start = int(rng.integers(max(len(images) - 1, 1)))
        return images[start:], progress[start:]
    if kind == "reverse":
        return images[::-1], progress[::-1]
    return images, progress


def sample_batch(rollouts: Sequence[Rollout], batch_size: int, k: int, rng: np.random.Generator,
                 shares: dict[str, float] | None = None):
    """``batch_size`` rollouts and ``k`` distinct sorted prefix lengths each (fewer for short ones, padded by the
    last): returns ``(videos, instructions, prefix_lengths, progress (B, k), valid (B, k))``; a prefix's label is
    the progress of its last frame. ``shares``: the probability of each of :data:`VIDEO_AUGMENTS` per row
    (:func:`augment_video`); the rest are plain."""
    shares = shares or {}
    kinds = [*VIDEO_AUGMENTS, "plain"]
    weights = [shares.get(name, 0.0) for name in VIDEO_AUGMENTS]
    picks = rng.integers(len(rollouts), size=batch_size)
    rows = rng.choice(len(kinds), size=batch_size, p=[*weights, max(1.0 - sum(weights), 0.0)])
    videos, texts, prefixes = [], [], []
    progress, valid = np.zeros((batch_size, k), np.float32), np.zeros((batch_size, k), bool)
    for row, (i, kind) in enumerate(zip(picks, rows)):
        images, labels = augment_video(rollouts[i], kinds[kind], rng)
        n = np.sort(rng.choice(np.arange(1, len(images) + 1), size=min(k, len(images)), replace=False))
        videos.append(images[: n[-1]])
        texts.append(rollouts[i].task)
        prefixes.append(n)
        progress[row, : len(n)], valid[row, : len(n)] = labels[n - 1], True
    return videos, texts, prefixes, torch.from_numpy(progress), torch.from_numpy(valid)


def evaluate(scorer: NativeScorer, rollouts: Sequence[Rollout], k: int,
             min_progress_range: float = MIN_PROGRESS_RANGE) -> dict[str, float]:
    """``val/voc``: mean VOC of the log P(True) of ``k`` linspace prefixes against the true progress at their last
    frames, over the rollouts whose true progress spans ``min_progress_range`` (as ``scripts/eval_reward.py``);
    ``val/static_voc``: the same with the first frame repeated; ``val/true_logp_success`` / ``_failure``: the mean
    final log-prob of successes and failures."""
    vocs, static, final = [], [], {True: [], False: []}
    for r in rollouts:
        n = np.unique(np.linspace(1, len(r.images), min(k, len(r.images))).round().astype(int))
        logp = scorer.true_log_probs(r.images, r.task, n)
        final[r.succeeded].append(logp[-1])
        if np.ptp(r.progress) >= min_progress_range:
            still = scorer.true_log_probs(np.repeat(r.images[:1], len(r.images), axis=0), r.task, n)
            vocs.append(voc(logp, r.progress[n - 1]))
            static.append(voc(still, r.progress[n - 1]))
    out = {"val/voc": float(np.mean(vocs)) if vocs else float("nan"),
           "val/static_voc": float(np.mean(static)) if static else float("nan")}
    out.update({f"val/true_logp_{name}": float(np.mean(final[s])) for s, name in ((True, "success"),
                                                                               (False, "failure")) if final[s]})
    return out


def _device(name: str) -> torch.device:
    return torch.device("cuda" if name == "auto" and torch.cuda.is_available() else "cpu" if name == "auto" else name)


def build_state(cfg: NativeRewardConfig, tokenizer: WordTokenizer, device: torch.device) -> TrainState:
    """A fresh model (seeded by ``cfg.train.seed``), AdamW and a warm-up + cosine (to 10%) schedule; the tokenizer
    rides in ``state.extra["tokenizer"]``."""
    t = cfg.train
    torch.manual_seed(t.seed)
    model = NativeVLM(cfg.model, len(tokenizer)).to(device)
    return new_state(model, t.lr, t.weight_decay, t.warmup_steps, t.steps, t.seed, tokenizer=tokenizer)


def save_checkpoint(state: TrainState, path: Path) -> None:
    """Writes the resumable state and the vocabulary to ``path`` atomically (:func:`~policies.common.train_state.save_state`)."""
    save_state(state, path, config_dict(state.model.config), tokenizer=state.extra["tokenizer"].to_dict())


def restore_state(cfg: NativeRewardConfig, path: Path, device: torch.device) -> TrainState:
    """The state saved at ``path``; ``ValueError`` when its model config differs from ``cfg.model`` (names both)."""

    def build(payload: dict) -> TrainState:
        saved = payload["tokenizer"]
        return build_state(cfg, WordTokenizer(saved["vocab"][2:], saved["max_length"]), device)

    return load_state(path, config_dict(cfg.model), device, build)


def train_step(state: TrainState, rollouts: Sequence[Rollout], t: RewardTrainConfig, answer: tuple[int, int]) -> float:
    """One AdamW step on a sampled batch; returns the loss."""
    videos, texts, prefixes, progress, valid = sample_batch(rollouts, t.batch_size, t.prefixes_per_video, state.rng,
                                                            t.augment_shares())
    batch = make_batch(state.extra["tokenizer"], videos, texts, prefixes, state.model.config.max_frames)
    state.model.train()
    logits = true_logits(state.model, batch)
    device = logits.device
    loss = soft_answer_loss(logits, progress.to(device), valid.to(device), *answer, t.label_floor)
    optimizer_step(state, loss, t.grad_clip)
    return float(loss.detach())


def train_native_reward(cfg: NativeRewardConfig, rollouts: Sequence[Rollout], out_dir: str | Path,
                        tracker: Tracker | None = None, val_rollouts: Sequence[Rollout] = ()) -> dict[str, float]:
    """Trains (or resumes from ``<out_dir>/checkpoints/last.pt``) and saves the final model in ``out_dir``.

    ``rollouts``: training rollouts, frames at 2 FPS (:func:`policies.rewards.rollouts.load_rollouts`);
    ``val_rollouts``: evaluated every ``eval_every`` steps and at the end (``val/voc``, ``val/static_voc``, ...).
    Returns the last figures: ``train/loss`` and the ``val/`` ones.

    Raises:
        ValueError: no training rollouts, or a checkpoint of another model config.
    """
    if not rollouts:
        raise ValueError("train_native_reward needs at least one training rollout")
    t, out_dir, device = cfg.train, Path(out_dir), _device(cfg.train.device)
    ckpt = out_dir / CHECKPOINT
    if ckpt.is_file():
        state = restore_state(cfg, ckpt, device)
    else:
        state = build_state(cfg, build_tokenizer(sorted({r.task for r in rollouts})), device)
    answer, tokenizer = answer_ids(state.extra["tokenizer"]), state.extra["tokenizer"]

    def validate() -> dict[str, float]:
        return evaluate(NativeScorer(state.model, tokenizer), val_rollouts, t.eval_prefixes) if val_rollouts else {}

    figures = run_steps(state, lambda: {"train/loss": train_step(state, rollouts, t, answer)}, t.steps, t.log_every,
                        t.eval_every or t.steps, lambda: save_checkpoint(state, ckpt), tracker, validate)
    save_native(state.model.eval(), state.extra["tokenizer"], out_dir, extra={"train": asdict(t)})
    return figures
