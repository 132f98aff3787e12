"""The training loss of the streaming model: every head at every frame of a clip, against the twin's labels."""

from __future__ import annotations

import dataclasses

import torch
from torch.nn import functional as F

from perception.streaming.config import EVENTS
from perception.streaming.model import StreamOutputs


@dataclasses.dataclass
class StreamTargets:
    """Per-frame labels of a batch of clips, (B, N, ...) like :meth:`StreamingModel.forward`'s outputs.

    Raises:
        ValueError: shapes that disagree with ``pose`` (B, N, 3), or events without len(EVENTS) columns.
    """

    pose: torch.Tensor  # (B, N, 3) block x, y (m), yaw (rad)
    progress: torch.Tensor  # (B, N) in [0, 1] (e.g. the twin's coverage, normalised)
    success: torch.Tensor  # (B, N) 0 / 1
    events: torch.Tensor  # (B, N, len(EVENTS)) 0 / 1
    mask: torch.Tensor | None = None  # (B, N) bool: frames that count (False at padding); None: all
    pose_mask: torch.Tensor | None = None  # (B, N) bool: frames whose pose counts (False off the table); None: mask

    def __post_init__(self) -> None:
        lead = tuple(self.pose.shape[:2])
        if self.pose.ndim != 3 or self.pose.shape[2] != 3:
            raise ValueError(f"StreamTargets.pose must be (B, N, 3), got {tuple(self.pose.shape)}")
        for name in ("progress", "success", "mask", "pose_mask"):
            value = getattr(self, name)
            if value is not None and tuple(value.shape) != lead:
                raise ValueError(f"StreamTargets.{name} must be {lead}, got {tuple(value.shape)}")
        if tuple(self.events.shape) != (*lead, len(EVENTS)):
            raise ValueError(f"StreamTargets.events must be {(*lead, len(EVENTS))}, got {tuple(self.events.shape)}")


def streaming_loss(outputs: StreamOutputs, targets: StreamTargets, pose_scale: float = 0.25,
                   weights: dict[str, float] | None = None,
                   event_pos_weight: float = 1.0) -> tuple[torch.Tensor, dict[str, float]]:
    """``(loss, terms)``: the weighted sum of per-frame terms, masked frames excluded, and each term as a float
    (``losses/<name>``). Terms: ``pose_xy`` (MSE of x, y in units of ``pose_scale`` m), ``pose_yaw`` (MSE of
    (cos, sin) against the yaw's), ``progress`` and ``success`` and ``events`` (binary cross-entropy on logits;
    progress is a soft target). The pose terms count only ``pose_mask`` frames (the block on the table).
    ``weights`` maps a term to its weight (1 when absent). ``event_pos_weight`` weighs the frames where an event
    happens against those where it does not (events are rare: a push labels 2 frames of a 10 s episode).

    Raises:
        ValueError: a weight for a term that does not exist, or ``event_pos_weight`` <= 0.
    """
    weights = weights or {}
    if event_pos_weight <= 0:
        raise ValueError(f"streaming_loss event_pos_weight must be > 0, got {event_pos_weight}")
    yaw = targets.pose[..., 2]
    per_frame = {
        "pose_xy": ((outputs.pose_xy - targets.pose[..., :2]) / pose_scale).square().mean(-1),
        "pose_yaw": (outputs.pose_cs - torch.stack((yaw.cos(), yaw.sin()), -1)).square().mean(-1),
        "progress": F.binary_cross_entropy_with_logits(outputs.progress_logit, targets.progress.float(),
                                                       reduction="none"),
        "success": F.binary_cross_entropy_with_logits(outputs.success_logit, targets.success.float(),
                                                      reduction="none"),
        "events": F.binary_cross_entropy_with_logits(
            outputs.event_logits, targets.events.float(), reduction="none",
            pos_weight=outputs.event_logits.new_tensor(event_pos_weight)).mean(-1),
    }
    unknown = sorted(set(weights) - set(per_frame))
    if unknown:
        raise ValueError(f"streaming_loss weights name unknown terms {unknown}; terms are {sorted(per_frame)}")
    mask = torch.ones_like(yaw) if targets.mask is None else targets.mask.float()
    pose_mask = mask if targets.pose_mask is None else mask * targets.pose_mask.float()
    terms = {}
    for name, value in per_frame.items():
        counted = pose_mask if name.startswith("pose") else mask
        # where() rather than a product: a pose label off the table may be huge (a block falling for seconds)
        terms[name] = torch.where(counted > 0, value, 0.0).sum() / counted.sum().clamp(min=1)
    loss = sum(weights.get(name, 1.0) * value for name, value in terms.items())
    return loss, {f"losses/{name}": float(value.detach()) for name, value in terms.items()}
