"""TOPReward's figures on held-out twin rollouts (``scripts/eval_reward.py``): VOC, static-frame VOC, success AUC.

For each evaluated split (``heldout``: initial states not seen in training; ``heldout_instructions``: held-out seeds
and paraphrases), each rollout (mixed quality: expert, degraded, partial, random; :mod:`policies.rewards.rollouts`)
is scored with :meth:`TOPReward.score` (K = 15 prefixes of the frames resampled at 2 FPS, min-max normalised,
interpolated to every recorded frame). Figures, each a mean over the split's rollouts unless said otherwise:

- ``voc``: Spearman between the model's K prefix scores and the twin's true progress (``proximity``) at the same
  prefixes' last frames: the order of the values the method computes (the paper's VOC). Only rollouts whose true
  progress moves (range >= ``min_progress_range``; ``n_voc_rollouts`` of them) count: a series that does not move
  (a random pusher that never nears the pad) has no order to recover, and its Spearman is undefined. A constant
  prediction counts 0 (:func:`~policies.rewards.topreward.voc`). 1 is a perfect order.
- ``voc_frames``: the same rollouts, the predicted progress interpolated to every recorded frame against the truth
  per frame; ``voc_frames_ceiling`` is what a perfect scorer (the truth at the K prefixes, interpolated) gets, the
  limit K = 15 prefixes at 2 FPS set on the interpolated reward.
- ``static_voc``: ``voc`` of the static-frame control (the first frame repeated for the video's length) against the
  same true progress: a reward that reads the frames stays flat (0); near 1 means it only counts time.
- ``voc_all``: ``voc`` over every rollout, one whose truth does not move counting 0.
- ``success_auc``: ROC-AUC of the final log-probability of ``True`` (the whole video) for the rollout's success;
  ``success_accuracy``: accuracy at the :class:`SuccessDetector` threshold fitted on ``fit_split`` (``train``)
  rollouts, which is ``success_threshold``.
- ``gvl_voc`` (``hf`` backend only): VOC of the GVL baseline: the 2 FPS frames shuffled, the model generates a
  completion percentage per frame (:func:`gvl_prompt`, :func:`parse_gvl`), VOC against the true progress over the
  frames it answered (an answer with no parsable line counts 0). The ``native`` backend prints no GVL figure: it is
  trained only to score the final ``True``/``False`` of the TOPReward prompt and cannot generate text.

The first split listed gives the unsuffixed names; the others add ``_<split>`` (``voc_heldout_instructions``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.stats import rankdata

from policies.rewards.rollouts import Rollout, load_rollout
from policies.rewards.topreward import (
    SuccessDetector,
    TOPReward,
    gvl_prompt,
    interpolate,
    parse_gvl,
    resample,
    voc,
)
from policies.tracking import Tracker

__all__ = ["RewardEvalConfig", "RolloutScore", "evaluate_reward", "fit_detector", "gvl_progress", "iter_rollouts",
           "mean_voc", "pick_for_plot", "plot_progress", "roc_auc", "score_rollouts", "split_figures"]

MIN_PROGRESS_RANGE = 0.05  # a rollout's true progress must span this much to have an order for VOC to score


@dataclass
class RewardEvalConfig:
    """What ``scripts/eval_reward.py`` evaluates: which rollout splits, how many, and what it draws."""

    splits: list[str] = field(default_factory=lambda: ["heldout", "heldout_instructions"])  # first: unsuffixed
    fit_split: str = "train"  # the success threshold is fitted on these rollouts
    n_rollouts: int = 100  # rollouts per evaluated split (the first by seed); 0: all
    n_fit: int = 100  # rollouts of fit_split for the threshold; 0: all
    batch_size: int = 8  # rollouts scored per backend call
    n_plot: int = 4  # rollouts of the first split in progress.png (successes and failures alternated)
    min_progress_range: float = MIN_PROGRESS_RANGE  # a rollout counts in voc when its true progress spans this
    gvl: bool = True  # hf backend: also the GVL baseline (gvl_voc); ignored for native
    gvl_max_new_tokens: int = 256  # tokens the hf model may generate per GVL answer

    def __post_init__(self) -> None:
        if not self.splits or not all(isinstance(s, str) and s for s in self.splits):
            raise ValueError(f"eval.splits must list rollout split names, got {self.splits}")
        for name in ("n_rollouts", "n_fit", "n_plot"):
            if getattr(self, name) < 0:
                raise ValueError(f"eval.{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.min_progress_range < 1.0:
            raise ValueError(f"eval.min_progress_range must be in [0, 1), got {self.min_progress_range}")
        if self.batch_size < 1 or self.gvl_max_new_tokens < 1:
            raise ValueError(f"eval.batch_size and eval.gvl_max_new_tokens must be >= 1, got {self.batch_size}, "
                             f"{self.gvl_max_new_tokens}")


# ------------------------------------------------------------------------------------------------------ metrics
def roc_auc(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """ROC-AUC of ``scores`` for the positive ``labels``: the probability that a random positive outscores a random
    negative, ties counting half (Mann-Whitney U over average ranks; what ``sklearn.metrics.roc_auc_score`` gives).

    Raises: ValueError: lengths differ, or the labels hold only one class.
    """
    x, y = np.asarray(scores, dtype=np.float64), np.asarray(labels, dtype=bool)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"scores and labels must be 1-D of one length, got {x.shape}, {y.shape}")
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("ROC-AUC needs both positive and negative labels")
    ranks = rankdata(x)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def mean_voc(preds: Sequence[np.ndarray], trues: Sequence[np.ndarray]) -> float:
    """Mean :func:`voc` over trajectories (a constant series counts 0). Raises: ValueError: no trajectories."""
    if not preds or len(preds) != len(trues):
        raise ValueError(f"need one true series per prediction and at least one, got {len(preds)}, {len(trues)}")
    return float(np.mean([voc(p, t) for p, t in zip(preds, trues, strict=True)]))


def gvl_progress(scorer, rollout: Rollout, sample_fps: float, max_new_tokens: int) -> tuple[np.ndarray, np.ndarray]:
    """The GVL baseline on one rollout: ``(predicted, true)`` progress at the 2 FPS frames the answer covered
    (both empty when no ``Frame i: p%`` line parses). ``scorer`` generates text (``HFScorer.generate``)."""
    frames, idx = resample(rollout.images, rollout.fps, sample_fps)
    shuffled, prompt, perm = gvl_prompt(frames, rollout.task, seed=rollout.seed)
    try:
        pred = parse_gvl(scorer.generate(shuffled, prompt + "\n", max_new_tokens), perm)
    except ValueError:
        return np.zeros(0), np.zeros(0)
    answered = np.isfinite(pred)
    return pred[answered], rollout.progress[idx][answered].astype(np.float64)


# ------------------------------------------------------------------------------------------------------ scoring
@dataclass
class RolloutScore:
    """One rollout's predicted and true progress per recorded frame, its static control and its final score."""

    seed: int
    agent: str
    success: bool
    true: np.ndarray  # (T,) the twin's progress
    pred: np.ndarray  # (T,) TOPReward progress in [0, 1]
    static: np.ndarray  # (T,) TOPReward progress of the static-frame control
    final_log_prob: float  # log p(True | whole video)
    gvl: tuple[np.ndarray, np.ndarray] | None = None  # (predicted, true) of the GVL baseline (hf only)
    prefix_ends: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # (K,) last frame of each prefix
    log_probs: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (K,) log p(True) per prefix
    static_log_probs: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (K,) of the static control

    def prefix_voc(self, static: bool = False) -> float:
        """VOC of the K prefix scores (or the static control's) against the true progress at the prefix ends."""
        return voc(self.static_log_probs if static else self.log_probs, self.true[self.prefix_ends])

    def frames_ceiling(self) -> float:
        """VOC per frame of a perfect scorer: the truth at the K prefix ends, interpolated to every frame."""
        ends = self.prefix_ends
        return voc(interpolate(ends, self.true[ends], len(self.true)), self.true)


