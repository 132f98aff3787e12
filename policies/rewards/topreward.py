"""TOPReward (arXiv 2602.19313): task progress from a VLM's log-probability of the final ``True`` of a prompt.

For K prefixes of a trajectory video (frames resampled at 2 FPS, prefix ends linspace over its length), a backend
(:class:`~policies.rewards.protocol.TrueScorer`) gives ``log p(True | frames[:n], prompt)``; the K values are min-max
normalised per trajectory and interpolated to every original frame: the predicted progress. Evaluation: VOC
(Spearman between predicted and true progress), the static-frame control (first frame repeated: a good reward stays
flat), success detection (a threshold on the final log-probability, fitted on training rollouts) and the GVL
baseline (shuffled frames, the model states a completion percentage per frame). All numpy; no torch here.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from policies.rewards.protocol import TrueScorer

__all__ = ["RewardResult", "SuccessDetector", "TOPReward", "check_instruction", "check_video", "gvl_prompt",
           "interpolate", "minmax", "parse_gvl", "prefix_lengths", "resample",
           "resample_indices", "voc"]


def check_video(frames: np.ndarray) -> np.ndarray:
    """``frames`` as a ``(T, H, W, 3)`` uint8 array; a list of frames is stacked.

    Raises:
        ValueError: empty video, frames of mixed sizes, not uint8 or not ``(T, H, W, 3)``; the message says which.
    """
    if isinstance(frames, (list, tuple)):
        if not frames:
            raise ValueError("empty video: no frames")
        shapes = {np.shape(f) for f in frames}
        if len(shapes) > 1:
            raise ValueError(f"frames of mixed sizes: {sorted(shapes)}")
        frames = np.stack(frames)
    frames = np.asarray(frames)
    if frames.ndim >= 1 and frames.shape[0] == 0:
        raise ValueError("empty video: no frames")
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be (T, H, W, 3) RGB, got shape {frames.shape}")
    if frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, got {frames.dtype}")
    return frames


def check_instruction(instruction: str | None) -> str:
    """The instruction, stripped. Raises: ValueError: missing, not a string or empty."""
    if not isinstance(instruction, str) or not instruction.strip():
        raise ValueError(f"missing instruction: expected a non-empty string, got {instruction!r}")
    return instruction.strip()


def resample_indices(n_frames: int, fps: float, target_fps: float = 2.0) -> np.ndarray:
    """Indices of the frames nearest to a ``target_fps`` clock over a ``fps`` video of ``n_frames`` frames.

    Increasing, unique, always holding the first and the last frame; a video slower than ``target_fps`` keeps every
    frame. Raises: ValueError: ``n_frames < 1`` or a non-positive rate.
    """
    if n_frames < 1 or fps <= 0 or target_fps <= 0:
        raise ValueError(f"need n_frames >= 1, fps > 0 and target_fps > 0, got {n_frames}, {fps}, {target_fps}")
    times = np.arange(0.0, (n_frames - 1) / fps + 1e-9, 1.0 / target_fps)
    idx = np.clip(np.rint(times * fps).astype(np.int64), 0, n_frames - 1)
    return np.unique(np.concatenate([idx, [0, n_frames - 1]]))


def resample(frames: np.ndarray, fps: float, target_fps: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """``(frames[idx], idx)`` with ``idx`` = :func:`resample_indices` (first and last frame always kept).

    Raises: ValueError: bad frames or a non-positive rate.
    """
    frames = check_video(frames)
    idx = resample_indices(len(frames), fps, target_fps)
    return frames[idx], idx


def prefix_lengths(n_frames: int, k: int = 15) -> list[int]:
    """Up to ``k`` prefix lengths, linspace over ``1..n_frames``: unique, increasing, the last ``n_frames``.

    Raises: ValueError: ``k < 1`` or ``n_frames < 1`` (empty video).
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if n_frames < 1:
        raise ValueError(f"empty video: n_frames = {n_frames}")
    ends = np.rint(np.linspace(n_frames / k, n_frames, k)).astype(np.int64)
    return [int(n) for n in np.unique(np.clip(ends, 1, n_frames))]


def minmax(values: np.ndarray) -> np.ndarray:
    """``values`` min-max normalised to [0, 1] (one trajectory); a constant series gives zeros."""
    values = np.asarray(values, dtype=np.float64)
    span = values.max() - values.min() if values.size else 0.0
    if not np.isfinite(span) or span <= 0:
        return np.zeros_like(values)
    return (values - values.min()) / span


