"""Small statistics helpers for evaluation reports (binomial confidence intervals)."""

from __future__ import annotations

import math
import operator
from statistics import NormalDist

__all__ = ["wilson_interval"]


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial success rate.

    Same numbers as ``scipy.stats.binomtest(successes, n).proportion_ci(confidence, "wilson")``
    (without the continuity correction), computed with the standard library only so that
    evaluation does not need scipy at run time.

    Args:
        successes: number of successful episodes, ``0 <= successes <= n``.
        n: number of episodes, ``n >= 1``.
        confidence: two-sided confidence level in (0, 1).

    Returns:
        ``(low, high)``, both in [0, 1].

    Raises:
        TypeError: if ``successes`` or ``n`` is not an integer (bools are refused too).
        ValueError: if ``n < 1``, ``successes`` is outside ``[0, n]`` or ``confidence`` is not in (0, 1).
    """
    successes, n = _as_count("successes", successes), _as_count("n", n)
    if n < 1:
        raise ValueError(f"wilson_interval: n must be >= 1, got {n}")
    if not 0 <= successes <= n:
        raise ValueError(f"wilson_interval: successes must be in [0, n={n}], got {successes}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"wilson_interval: confidence must be in (0, 1), got {confidence}")
    z = NormalDist().inv_cdf(0.5 + confidence / 2.0)
    z2 = z * z
    p = successes / n
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2.0 * n)) / denom
    half_width = z * math.sqrt(p * (1.0 - p) / n + z2 / (4.0 * n * n)) / denom
    return max(0.0, centre - half_width), min(1.0, centre + half_width)


def _as_count(name: str, value: object) -> int:
    """Return ``value`` as a Python int, refusing bools and non-integers with a TypeError naming ``name``."""
    if isinstance(value, bool):
        raise TypeError(f"wilson_interval: {name} must be an integer, got bool {value!r}")
    try:
        return operator.index(value)  # accepts numpy integers, refuses floats
    except TypeError:
        raise TypeError(f"wilson_interval: {name} must be an integer, got {type(value).__name__} {value!r}") from None