def iter_rollouts(root: str | Path, split: str, n: int = 0) -> Iterator[Rollout]:
    """The first ``n`` (0: all) rollouts of ``<root>/<split>/`` by seed, loaded one at a time (frames as recorded).

    Raises: FileNotFoundError: no episodes there (names the folder).
    """
    paths = sorted((Path(root) / split).glob("episode_*.npz"))
    if not paths:
        raise FileNotFoundError(f"no rollouts in {Path(root) / split}: collect them with scripts/train_reward.py "
                                "(data_root) or set data_root=<its rollout folder>")
    for path in paths[:n] if n else paths:
        yield load_rollout(path)


def _batches(rollouts: Iterator[Rollout], size: int) -> Iterator[list[Rollout]]:
    batch = []
    for rollout in rollouts:
        batch.append(rollout)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def score_rollouts(reward: TOPReward, rollouts: Iterator[Rollout], batch_size: int = 8, static: bool = True,
                   gvl_tokens: int = 0) -> list[RolloutScore]:
    """TOPReward (and, with ``static``, the static-frame control; with ``gvl_tokens`` > 0, the GVL baseline) of each
    rollout, ``batch_size`` rollouts per backend call; frames are dropped once scored."""
    out = []
    for batch in _batches(rollouts, batch_size):
        tasks, fps = [r.task for r in batch], [r.fps for r in batch]
        results = reward.score_batch([r.images for r in batch], tasks, fps)
        stills = reward.score_batch([np.repeat(r.images[:1], len(r.images), axis=0) for r in batch], tasks, fps) \
            if static else [None] * len(batch)
        for r, res, still in zip(batch, results, stills, strict=True):
            gvl = gvl_progress(reward.scorer, r, reward.sample_fps, gvl_tokens) if gvl_tokens else None
            out.append(RolloutScore(r.seed, r.agent, r.succeeded, r.progress.astype(np.float64), res.progress,
                                    still.progress if still is not None else np.zeros(0), res.final_log_prob, gvl,
                                    res.prefix_ends, res.log_probs,
                                    still.log_probs if still is not None else np.zeros(0)))
    return out


