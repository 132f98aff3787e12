"""The streaming video model: a causal transformer over per-frame tokens with a bounded memory, answering at every
frame (block pose, progress, success, events).

Two ways to run the same network, giving the same outputs (to float rounding):

* :meth:`StreamingModel.forward` — a clip (B, N, 3, S, S) in one causal pass, for training: every frame attends to
  the instruction, the sink frames and the recent ``window`` frames (itself included), exactly the context the
  streaming path has at that frame. Rotary positions are relative, so the window's renumbering after eviction is
  reproduced by rotating queries against pinned keys (instruction, sinks) at the *clamped* frame index
  ``min(t, memory_frames - 1)``, and against recent keys at the absolute one.
* :meth:`StreamingModel.step` — one frame per call against a :class:`~perception.streaming.cache.KVCache`
  (:meth:`StreamingModel.init_state`), for deployment: constant cost and memory per frame.

Cost (default config, 64x64 frames, forward FLOPs per frame, multiply-add = 2): encoder convs 3->16->32->48->64
at 32², 16², 8², 4² ≈ 0.9 + 2.4 + 1.8 + 0.9 MFLOP, keypoints of the 16x16 map 0.2 MFLOP, 1x1 projection 0.07
MFLOP; transformer 2 layers x 4 tokens (projections + MLP 8·d²·2 per token ≈ 0.07 MFLOP per token per layer) ≈ 0.5
MFLOP, attention over <= 33 frames x 4 tokens (+ 32 instruction tokens) ≈ 0.3 MFLOP; replay match 0.08 MFLOP;
heads 0.01 MFLOP: ~7.2 MFLOP per frame in all (:func:`forward_flops_per_frame`). A clip of 32 frames costs ~0.2
GFLOP forward, so training at batch 64 fits DESIGN.md 4b's CPU budget only with short clips or cached encoder
features; on this CPU the step path is bound by per-op overhead, not FLOPs.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn
from torch.nn import functional as F

from perception.streaming.cache import KVCache
from perception.streaming.config import EVENTS, StreamingConfig
from perception.streaming.layers import Block, FrameEncoder, Rotary

NEG_INF = float("-inf")
CHANGE_CELLS = 4  # the frame-change feature's grid (cells per side)
MATCH_SIZE = 32  # the replay-match feature's thumbnails (px per side)


def frame_change(frames: torch.Tensor, previous: torch.Tensor | None) -> torch.Tensor:
    """(B, CHANGE_CELLS**2 + 1) change of ``frames`` (B, 3, S, S) in [0, 1] from ``previous`` (same shape, or None
    for a stream's first frame): ``log1p`` of the mean absolute difference in grey levels per cell of a
    CHANGE_CELLS x CHANGE_CELLS grid, and a last column 1 when there is a previous frame. A frozen camera gives exact
    zeros where sensor noise alone gives ~1.2; a replayed or spliced segment starts with a jump."""
    if previous is None:
        return frames.new_zeros(frames.shape[0], CHANGE_CELLS ** 2 + 1)
    diff = F.adaptive_avg_pool2d((frames - previous).abs().mean(1, keepdim=True) * 255, CHANGE_CELLS)
    return torch.cat((diff.flatten(1).log1p(), frames.new_ones(frames.shape[0], 1)), dim=1)


def thumbnail(frames: torch.Tensor) -> torch.Tensor:
    """(B, MATCH_SIZE**2) grey levels (0-255) of ``frames`` (B, 3, S, S) in [0, 1], average-pooled to
    MATCH_SIZE x MATCH_SIZE: what :func:`replay_match` compares."""
    grey = frames.mean(1, keepdim=True)
    return F.adaptive_avg_pool2d(grey, MATCH_SIZE).flatten(1) * 255


def replay_match(thumb: torch.Tensor, memory: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """(..., 2) features of frames ``thumb`` (..., D) against remembered ones ``memory`` (..., M, D): ``log1p`` of
    the smallest mean absolute grey-level difference to a remembered frame where ``allowed`` (..., M) is True, and 1
    when there is any such frame (else both 0). A replayed frame matches a remembered one exactly (0), where a live
    one differs by its sensor noise at least (~0.7 for noise of 2 grey levels)."""
    distance = torch.cdist(thumb[..., None, :], memory, p=1)[..., 0, :] / thumb.shape[-1]
    allowed = allowed.expand_as(distance)
    nearest = distance.masked_fill(~allowed, float("inf")).min(-1).values
    found = allowed.any(-1)
    return torch.stack((torch.where(found, nearest, 0.0).log1p(), found.to(thumb.dtype)), dim=-1)


@dataclasses.dataclass
class StreamOutputs:
    """The heads' answers, shaped (B, ...) from :meth:`StreamingModel.step` and (B, N, ...) from ``forward``.

    ``pose_xy`` in m (world frame); ``pose_cs`` the unnormalised (cos, sin) of the block's yaw; logits are raw.
    """

    pose_xy: torch.Tensor  # (..., 2) m
    pose_cs: torch.Tensor  # (..., 2)
    progress_logit: torch.Tensor  # (...,)
    success_logit: torch.Tensor  # (...,)
    event_logits: torch.Tensor  # (..., len(EVENTS))

    @property
    def pose(self) -> torch.Tensor:
        """(..., 3): x, y (m), yaw (rad)."""
        theta = torch.atan2(self.pose_cs[..., 1], self.pose_cs[..., 0])
        return torch.cat((self.pose_xy, theta[..., None]), dim=-1)

    @property
    def progress(self) -> torch.Tensor:
        """Task progress in [0, 1]."""
        return self.progress_logit.sigmoid()

    @property
    def success_prob(self) -> torch.Tensor:
        """Probability the task has succeeded."""
        return self.success_logit.sigmoid()

    @property
    def event_probs(self) -> dict[str, torch.Tensor]:
        """Probability of each event of :data:`perception.streaming.config.EVENTS`, by name."""
        return {name: self.event_logits[..., i].sigmoid() for i, name in enumerate(EVENTS)}


def tokenize(instructions: list[str], max_tokens: int) -> torch.Tensor:
    """(B, P) int64 UTF-8 byte tokens of ``instructions``, cut to ``max_tokens``, right-padded with 0."""
    encoded = [list(text.encode("utf-8"))[:max_tokens] for text in instructions]
    tokens = torch.zeros(len(encoded), max((len(e) for e in encoded), default=0), dtype=torch.long)
    for i, e in enumerate(encoded):
        tokens[i, :len(e)] = torch.tensor(e, dtype=torch.long)
    return tokens


class StreamingModel(nn.Module):
    """The network (module docstring). Frames are float (..., 3, S, S) in [0, 1]; instructions are (B, P) tokens
    from :func:`tokenize` (0 = padding) or None."""

    def __init__(self, config: StreamingConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = FrameEncoder(config)
        self.embed = nn.Embedding(config.vocab_size, config.d_model, padding_idx=0)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.norm = nn.LayerNorm(config.d_model)
        self.head = nn.Sequential(nn.Linear(config.d_model, config.d_model), nn.GELU(),
                                  nn.Linear(config.d_model, 6 + len(EVENTS)))
        self.change = nn.Linear(CHANGE_CELLS ** 2 + 1, config.d_model) if config.frame_change else None
        self.match = nn.Linear(2, config.d_model) if config.replay_match else None
        self.rotary = Rotary(config.d_model // config.n_heads, config.rope_base)
        self.scale = (config.d_model // config.n_heads) ** -0.5

    # ------------------------------------------------------------------------------------------------- shared parts
    def _instruction(self, instruction: torch.Tensor | None, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Instruction embeddings (B, P, d) and validity (B, P) (P = 0 without one)."""
        device = self.embed.weight.device
        instruction = torch.zeros(batch, 0, dtype=torch.long) if instruction is None else instruction
        instruction = instruction.to(device)
        if instruction.ndim != 2 or instruction.shape[0] != batch:
            raise ValueError(f"instruction tokens must be (B={batch}, P), got {tuple(instruction.shape)}")
        instruction = instruction[:, :self.config.max_instruction_tokens]
        return self.embed(instruction), instruction != 0

    def _answer(self, tokens: torch.Tensor) -> StreamOutputs:
        """Heads on the mean of each frame's output tokens (..., T, d)."""
        raw = self.head(self.norm(tokens).mean(-2))
        return StreamOutputs(pose_xy=raw[..., 0:2] * self.config.pose_scale, pose_cs=raw[..., 2:4],
                             progress_logit=raw[..., 4], success_logit=raw[..., 5], event_logits=raw[..., 6:])

    def _check_frames(self, frames: torch.Tensor, dims: int) -> None:
        """Raises ValueError unless ``frames`` is float with ``dims`` dims ending (3, S, S)."""
        size, dtype = self.config.image_size, self.embed.weight.dtype
        if frames.ndim != dims or tuple(frames.shape[-3:]) != (3, size, size) or frames.dtype != dtype:
            lead = "(B, N" if dims == 5 else "(B"
            raise ValueError(f"frames must be {dtype} {lead}, 3, {size}, {size}) in [0, 1], got "
                             f"{tuple(frames.shape)} {frames.dtype}")

    # ---------------------------------------------------------------------------------------- one causal pass (train)
    def forward(self, frames: torch.Tensor, instruction: torch.Tensor | None = None) -> StreamOutputs:
        """All heads at every frame of clips ``frames`` (B, N, 3, S, S), each frame seeing only its streaming
        context (module docstring). Returns (B, N, ...) outputs.

        Raises:
            ValueError: frames not float (B, N, 3, S, S), or instruction not (B, P).
        """
        self._check_frames(frames, 5)
        batch, n_frames = frames.shape[:2]
        size = self.config.tokens_per_frame
        x_frames = self.encoder(frames.flatten(0, 1)).view(batch, n_frames, size, -1)
        if self.change is not None:
            previous = torch.cat((frames[:, :1], frames[:, :-1]), dim=1)
            change = frame_change(frames.flatten(0, 1), previous.flatten(0, 1)).view(batch, n_frames, -1)
            change[:, 0] = 0.0  # a stream's first frame has no previous one
            x_frames = x_frames + self.change(change)[:, :, None]
        if self.match is not None:
            thumbs = thumbnail(frames.flatten(0, 1)).view(batch, n_frames, -1)
            x_frames = x_frames + self.match(replay_match(thumbs, thumbs[:, None], self._match_allowed(n_frames)))[
                :, :, None]
        x_frames = x_frames.flatten(1, 2)
        x_prefix, valid = self._instruction(instruction, batch)
        n_prefix = x_prefix.shape[1]
        x = torch.cat((x_prefix, x_frames), dim=1)
        positions, clamped, pinned, mask = (t.to(x.device) for t in self._layout(n_prefix, n_frames, valid.cpu()))
        mask = mask.to(x.dtype)
        for block in self.blocks:
            q, k, v = block.project(x)
            k = self.rotary.apply(k, positions)
            scores = torch.where(pinned, self.rotary.apply(q, clamped) @ k.transpose(-1, -2),
                                 self.rotary.apply(q, positions) @ k.transpose(-1, -2))
            x = block.finish(x, scores * self.scale + mask, v)
        return self._answer(x[:, n_prefix:].view(batch, n_frames, size, -1))

    def _held(self, n_frames: int) -> torch.Tensor:
        """(N, N) bool: the frames (columns) the streaming memory holds when each frame (row) arrives, itself
        included: every earlier one, or with bounded memory the sinks and the recent window."""
        q, k = torch.arange(n_frames)[:, None], torch.arange(n_frames)[None, :]
        held = k <= q
        if self.config.memory_frames is not None:
            held &= (k < self.config.sink_frames) | (k > q - self.config.window)
        return held

    def _match_allowed(self, n_frames: int) -> torch.Tensor:
        """(N, N) bool: the frames each frame's replay match compares against, those its streaming memory holds
        other than itself and the frame before it (a frozen camera is frame_change's business)."""
        q, k = torch.arange(n_frames)[:, None], torch.arange(n_frames)[None, :]
        return self._held(n_frames) & (k < q - 1)

    def _layout(self, n_prefix: int, n_frames: int, valid: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """For a pass over P instruction tokens and N frames: absolute positions (L,), query positions against
        pinned keys (L,), which keys are pinned (L,) and the additive mask (B, 1, L, L)."""
        config, size = self.config, self.config.tokens_per_frame
        frame = torch.arange(n_frames).repeat_interleave(size)  # frame index of each frame token
        within = torch.arange(n_frames * size) % size
        cap = config.memory_frames or n_frames
        positions = torch.arange(n_prefix + n_frames * size)
        clamped = torch.cat((positions[:n_prefix], n_prefix + frame.clamp(max=cap - 1) * size + within))
        pinned = torch.cat((torch.ones(n_prefix, dtype=torch.bool), frame < config.sink_frames))
        seen = self._held(n_frames)[frame[:, None], frame[None, :]]
        allowed = torch.zeros(len(positions), len(positions), dtype=torch.bool)
        allowed[n_prefix:, n_prefix:] = seen
        allowed[:, :n_prefix] = True  # everything sees the instruction (its padding masked below)
        key_valid = torch.cat((valid, torch.ones(valid.shape[0], n_frames * size, dtype=torch.bool)), dim=1)
        allowed = (allowed[None] & key_valid[:, None, :]) | torch.eye(len(positions), dtype=torch.bool)  # no NaN rows
        mask = torch.zeros(allowed.shape).masked_fill(~allowed, NEG_INF)[:, None]
        return positions, clamped, pinned, mask

    # ---------------------------------------------------------------------------------------------- streaming (deploy)
    @torch.no_grad()
    def init_state(self, batch: int = 1, instruction: torch.Tensor | None = None) -> KVCache:
        """A fresh memory for ``batch`` streams, holding the instruction's keys and values (B, P tokens or None).

        Raises:
            ValueError: instruction not (B, P).
        """
        x, valid = self._instruction(instruction, batch)
        n_prefix = x.shape[1]
        positions = torch.arange(n_prefix)
        eye = torch.eye(n_prefix, dtype=torch.bool, device=x.device)
        allowed = valid[:, None, :] | eye
        mask = torch.zeros(allowed.shape, dtype=x.dtype, device=x.device).masked_fill(~allowed, NEG_INF)[:, None]
        prefix = []
        for block in self.blocks:
            q, k, v = block.project(x)
            prefix.append((k, v))
            scores = self.rotary.apply(q, positions) @ self.rotary.apply(k, positions).transpose(-1, -2)
            x = block.finish(x, scores * self.scale + mask, v)
        return KVCache(prefix, valid, self.config.tokens_per_frame, self.config.sink_frames,
                       self.config.memory_frames)

    @torch.no_grad()
    def step(self, cache: KVCache, frames: torch.Tensor) -> StreamOutputs:
        """All heads for one new frame per stream, ``frames`` (B, 3, S, S); updates ``cache`` (evicting the oldest
        recent frame when it is full). Returns (B, ...) outputs.

        Raises:
            ValueError: frames not float (B, 3, S, S).
        """
        self._check_frames(frames, 4)
        x = self.encoder(frames)
        if self.change is not None:
            x = x + self.change(frame_change(frames, cache.previous_frame))[:, None]
            cache.previous_frame = frames.clone()
        size = x.shape[1]
        start = cache.open_frame()
        if self.match is not None:  # against the frames held, less the one before this (the newest held)
            thumb = thumbnail(frames)
            held = cache.thumbnails(thumb)
            allowed = torch.arange(held.shape[1], device=x.device) < held.shape[1] - 2
            x = x + self.match(replay_match(thumb, held, allowed))[:, None]
        query_positions = torch.arange(start, start + size)
        for layer, block in enumerate(self.blocks):
            q, k, v = block.project(x)
            cache.write(layer, start, k, v)
            keys, values, bias = cache.view(layer)
            keys = self.rotary.apply(keys, torch.arange(keys.shape[2]))
            scores = self.rotary.apply(q, query_positions) @ keys.transpose(-1, -2)
            x = block.finish(x, scores * self.scale + bias, values)
        return self._answer(x)


def forward_flops_per_frame(config: StreamingConfig) -> float:
    """Forward FLOPs (multiply-add = 2) of one frame through the step path with a full cache (memory=full: one
    window's worth of context); the module docstring's budget."""
    flops, width, side = 0.0, 3, config.image_size
    for i, channels in enumerate(config.encoder_channels):
        side //= 2
        flops += 2 * side * side * channels * width * 9
        width = channels
        if config.keypoints and i == config.keypoint_layer % len(config.encoder_channels):  # spatial softmax + proj
            flops += 2 * side * side * width * config.keypoints + 2 * 2 * config.keypoints * config.d_model
    d, tokens = config.d_model, config.tokens_per_frame
    flops += 2 * side * side * width * d
    context = (config.sink_frames + config.window) * tokens + config.max_instruction_tokens
    per_layer = tokens * (2 * 4 * d * d + 2 * 2 * config.mlp_ratio * d * d) + 2 * 2 * tokens * context * d
    if config.replay_match:  # grey thumbnail, then an L1 distance to each remembered frame's
        flops += 4 * config.image_size ** 2 + 2 * MATCH_SIZE ** 2 * (config.sink_frames + config.window)
    return flops + config.n_layers * per_layer + 2 * (d * d + d * (6 + len(EVENTS)))
