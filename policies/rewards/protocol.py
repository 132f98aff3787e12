"""What every TOPReward backend implements: the log-probability of the final ``True`` of :data:`PROMPT`.

A backend (``hf``: a transformers VLM; ``native``: :mod:`policies.rewards.native`) is a :class:`TrueScorer`; the
method around it (prefixes, normalisation, interpolation, metrics) is backend-independent.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

# The text after the frames (TOPReward, arXiv 2602.19313): no chat template, the user turn left open; the reward is
# the log-probability of the final "True" given the frames and everything before it.
PROMPT = ("The above video shows a robot manipulation trajectory that completes the following task: {instruction} "
          "Decide whether the above statement is True or not. The answer is: True")


@runtime_checkable
class TrueScorer(Protocol):
    """Scores prefixes of a video: log P("True" | frames[:n], PROMPT's text before its final "True")."""

    def true_log_probs(self, frames: np.ndarray, instruction: str, prefix_lengths: Sequence[int]) -> np.ndarray:
        """``(K,)`` float64 log-probabilities, one per prefix length ``n_k`` (increasing, in 1..T).

        ``frames``: ``(T, H, W, 3)`` uint8, already resampled to 2 FPS.
        """
        ...

    def true_log_probs_batch(self, videos: Sequence[np.ndarray], instructions: Sequence[str],
                             prefix_lengths: Sequence[Sequence[int]]) -> list[np.ndarray]:
        """:meth:`true_log_probs` of several videos (one list of prefix lengths per video)."""
        ...
