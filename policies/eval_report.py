"""What an evaluation shows a reader besides its rate: the per-instruction success table, captions on videos."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import cv2
import numpy as np

from policies.stats_utils import wilson_interval

__all__ = ["format_instruction_table", "instruction_caption", "overlay_text", "per_instruction_table"]

_FONT = cv2.FONT_HERSHEY_SIMPLEX


def per_instruction_table(episodes: Sequence[Mapping[str, Any]], confidence: float = 0.95) -> dict[str, dict]:
    """Success per instruction: episodes grouped by their ``target`` (the env's ``info["target_color"]``) when
    they have one, else by their ``task`` string; episodes with neither are left out.

    Returns:
        ``{group: {"n_episodes", "n_success", "success_rate", "ci_low", "ci_high"}}`` sorted by group, the
        interval a Wilson interval at ``confidence``; ``{}`` when no episode has an instruction.
    """
    groups: dict[str, list[bool]] = {}
    for episode in episodes:
        group = episode.get("target") or episode.get("task")
        if group is not None:
            groups.setdefault(str(group), []).append(bool(episode["success"]))
    table = {}
    for group in sorted(groups):
        n, n_success = len(groups[group]), sum(groups[group])
        low, high = wilson_interval(n_success, n, confidence)
        table[group] = {"n_episodes": n, "n_success": n_success, "success_rate": n_success / n, "ci_low": low,
                        "ci_high": high}
    return table


def format_instruction_table(table: Mapping[str, Mapping[str, Any]], title: str = "") -> str:
    """The table of :func:`per_instruction_table` as aligned text lines (rows indented, so no row reads as a
    ``name: value`` figure)."""
    width = max([len("instruction"), *(len(g) for g in table)])
    lines = [f"per-instruction success{f' ({title})' if title else ''}",
             f"  {'instruction':<{width}}  {'n':>4}  {'success':>7}  95% CI"]
    for group, row in table.items():
        lines.append(f"  {group:<{width}}  {row['n_episodes']:>4}  {row['success_rate']:>7.3f}  "
                     f"[{row['ci_low']:.3f}, {row['ci_high']:.3f}]")
    return "\n".join(lines)


def instruction_caption(episode: Mapping[str, Any]) -> list[str]:
    """The caption lines of an episode's video: its instruction, and what the policy was told when that differs
    (a shuffled instruction); ``[]`` without an instruction."""
    task, told = episode.get("task"), episode.get("policy_task")
    if task is None:
        return []
    return [str(task)] if told is None or told == task else [f"env: {task}", f"policy: {told}"]


def overlay_text(frame: np.ndarray, lines: Sequence[str]) -> np.ndarray:
    """A copy of ``frame`` ((H, W, 3) uint8) with ``lines`` written in white on a darkened band along its top.

    Lines are wrapped at word boundaries to the frame's width; the font scales with the width (0.34 at 240 px).

    Raises:
        ValueError: ``frame`` is not an (H, W, 3) uint8 array.
    """
    if not (isinstance(frame, np.ndarray) and frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3):
        raise ValueError(f"overlay_text: expected an (H, W, 3) uint8 frame, got {getattr(frame, 'shape', frame)!r}")
    height, width = frame.shape[:2]
    scale, margin = max(0.2, width / 700), max(2, width // 80)
    wrapped = [w for line in lines for w in _wrap(str(line), width - 2 * margin, scale)]
    out = np.ascontiguousarray(frame).copy()
    if not wrapped:
        return out
    (_, text_h), baseline = cv2.getTextSize("Ag", _FONT, scale, 1)
    line_h = text_h + baseline + margin
    band = min(height, margin + line_h * len(wrapped))
    out[:band] = (out[:band].astype(np.uint16) * 2 // 5).astype(np.uint8)
    for i, line in enumerate(wrapped):
        y = margin + text_h + i * line_h
        cv2.putText(out, line, (margin, y), _FONT, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def _wrap(text: str, max_width: int, scale: float) -> list[str]:
    """``text`` split into lines no wider than ``max_width`` pixels (a single over-long word stays whole)."""
    lines: list[str] = []
    for word in text.split():
        candidate = f"{lines[-1]} {word}" if lines else word
        if lines and cv2.getTextSize(candidate, _FONT, scale, 1)[0][0] <= max_width:
            lines[-1] = candidate
        else:
            lines.append(word)
    return lines
