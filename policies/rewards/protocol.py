"""The one interface every TOPReward backend implements: the log-probability of the prompt's final ``True``.

A backend (``hf``: a transformers Qwen-VL-class model; ``native``: our own small VLM) is given frames already
resampled (:func:`policies.rewards.topreward.resample`) and scores prefixes of them; everything else of the method
(prefix choice, normalisation, interpolation, success detection) is backend-independent and lives in
:mod:`policies.rewards.topreward`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

__all__ = ["PROMPT", "TrueScorer", "score_batch_by_loop"]

# The text after the frames: no chat template, the user turn left open; the final word `True` is the scored token.
PROMPT = ("The above video shows a robot manipulation trajectory that completes the following task: {instruction} "
          "Decide whether the above statement is True or not. The answer is: True")


@runtime_checkable
class TrueScorer(Protocol):
    """Scores prefixes of one video: ``log p(True | frames[:n_k], prompt text before True)`` for each ``n_k``."""

    def true_log_probs(self, frames: np.ndarray, instruction: str, prefix_lengths: Sequence[int]) -> np.ndarray:
        """``(K,)`` float64 log-probabilities of the final ``True`` for each prefix length (1..T, increasing) of
        ``frames`` (``(T, H, W, 3)`` uint8, already resampled)."""
        ...

    def true_log_probs_batch(self, videos: Sequence[np.ndarray], instructions: Sequence[str],
                             prefix_lengths: Sequence[Sequence[int]]) -> list[np.ndarray]:
        """:meth:`true_log_probs` of each video (a default loop is fine for backends that do not batch)."""
        ...


def score_batch_by_loop(scorer: TrueScorer, videos: Sequence[np.ndarray], instructions: Sequence[str],
                        prefix_lengths: Sequence[Sequence[int]]) -> list[np.ndarray]:
    """The default ``true_log_probs_batch``: one :meth:`TrueScorer.true_log_probs` call per video.

    Raises:
        ValueError: the three sequences differ in length.
    """
    if not len(videos) == len(instructions) == len(prefix_lengths):
        raise ValueError(f"videos, instructions and prefix_lengths differ in length: {len(videos)}, "
                         f"{len(instructions)}, {len(prefix_lengths)}")
    return [scorer.true_log_probs(v, i, p) for v, i, p in zip(videos, instructions, prefix_lengths, strict=True)]