def interpolate(prefix_end_indices: Sequence[int], values: np.ndarray, n_frames: int) -> np.ndarray:
    """``values`` given at the original frame indices ``prefix_end_indices`` (increasing), linearly interpolated to
    every frame ``0..n_frames-1`` (held constant before the first index)."""
    x = np.asarray(prefix_end_indices, dtype=np.float64)
    return np.interp(np.arange(n_frames, dtype=np.float64), x, np.asarray(values, dtype=np.float64))


def voc(pred: np.ndarray, true: np.ndarray) -> float:
    """Value-order correlation: Spearman's rho between predicted and true progress; 0.0 when either is constant.

    Raises: ValueError: the two series differ in length.
    """
    pred, true = np.asarray(pred, dtype=np.float64), np.asarray(true, dtype=np.float64)
    if pred.shape != true.shape:
        raise ValueError(f"pred and true differ in shape: {pred.shape} vs {true.shape}")
    if pred.size < 2 or np.ptp(pred) == 0 or np.ptp(true) == 0:
        return 0.0
    return float(stats.spearmanr(pred, true).statistic)


@dataclass
class RewardResult:
    """One trajectory's TOPReward: ``prefix_ends`` (K indices into the original frames: each prefix's last frame),
    ``log_probs`` (K,) of ``True``, ``progress`` (n_frames,) min-max normalised and interpolated, and
    ``final_log_prob`` (of the whole video; the success detector's input)."""

    prefix_ends: np.ndarray
    log_probs: np.ndarray
    progress: np.ndarray
    final_log_prob: float


class TOPReward:
    """The method around a backend: resample at ``sample_fps``, score ``k`` prefixes, normalise, interpolate.

    Raises (at construction): ValueError: ``k < 1`` or ``sample_fps <= 0``; TypeError: ``scorer`` lacks the
    :class:`TrueScorer` methods.
    """

    def __init__(self, scorer: TrueScorer, k: int = 15, sample_fps: float = 2.0) -> None:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if sample_fps <= 0:
            raise ValueError(f"sample_fps must be > 0, got {sample_fps}")
        if not isinstance(scorer, TrueScorer):
            raise TypeError(f"scorer {type(scorer).__name__} does not implement TrueScorer")
        self.scorer, self.k, self.sample_fps = scorer, k, sample_fps

    def _plan(self, frames: np.ndarray, instruction: str, fps: float) -> tuple[np.ndarray, str, np.ndarray, list]:
        frames = check_video(frames)
        instruction = check_instruction(instruction)
        sampled, idx = resample(frames, fps, self.sample_fps)
        return sampled, instruction, idx, prefix_lengths(len(sampled), self.k)

    @staticmethod
    def _result(idx: np.ndarray, lengths: list[int], log_probs: np.ndarray, n_frames: int) -> RewardResult:
        ends = idx[np.asarray(lengths) - 1]
        log_probs = np.asarray(log_probs, dtype=np.float64)
        return RewardResult(prefix_ends=ends, log_probs=log_probs,
                            progress=interpolate(ends, minmax(log_probs), n_frames),
                            final_log_prob=float(log_probs[-1]))

    def score(self, frames: np.ndarray, instruction: str, fps: float) -> RewardResult:
        """TOPReward of one trajectory (``frames``: ``(T, H, W, 3)`` uint8 at ``fps`` frames per second).

        Raises: ValueError: empty video, missing instruction, mixed sizes / wrong dtype or shape.
        """
        sampled, instruction, idx, lengths = self._plan(frames, instruction, fps)
        return self._result(idx, lengths, self.scorer.true_log_probs(sampled, instruction, lengths), len(frames))

    def score_batch(self, videos: Sequence[np.ndarray], instructions: Sequence[str],
                    fps: float | Sequence[float]) -> list[RewardResult]:
        """:meth:`score` of each video, the backend called once for all (it may batch them)."""
        fps_list = [fps] * len(videos) if np.isscalar(fps) else list(fps)
        if not len(videos) == len(instructions) == len(fps_list):
            raise ValueError(f"videos, instructions and fps differ in length: {len(videos)}, {len(instructions)}, "
                             f"{len(fps_list)}")
        plans = [self._plan(v, i, f) for v, i, f in zip(videos, instructions, fps_list, strict=True)]
        log_probs = self.scorer.true_log_probs_batch([p[0] for p in plans], [p[1] for p in plans],
                                                     [p[3] for p in plans])
        return [self._result(p[2], p[3], lp, len(v)) for p, lp, v in zip(plans, log_probs, videos, strict=True)]

    def static_control(self, frames: np.ndarray, instruction: str, fps: float) -> RewardResult:
        """:meth:`score` of the static-frame control: the first frame repeated for the video's length."""
        frames = check_video(frames)
        return self.score(np.repeat(frames[:1], len(frames), axis=0), instruction, fps)