def split_figures(scores: Sequence[RolloutScore], detector: SuccessDetector, suffix: str = "",
                  min_progress_range: float = MIN_PROGRESS_RANGE) -> dict[str, float]:
    """``voc``, ``voc_frames``, ``voc_frames_ceiling``, ``static_voc``, ``voc_all``, ``n_voc_rollouts``,
    ``success_auc``, ``success_accuracy``, ``gvl_voc`` (when scored), ``n_rollouts`` and ``n_successes`` of one split
    (module docstring), each name + ``suffix``. ``success_auc`` is left out, with a warning, when the split holds only
    successes or only failures; the VOC figures are NaN, with a warning, when no rollout's truth moves."""
    final = [s.final_log_prob for s in scores]
    success = [s.success for s in scores]
    moving = [s for s in scores if np.ptp(s.true) >= min_progress_range]
    figures: dict[str, float] = {"voc_all": float(sum(s.prefix_voc() for s in moving) / len(scores)),
                                 "n_voc_rollouts": len(moving)}
    if moving:
        figures.update(voc=float(np.mean([s.prefix_voc() for s in moving])),
                       voc_frames=mean_voc([s.pred for s in moving], [s.true for s in moving]),
                       voc_frames_ceiling=float(np.mean([s.frames_ceiling() for s in moving])),
                       static_voc=float(np.mean([s.prefix_voc(static=True) for s in moving])))
    else:
        warnings.warn(f"split{suffix or ''}: no rollout's true progress spans {min_progress_range}; no voc",
                      stacklevel=2)
        figures.update(voc=math.nan, voc_frames=math.nan, voc_frames_ceiling=math.nan, static_voc=math.nan)
    if all(success) or not any(success):
        warnings.warn(f"split{suffix or ''}: all {len(scores)} rollouts {'succeed' if any(success) else 'fail'}; "
                      "no success_auc", stacklevel=2)
    else:
        figures["success_auc"] = roc_auc(final, success)
    figures["success_accuracy"] = float(np.mean(detector.predict(final) == np.asarray(success)))
    if scores[0].gvl is not None:
        figures["gvl_voc"] = float(np.mean([voc(*s.gvl) if len(s.gvl[0]) else 0.0 for s in scores]))
    figures.update(n_rollouts=len(scores), n_successes=int(sum(success)))
    return {f"{name}{suffix}": value for name, value in figures.items()}


# --------------------------------------------------------------------------------------------------------- plot
_PANEL = (300, 420)  # h, w of one rollout's panel, px
_COLOURS = {"true": (60, 160, 40), "TOPReward": (200, 90, 20), "static": (150, 150, 150)}  # BGR


