"""Pure networks of the flow-matching policy: velocity nets (MLP, 1D U-Net).

The time embedding and the image encoder are shared with other policies (:mod:`policies.common`). Nothing here
knows about feature keys, normalisation or queues; :mod:`policies.flow_matching.model` wires them.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from policies.common.flow import TimeEmbedding

__all__ = ["ConditionalResidualBlock1D", "Conv1dBlock", "FiLMResidualBlock", "MLPVelocityNet", "UNetVelocityNet"]


class FiLMResidualBlock(nn.Module):
    """``h + W2 silu(W1 (LayerNorm(h) * (1 + scale) + shift))`` with ``(scale, shift)`` from the condition."""

    def __init__(self, hidden_dim: int, cond_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden_dim, elementwise_affine=False)
        self.film = nn.Linear(cond_dim, 2 * hidden_dim)
        self.fc1 = nn.Linear(hidden_dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, hidden_dim)

    def forward(self, h: Tensor, cond: Tensor) -> Tensor:
        scale, shift = self.film(cond).chunk(2, dim=-1)
        y = self.norm(h) * (1 + scale) + shift
        return h + self.fc2(F.silu(self.fc1(y)))


class MLPVelocityNet(nn.Module):
    """Velocity ``(B, H, A)`` of a noisy chunk ``(B, H, A)`` at time ``t`` ``(B,)`` given ``cond`` ``(B, C)``.

    The chunk is flattened, so the net sees the whole trajectory at once; condition = [time embedding, cond],
    applied by FiLM in every residual block.
    """

    def __init__(self, horizon: int, action_dim: int, cond_dim: int, hidden_dim: int, num_blocks: int, time_dim: int):
        super().__init__()
        self.horizon, self.action_dim = horizon, action_dim
        self.time_embed = TimeEmbedding(time_dim)
        self.cond_proj = nn.Sequential(nn.Linear(time_dim + cond_dim, time_dim), nn.SiLU())
        self.inp = nn.Linear(horizon * action_dim, hidden_dim)
        self.blocks = nn.ModuleList(FiLMResidualBlock(hidden_dim, time_dim) for _ in range(num_blocks))
        self.out = nn.Sequential(nn.LayerNorm(hidden_dim), nn.Linear(hidden_dim, horizon * action_dim))

    def forward(self, x: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        c = self.cond_proj(torch.cat([self.time_embed(t), cond], dim=-1))
        h = self.inp(x.flatten(1))
        for block in self.blocks:
            h = block(h, c)
        return self.out(h).view(-1, self.horizon, self.action_dim)


class Conv1dBlock(nn.Module):
    """Conv1d -> GroupNorm -> Mish, length preserved."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, n_groups: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv1d(in_ch, out_ch, kernel_size, padding=kernel_size // 2), nn.GroupNorm(n_groups, out_ch), nn.Mish()
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.block(x)


class ConditionalResidualBlock1D(nn.Module):
    """Two conv blocks with FiLM (per-channel scale and bias from the condition) between them, plus a skip."""

    def __init__(self, in_ch: int, out_ch: int, cond_dim: int, kernel_size: int, n_groups: int) -> None:
        super().__init__()
        self.conv1 = Conv1dBlock(in_ch, out_ch, kernel_size, n_groups)
        self.conv2 = Conv1dBlock(out_ch, out_ch, kernel_size, n_groups)
        self.film = nn.Sequential(nn.Mish(), nn.Linear(cond_dim, 2 * out_ch))
        self.skip = nn.Conv1d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        scale, bias = self.film(cond).unsqueeze(-1).chunk(2, dim=1)
        out = self.conv1(x) * scale + bias
        return self.conv2(out) + self.skip(x)


class UNetVelocityNet(nn.Module):
    """diffusion_policy's ConditionalUnet1D as a velocity net: temporal convs over the chunk, FiLM from ``cond``.

    Same call signature as :class:`MLPVelocityNet`; the chunk length must be divisible by
    ``2 ** (len(down_dims) - 1)``.
    """

    def __init__(self, action_dim: int, cond_dim: int, down_dims: tuple[int, ...], kernel_size: int, n_groups: int,
                 time_dim: int) -> None:
        super().__init__()
        self.time_embed = TimeEmbedding(time_dim)
        cdim = time_dim + cond_dim
        dims = [action_dim, *down_dims]
        levels = list(itertools.pairwise(dims))
        self.down = nn.ModuleList()
        for i, (d_in, d_out) in enumerate(levels):
            last = i == len(levels) - 1
            self.down.append(nn.ModuleList([
                ConditionalResidualBlock1D(d_in, d_out, cdim, kernel_size, n_groups),
                ConditionalResidualBlock1D(d_out, d_out, cdim, kernel_size, n_groups),
                nn.Identity() if last else nn.Conv1d(d_out, d_out, 3, stride=2, padding=1),
            ]))
        mid = down_dims[-1]
        self.mid = nn.ModuleList([ConditionalResidualBlock1D(mid, mid, cdim, kernel_size, n_groups) for _ in range(2)])
        self.up = nn.ModuleList()
        for d_in, d_out in reversed(levels[1:]):
            self.up.append(nn.ModuleList([
                ConditionalResidualBlock1D(2 * d_out, d_in, cdim, kernel_size, n_groups),
                ConditionalResidualBlock1D(d_in, d_in, cdim, kernel_size, n_groups),
                nn.ConvTranspose1d(d_in, d_in, 4, stride=2, padding=1),
            ]))
        self.final = nn.Sequential(
            Conv1dBlock(down_dims[0], down_dims[0], kernel_size, n_groups), nn.Conv1d(down_dims[0], action_dim, 1)
        )

    def forward(self, x: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        c = torch.cat([self.time_embed(t), cond], dim=-1)
        h = x.transpose(1, 2)  # (B, A, H): channels = action dims, length = horizon
        skips = []
        for res1, res2, downsample in self.down:
            h = res2(res1(h, c), c)
            skips.append(h)
            h = downsample(h)
        for block in self.mid:
            h = block(h, c)
        for res1, res2, upsample in self.up:
            h = res2(res1(torch.cat([h, skips.pop()], dim=1), c), c)
            h = upsample(h)
        return self.final(h).transpose(1, 2)
