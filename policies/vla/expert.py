"""The flow-matching action expert: a small transformer over the H noisy action tokens that cross-attends to the trunk.

Why cross-attention and not pi0's joint attention with a block-causal mask: both let the action tokens read the
trunk's tokens while the trunk never reads the actions, and both compute the trunk once per chunk. Cross-attention
also lets the expert's width and depth differ from the trunk's (128-wide over a 576/960-wide SmolVLM, or 2 expert
layers over 2-32 trunk layers) without touching the backbone's attention code, so one expert serves the native and
the ``hf`` backbone; its keys/values over the trunk are computed once and reused by every Euler step.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from policies.common.flow import TimeEmbedding
from policies.vla.layers import Block, KeyValue, init_weights


class ActionExpert(nn.Module):
    """Velocity ``(B, H, A)`` of a noisy normalised chunk ``(B, H, A)`` at flow time ``t`` ``(B,)`` given the trunk.

    Each action token is ``MLP([W a_h, time(t)]) + pos_h`` (pi0's action-time MLP); then ``layers`` blocks of
    self-attention over the chunk, cross-attention to the trunk tokens (padding masked) and an MLP.
    """

    def __init__(self, action_dim: int, horizon: int, dim: int, layers: int, heads: int, mlp_ratio: int,
                 memory_dim: int) -> None:
        super().__init__()
        self.action_in = nn.Linear(action_dim, dim)
        self.time = TimeEmbedding(dim)
        self.action_time = nn.Sequential(nn.Linear(2 * dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.pos = nn.Parameter(torch.zeros(horizon, dim))
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio, memory_dim) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.out = nn.Linear(dim, action_dim)
        init_weights(self)
        nn.init.trunc_normal_(self.pos, std=0.02)

    def memory(self, tokens: Tensor) -> list[KeyValue]:
        """Per-block keys/values of the trunk tokens ``(B, M, memory_dim)``: compute once per chunk."""
        return [block.cross.memory(tokens) for block in self.blocks]

    def forward(self, x: Tensor, t: Tensor, memory: list[KeyValue], memory_mask: Tensor | None) -> Tensor:
        a = self.action_in(x)
        time = self.time(t)[:, None, :].expand_as(a)
        h = self.action_time(torch.cat([a, time], dim=-1)) + self.pos
        for block, kv in zip(self.blocks, memory):
            h = block(h, None, kv, memory_mask)
        return self.out(self.norm(h))


class AuxHead(nn.Module):
    """Privileged-state regression from one trunk token: ``(B, dim)`` -> ``(B, out_dim)`` (training only)."""

    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.GELU(approximate="tanh"),
                                 nn.Linear(dim, out_dim))

    def forward(self, token: Tensor) -> Tensor:
        return self.net(token)