def _panel(score: RolloutScore) -> np.ndarray:
    """One rollout: true (green), predicted (blue) and static-control (grey) progress over the frames."""
    import cv2

    h, w = _PANEL
    img = np.full((h, w, 3), 255, np.uint8)
    x0, x1, y0, y1 = 40, w - 15, h - 30, 40  # plot box: x0..x1 left to right, y0 (progress 0) .. y1 (progress 1)
    cv2.rectangle(img, (x0, y1), (x1, y0), (0, 0, 0), 1)
    for tick in (0.0, 0.5, 1.0):
        y = int(round(y0 + tick * (y1 - y0)))
        cv2.putText(img, f"{tick:.1f}", (5, y + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 0), 1, cv2.LINE_AA)
    for name, series in (("static", score.static), ("true", score.true), ("TOPReward", score.pred)):
        if len(series) == 0:
            continue
        t = np.linspace(x0, x1, len(series)) if len(series) > 1 else np.array([x0])
        pts = np.stack([t, y0 + np.clip(series, 0, 1) * (y1 - y0)], axis=1).round().astype(np.int32)
        cv2.polylines(img, [pts], False, _COLOURS[name], 2, cv2.LINE_AA)
    title = f"seed {score.seed} {score.agent} {'success' if score.success else 'failure'} VOC {voc(score.pred, score.true):.2f}"
    cv2.putText(img, title, (x0, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 1, cv2.LINE_AA)
    for i, name in enumerate(("true", "TOPReward", "static")):
        cv2.putText(img, name, (x0 + 5 + 95 * i, 34), cv2.FONT_HERSHEY_SIMPLEX, 0.38, _COLOURS[name], 1, cv2.LINE_AA)
    cv2.putText(img, "frames ->", (x1 - 70, h - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 0), 1, cv2.LINE_AA)
    return img


def pick_for_plot(scores: Sequence[RolloutScore], n: int) -> list[RolloutScore]:
    """Up to ``n`` rollouts, successes and failures alternated (first by seed), so both kinds are drawn."""
    wins, losses = [s for s in scores if s.success], [s for s in scores if not s.success]
    picked = [s for pair in zip(wins, losses) for s in pair]
    rest = wins[len(losses):] + losses[len(wins):]
    return (picked + rest)[:n]


def plot_progress(scores: Sequence[RolloutScore], path: str | Path, columns: int = 2) -> Path:
    """Writes a PNG of predicted vs true progress, one panel per rollout in ``scores`` (``columns`` per row).

    Raises: ValueError: no rollouts; OSError: the PNG cannot be written.
    """
    import cv2

    if not scores:
        raise ValueError("plot_progress needs at least one rollout")
    panels = [_panel(s) for s in scores]
    panels += [np.full_like(panels[0], 255)] * (-len(panels) % columns)
    grid = np.concatenate([np.concatenate(panels[i:i + columns], axis=1) for i in range(0, len(panels), columns)])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), grid):
        raise OSError(f"cannot write the progress plot {path}")
    return path


# --------------------------------------------------------------------------------------------------------- run
def fit_detector(reward: TOPReward, root: str | Path, cfg: RewardEvalConfig) -> SuccessDetector:
    """The success threshold fitted on the final log-probabilities of ``cfg.fit_split`` rollouts.

    Raises: FileNotFoundError: no such rollouts; ValueError: they are all successes or all failures.
    """
    final_only = TOPReward(reward.scorer, k=1, sample_fps=reward.sample_fps)  # the last prefix is the whole video
    scores = score_rollouts(final_only, iter_rollouts(root, cfg.fit_split, cfg.n_fit), cfg.batch_size, static=False)
    return SuccessDetector().fit([s.final_log_prob for s in scores], [s.success for s in scores])


def evaluate_reward(reward: TOPReward, root: str | Path, cfg: RewardEvalConfig, out_dir: str | Path,
                    tracker: Tracker | None = None) -> dict[str, float]:
    """The figures of the module docstring on ``cfg.splits`` of the rollouts under ``root``; ``progress.png`` (the
    first split's ``cfg.n_plot`` rollouts) in ``out_dir``, logged with the figures to ``tracker`` (step 0).
    With ``cfg.gvl``, a backend that generates text (``generate``: hf) is also scored on the GVL baseline.

    Raises: FileNotFoundError: a split has no rollouts; ValueError: the fit split lacks successes or failures.
    """
    detector = fit_detector(reward, root, cfg)
    gvl = cfg.gvl and callable(getattr(reward.scorer, "generate", None))
    figures: dict[str, float] = {}
    plotted: list[RolloutScore] = []
    for i, split in enumerate(cfg.splits):
        scores = score_rollouts(reward, iter_rollouts(root, split, cfg.n_rollouts), cfg.batch_size,
                                gvl_tokens=cfg.gvl_max_new_tokens if gvl else 0)
        figures.update(split_figures(scores, detector, "" if i == 0 else f"_{split}", cfg.min_progress_range))
        plotted = plotted or pick_for_plot(scores, cfg.n_plot)
    figures["success_threshold"] = detector.threshold
    if plotted:
        png = plot_progress(plotted, Path(out_dir) / "progress.png")
        print(f"progress plot: {png}")
        if tracker is not None:
            tracker.log_image("eval/progress", png, step=0)
    if tracker is not None:
        tracker.log({f"eval/{k}": v for k, v in figures.items()}, step=0)
    return figures