class SuccessDetector:
    """Success = final log-probability of ``True`` >= ``threshold``; :meth:`fit` picks the threshold on training
    rollouts."""

    def __init__(self, threshold: float = 0.0) -> None:
        self.threshold = float(threshold)

    def fit(self, final_log_probs: Sequence[float], successes: Sequence[bool]) -> SuccessDetector:
        """Chooses the threshold maximising balanced accuracy on ``(final_log_probs, successes)`` (midpoints between
        sorted distinct scores; ties broken towards the middle candidate). Returns self.

        Raises: ValueError: lengths differ, or the rollouts are all successes or all failures.
        """
        x, y = np.asarray(final_log_probs, dtype=np.float64), np.asarray(successes, dtype=bool)
        if x.shape != y.shape or x.ndim != 1:
            raise ValueError(f"final_log_probs and successes must be 1-D of one length, got {x.shape}, {y.shape}")
        if y.all() or not y.any():
            raise ValueError("successes must hold both successes and failures to fit a threshold")
        values = np.unique(x)
        candidates = np.concatenate([[values[0] - 1.0], (values[:-1] + values[1:]) / 2, [values[-1] + 1.0]])
        pred = x[None, :] >= candidates[:, None]
        balanced = 0.5 * (pred[:, y].mean(axis=1) + (~pred[:, ~y]).mean(axis=1))
        best = np.flatnonzero(balanced == balanced.max())
        self.threshold = float(candidates[best[len(best) // 2]])
        return self

    def predict(self, final_log_probs: Sequence[float]) -> np.ndarray:
        """Boolean success per rollout."""
        return np.asarray(final_log_probs, dtype=np.float64) >= self.threshold


# ------------------------------------------------------------------------------------------------ GVL baseline
GVL_PROMPT = ("You are shown {n} frames of a robot manipulation video in random order, for the task: {instruction}\n"
              "For each frame, state the task completion percentage (0% at the start, 100% when done), one line per "
              "frame, as 'Frame i: p%'.")
_GVL_LINE = re.compile(r"frame\s*(\d+)\s*[:=-]\s*(-?\d+(?:\.\d+)?)\s*%", re.IGNORECASE)


def gvl_prompt(frames: np.ndarray, instruction: str, seed: int = 0) -> tuple[np.ndarray, str, np.ndarray]:
    """The GVL baseline's input: ``(shuffled frames, prompt, permutation)``; shuffled ``Frame i`` (1-based) is
    original frame ``permutation[i-1]``. Raises: ValueError: bad frames or instruction."""
    frames, instruction = check_video(frames), check_instruction(instruction)
    perm = np.random.default_rng(seed).permutation(len(frames))
    return frames[perm], GVL_PROMPT.format(n=len(frames), instruction=instruction), perm


def parse_gvl(text: str, permutation: np.ndarray) -> np.ndarray:
    """Percentages ``Frame i: p%`` of the answer ``text`` put back into original frame order, as progress in [0, 1]
    (a frame the answer misses is NaN).

    Raises: ValueError: no ``Frame i: p%`` line parses (the message quotes the start of the answer).
    """
    permutation = np.asarray(permutation)
    progress = np.full(len(permutation), np.nan)
    found = 0
    for match in _GVL_LINE.finditer(text):
        i = int(match.group(1)) - 1
        if 0 <= i < len(permutation):
            progress[permutation[i]] = float(match.group(2)) / 100.0
            found += 1
    if not found:
        raise ValueError(f"no 'Frame i: p%' line parses in the GVL answer {text[:120]!r}")
    return progress
