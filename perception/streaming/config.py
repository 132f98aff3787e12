"""The streaming video model's configuration: frame encoder, causal transformer, and the bounded memory policy."""

from __future__ import annotations

import dataclasses
import math

MEMORY_MODES = ("sinks", "window", "full")
EVENTS = ("block_moved_externally", "contact_lost", "block_off_table", "camera_frozen_or_replayed")


@dataclasses.dataclass
class StreamingConfig:
    """Shape and memory of :class:`perception.streaming.model.StreamingModel` (frames, tokens, units m).

    Memory (DESIGN.md section 6, StreamingVLM): each frame becomes ``tokens_per_frame`` tokens. ``memory=sinks``
    keeps the first ``n_sink`` frames forever (attention sinks) plus the most recent ``window`` frames (the current
    one included); ``window`` keeps only the recent ``window`` frames; ``full`` never evicts (the growing baseline).
    Rotary positions are indices within the cache, so they never exceed ``memory_frames * tokens_per_frame``
    (+ instruction tokens) in the bounded modes.

    Raises:
        ValueError: a field out of range (the message names it).
    """

    image_size: int = 64  # px, square RGB frames
    encoder_channels: list[int] = dataclasses.field(default_factory=lambda: [16, 32, 48, 64])  # stride-2 3x3 convs
    tokens_per_frame: int = 4  # a square number: the encoder's last feature map is pooled to sqrt x sqrt cells
    frame_change: bool = True  # feed each frame's change from the previous one (per cell of a 4x4 grid; frozen = 0)
    replay_match: bool = True  # feed how closely each frame matches an older frame in memory (a replay: exactly)
    keypoints: int = 16  # spatial-softmax keypoints, added to every cell token (0: none)
    keypoint_layer: int = 1  # the conv whose output map feeds the keypoints (index into encoder_channels; 16x16)
    encoder_norm: bool = True  # GroupNorm after every conv of the frame encoder
    d_model: int = 64  # transformer width
    n_layers: int = 2  # transformer blocks
    n_heads: int = 4  # attention heads (d_model / n_heads must be even, for rotary pairs)
    mlp_ratio: int = 2  # MLP hidden width = mlp_ratio * d_model
    memory: str = "sinks"  # sinks | window | full
    n_sink: int = 1  # frames kept forever as attention sinks (memory=sinks)
    window: int = 32  # recent frames kept, the current one included (memory=sinks|window)
    rope_base: float = 10000.0  # rotary frequency base
    vocab_size: int = 256  # instruction tokens are UTF-8 bytes; 0 is padding
    max_instruction_tokens: int = 32  # longer instructions are cut
    pose_scale: float = 0.25  # m; the pose head's x, y are predicted in units of pose_scale

    def __post_init__(self) -> None:
        if self.memory not in MEMORY_MODES:
            raise ValueError(f"StreamingConfig.memory must be one of {MEMORY_MODES}, got {self.memory!r}")
        positive = ("image_size", "tokens_per_frame", "d_model", "n_layers", "n_heads", "mlp_ratio", "window",
                    "rope_base", "vocab_size", "max_instruction_tokens", "pose_scale")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"StreamingConfig.{name} must be > 0, got {getattr(self, name)}")
        if self.keypoints < 0:
            raise ValueError(f"StreamingConfig.keypoints must be >= 0, got {self.keypoints}")
        if not -len(self.encoder_channels) <= self.keypoint_layer < len(self.encoder_channels):
            raise ValueError(f"StreamingConfig.keypoint_layer must index encoder_channels "
                             f"({len(self.encoder_channels)} convs), got {self.keypoint_layer}")
        if self.n_sink < (1 if self.memory == "sinks" else 0):
            raise ValueError(f"StreamingConfig.n_sink must be >= 1 with memory=sinks (>= 0 otherwise), got "
                             f"{self.n_sink}")
        if not self.encoder_channels or min(self.encoder_channels) <= 0:
            raise ValueError(f"StreamingConfig.encoder_channels must be positive widths, got {self.encoder_channels}")
        if self.d_model % self.n_heads or (self.d_model // self.n_heads) % 2:
            raise ValueError(f"StreamingConfig.d_model ({self.d_model}) / n_heads ({self.n_heads}) must be an even "
                             f"integer")
        grid = math.isqrt(self.tokens_per_frame)
        feature = self.image_size >> len(self.encoder_channels)
        if grid * grid != self.tokens_per_frame or feature < grid or self.image_size % (1 << len(self.encoder_channels)):
            raise ValueError(f"StreamingConfig.tokens_per_frame must be a square number <= the encoder's last feature "
                             f"map ({feature}x{feature} for image_size {self.image_size} and "
                             f"{len(self.encoder_channels)} stride-2 convs), got {self.tokens_per_frame}")

    @property
    def sink_frames(self) -> int:
        """Frames pinned in memory: ``n_sink`` with memory=sinks, else 0."""
        return self.n_sink if self.memory == "sinks" else 0

    @property
    def memory_frames(self) -> int | None:
        """Frames the cache holds at most (current one included); None for memory=full (unbounded)."""
        return None if self.memory == "full" else self.sink_frames + self.window

    @property
    def grid(self) -> int:
        """Cells per side of the pooled feature map (sqrt of tokens_per_frame)."""
        return math.isqrt(self.tokens_per_frame)
