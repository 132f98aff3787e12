"""The bounded key/value cache of the streaming model (StreamingVLM's memory, DESIGN.md section 6).

Layout of every layer's buffer, along the token axis (keys are stored *unrotated*: rotary positions are applied at
attention time from each token's index in the cache, so after an eviction the window is renumbered and positions
never grow)::

    [ instruction tokens (P) | sink frames (n_sink x T) | recent frames (<= window x T) | free ]
      pinned forever           pinned forever             oldest evicted first

Before a frame is written, a full cache evicts its oldest recent frame by shifting the recent part left by one
frame in place (no allocation, so resident memory stays flat). With ``max_frames=None`` (memory=full) nothing is
evicted and the buffers double when full (memory grows with the stream: the baseline).
"""

from __future__ import annotations

import torch


class KVCache:
    """Per-layer key/value buffers (B, heads, capacity, head_dim) for a batch of streams (module docstring).

    Args:
        prefix: per layer, the instruction's (keys, values), each (B, heads, P, head_dim); P may be 0.
        prefix_valid: (B, P) bool, False at padding (masked out as keys).
        tokens_per_frame: T, tokens each frame adds.
        sink_frames: frames pinned after the instruction.
        max_frames: frames held at most (sinks included), or None for no eviction.
    """

    def __init__(self, prefix: list[tuple[torch.Tensor, torch.Tensor]], prefix_valid: torch.Tensor,
                 tokens_per_frame: int, sink_frames: int, max_frames: int | None) -> None:
        self.tokens_per_frame, self.sink_frames, self.max_frames = tokens_per_frame, sink_frames, max_frames
        self.n_prefix = prefix_valid.shape[1]
        frames = max_frames if max_frames is not None else 64
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        for k, v in prefix:
            self.keys.append(self._buffer(k, self.n_prefix + frames * tokens_per_frame))
            self.values.append(self._buffer(v, self.n_prefix + frames * tokens_per_frame))
        batch = prefix_valid.shape[0]
        self.bias = torch.zeros(batch, 1, 1, self.keys[0].shape[2], dtype=self.keys[0].dtype,
                                device=self.keys[0].device)  # additive attention bias: -inf at padding
        self.bias[:, 0, 0, :self.n_prefix].masked_fill_(~prefix_valid, float("-inf"))
        self.length = self.n_prefix  # tokens held
        self.n_frames = 0  # frames held
        self.frames_seen = 0  # frames written since the cache was made
        self.evicted = 0  # frames evicted
        self.previous_frame: torch.Tensor | None = None  # (B, 3, S, S), the last frame stepped (frame_change)
        self.thumbs: torch.Tensor | None = None  # (B, frame capacity, D): the held frames' thumbnails (replay_match)

    @staticmethod
    def _buffer(prefix: torch.Tensor, capacity: int) -> torch.Tensor:
        """A zeroed (B, heads, capacity, head_dim) buffer starting with ``prefix``."""
        batch, heads, length, head_dim = prefix.shape
        buffer = prefix.new_zeros(batch, heads, capacity, head_dim)
        buffer[:, :, :length] = prefix
        return buffer

    @property
    def capacity(self) -> int:
        """Tokens the buffers hold now (fixed unless ``max_frames`` is None)."""
        return self.keys[0].shape[2]

    def open_frame(self) -> int:
        """Makes room for one more frame (evicting or growing) and returns the token index where it starts."""
        size = self.tokens_per_frame
        if self.max_frames is not None and self.n_frames == self.max_frames:
            start = self.n_prefix + self.sink_frames * size  # first recent token
            if start < self.length:  # window > 0: shift the recent frames left by one frame
                for buffer in (*self.keys, *self.values):
                    buffer[:, :, start:self.length - size] = buffer[:, :, start + size:self.length].clone()
                if self.thumbs is not None:
                    sinks = self.sink_frames
                    self.thumbs[:, sinks:self.n_frames - 1] = self.thumbs[:, sinks + 1:self.n_frames].clone()
            self.length -= size
            self.n_frames -= 1
            self.evicted += 1
        elif self.length + size > self.capacity:
            self._grow(2 * self.capacity)
        start = self.length
        self.length += size
        self.n_frames += 1
        self.frames_seen += 1
        return start

    def _grow(self, capacity: int) -> None:
        """Reallocates every buffer with ``capacity`` tokens (memory=full only)."""
        for buffers in (self.keys, self.values):
            for i, old in enumerate(buffers):
                buffers[i] = self._buffer(old[:, :, :self.length], capacity)
        bias = self.bias.new_zeros(*self.bias.shape[:3], capacity)
        bias[..., :self.length] = self.bias[..., :self.length]
        self.bias = bias

    def thumbnails(self, thumb: torch.Tensor) -> torch.Tensor:
        """Stores ``thumb`` (B, D), the thumbnail of the frame just opened (:meth:`open_frame`), and returns those of
        every held frame, oldest first, this one last: (B, frames held, D)."""
        if self.thumbs is None or self.thumbs.shape[1] < self.n_frames:
            grown = thumb.new_zeros(thumb.shape[0], max(self.max_frames or 0, 2 * self.n_frames), thumb.shape[1])
            if self.thumbs is not None:
                grown[:, :self.thumbs.shape[1]] = self.thumbs
            self.thumbs = grown
        self.thumbs[:, self.n_frames - 1] = thumb
        return self.thumbs[:, :self.n_frames]

    def write(self, layer: int, start: int, k: torch.Tensor, v: torch.Tensor) -> None:
        """Stores one frame's unrotated keys and values (B, heads, T, head_dim) of ``layer`` at token ``start``."""
        self.keys[layer][:, :, start:start + k.shape[2]] = k
        self.values[layer][:, :, start:start + v.shape[2]] = v

    def view(self, layer: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``layer``'s held keys, values (B, heads, length, head_dim) and attention bias (B, 1, 1, length)."""
        return (self.keys[layer][:, :, :self.length], self.values[layer][:, :, :self.length],
                self.bias[..., :self.length])
