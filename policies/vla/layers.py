"""Transformer pieces of the VLA: pre-LayerNorm blocks with self-attention and optional cross-attention.

Masks are boolean ``(B, L)`` with True on tokens that take part (``False``: padding); attention goes through
``F.scaled_dot_product_attention``, so a padded key gets zero weight and changes nothing.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

KeyValue = tuple[Tensor, Tensor]  # keys and values (B, heads, L, head_dim) of a memory, computed once


def key_mask(mask: Tensor | None) -> Tensor | None:
    """``(B, L)`` validity mask -> the ``(B, 1, 1, L)`` boolean attention mask of SDPA (``None`` stays ``None``)."""
    return None if mask is None else mask[:, None, None, :]


class SelfAttention(nn.Module):
    """Multi-head self-attention over ``(B, L, dim)`` with a key padding mask."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask(mask))
        return self.out(y.transpose(1, 2).reshape(b, n, d))


class CrossAttention(nn.Module):
    """Multi-head attention of ``(B, L, dim)`` queries to a memory ``(B, M, memory_dim)``, whose K/V can be cached."""

    def __init__(self, dim: int, heads: int, memory_dim: int) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(memory_dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    def memory(self, memory: Tensor) -> KeyValue:
        """Keys and values of ``memory``, reused by every query pass (every Euler step of a chunk)."""
        b, m, _ = memory.shape
        d = self.out.in_features
        k, v = self.kv(memory).view(b, m, 2, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        return k, v

    def forward(self, x: Tensor, kv: KeyValue, mask: Tensor | None) -> Tensor:
        b, n, d = x.shape
        q = self.q(x).view(b, n, self.heads, d // self.heads).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, kv[0], kv[1], attn_mask=key_mask(mask))
        return self.out(y.transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    """Pre-LN transformer block: self-attention, then (with ``memory_dim``) cross-attention, then a GELU MLP."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int, memory_dim: int | None = None) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads)
        self.cross_norm = nn.LayerNorm(dim) if memory_dim else None
        self.cross = CrossAttention(dim, heads, memory_dim) if memory_dim else None
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(approximate="tanh"),
                                 nn.Linear(mlp_ratio * dim, dim))

    def forward(self, x: Tensor, mask: Tensor | None = None, memory: KeyValue | None = None,
                memory_mask: Tensor | None = None) -> Tensor:
        x = x + self.attn(self.norm1(x), mask)
        if self.cross is not None:
            if memory is None:
                raise ValueError("a cross-attention block needs the memory keys/values")
            x = x + self.cross(self.cross_norm(x), memory, memory_mask)
        return x + self.mlp(self.norm2(x))


def init_weights(module: nn.Module) -> None:
    """Truncated-normal (std 0.02) linear and embedding weights, zero biases: the usual transformer start."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)
