"""Building blocks of the streaming model: the per-frame conv encoder, rotary positions, and a pre-norm transformer
block whose attention takes explicit key positions (so a cache can renumber them) and an explicit mask."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from perception.keypoints import SpatialSoftmax
from perception.streaming.config import StreamingConfig


class FrameEncoder(nn.Module):
    """(B, 3, S, S) float frames in [0, 1] -> (B, tokens_per_frame, d_model) tokens: stride-2 3x3 convs (GELU; with
    ``encoder_norm``, GroupNorm before it), a 1x1 projection to d_model, average pooling to a grid x grid map, one
    learnt embedding per cell, LayerNorm.

    With ``keypoints`` K > 0, the expected (x, y) of K spatial-softmax maps of conv ``keypoint_layer``'s output (the
    second, 16x16 for 64x64 frames, by default) are projected to d_model and added to every cell: where the block
    and pads are, to a fraction of a cell, which average pooling alone does not keep.
    """

    def __init__(self, config: StreamingConfig) -> None:
        super().__init__()
        convs: list[nn.Module] = []
        width = 3
        for channels in config.encoder_channels:
            norm = [nn.GroupNorm(math.gcd(8, channels), channels)] if config.encoder_norm else []
            convs.append(nn.Sequential(nn.Conv2d(width, channels, 3, stride=2, padding=1), *norm, nn.GELU()))
            width = channels
        split = config.keypoint_layer % len(convs) + 1
        self.early = nn.Sequential(*convs[:split])
        self.late = nn.Sequential(*convs[split:], nn.Conv2d(width, config.d_model, 1))
        self.keypoints = None
        if config.keypoints:
            early_width = config.encoder_channels[split - 1]
            self.keypoints = nn.Sequential(SpatialSoftmax(early_width, config.keypoints),
                                           nn.Linear(2 * config.keypoints, config.d_model))
        self.grid = config.grid
        self.cell = nn.Parameter(torch.zeros(config.tokens_per_frame, config.d_model))
        self.norm = nn.LayerNorm(config.d_model)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """Tokens of each frame, (B, tokens_per_frame, d_model)."""
        early = self.early(frames * 2 - 1)
        tokens = F.adaptive_avg_pool2d(self.late(early), self.grid).flatten(2).transpose(1, 2) + self.cell
        if self.keypoints is not None:
            tokens = tokens + self.keypoints(early)[:, None]
        return self.norm(tokens)


class Rotary:
    """Rotary position tables (cos, sin) for positions 0..n-1, computed in float64 so far positions stay exact to
    float32 precision; grown on demand (memory=full)."""

    def __init__(self, head_dim: int, base: float) -> None:
        self.inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
        self.cos = self.sin = torch.zeros(0, head_dim // 2)

    def tables(self, n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(cos, sin) of shape (>= n, head_dim / 2), float32, on ``device``."""
        if len(self.cos) < n or self.cos.device != device:
            size = max(n, 2 * len(self.cos), 64)
            angles = torch.arange(size, dtype=torch.float64)[:, None] * self.inv_freq
            self.cos, self.sin = angles.cos().float().to(device), angles.sin().float().to(device)
        return self.cos, self.sin

    def apply(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """``x`` (..., L, head_dim) rotated by its positions (L,) or (..., L) (integers >= 0)."""
        positions = positions.to(x.device)
        cos_t, sin_t = self.tables(int(positions.max()) + 1 if positions.numel() else 0, x.device)
        cos, sin = cos_t[positions].to(x.dtype), sin_t[positions].to(x.dtype)
        x1, x2 = x[..., 0::2], x[..., 1::2]
        return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2)


class Block(nn.Module):
    """Pre-norm transformer block: multi-head attention (projections only; the caller supplies rotated queries and
    keys through :meth:`attend`) and a GELU MLP."""

    def __init__(self, config: StreamingConfig) -> None:
        super().__init__()
        self.n_heads, self.head_dim = config.n_heads, config.d_model // config.n_heads
        self.norm1, self.norm2 = nn.LayerNorm(config.d_model), nn.LayerNorm(config.d_model)
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model)
        self.out = nn.Linear(config.d_model, config.d_model)
        hidden = config.mlp_ratio * config.d_model
        self.mlp = nn.Sequential(nn.Linear(config.d_model, hidden), nn.GELU(), nn.Linear(hidden, config.d_model))

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, L, d) -> q, k, v of shape (B, heads, L, head_dim), not yet rotated."""
        batch, length, _ = x.shape
        qkv = self.qkv(self.norm1(x)).view(batch, length, 3, self.n_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        return q, k, v

    def finish(self, x: torch.Tensor, scores: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """The block's output from its input ``x`` (B, L, d), attention ``scores`` (B, heads, L, K; -inf where
        masked) and values ``v`` (B, heads, K, head_dim)."""
        attended = (scores.softmax(-1) @ v).transpose(1, 2).flatten(2)
        x = x + self.out(attended)
        return x + self.mlp(self.norm2(x))
