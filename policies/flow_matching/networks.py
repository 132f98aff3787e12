"""Pure networks of the flow-matching policy: time embedding, velocity nets (MLP, 1D U-Net), image encoder.

Nothing here knows about feature keys, normalisation or queues; :mod:`policies.flow_matching.model` wires them.
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def sincos_time_embedding(t: Tensor, dim: int, min_period: float = 4e-3, max_period: float = 4.0) -> Tensor:
    """Sine-cosine embedding ``(B, dim)`` of flow times ``t`` ``(B,)`` in [0, 1], periods log-spaced (as pi0)."""
    fraction = torch.linspace(0.0, 1.0, dim // 2, device=t.device, dtype=torch.float32)
    period = min_period * (max_period / min_period) ** fraction
    angle = t.float()[:, None] * (2 * math.pi / period)[None, :]
    return torch.cat([torch.sin(angle), torch.cos(angle)], dim=-1)


class TimeEmbedding(nn.Module):
    """Flow time ``t`` ``(B,)`` -> ``(B, dim)``: sine-cosine features through a 2-layer MLP."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.SiLU(), nn.Linear(4 * dim, dim))

    def forward(self, t: Tensor) -> Tensor:
        return self.mlp(sincos_time_embedding(t, self.dim))


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


class SpatialSoftmax(nn.Module):
    """Keypoints from a feature map: 1x1 conv to K maps, softmax over pixels, expected (x, y) in [-1, 1].

    ``(N, C, h, w)`` -> ``(N, 2K)``. The coordinate grid follows the map size, so any input size works.
    """

    def __init__(self, in_ch: int, num_keypoints: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_ch, num_keypoints, 1)

    def forward(self, features: Tensor) -> Tensor:
        maps = self.proj(features)
        h, w = maps.shape[-2:]
        ys = torch.linspace(-1.0, 1.0, h, device=maps.device, dtype=maps.dtype)
        xs = torch.linspace(-1.0, 1.0, w, device=maps.device, dtype=maps.dtype)
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        attention = maps.flatten(2).softmax(dim=-1)  # (N, K, h*w)
        x = (attention * grid_x.reshape(1, 1, -1)).sum(-1)
        y = (attention * grid_y.reshape(1, 1, -1)).sum(-1)
        return torch.stack([x, y], dim=-1).flatten(1)


class BasicBlock(nn.Module):
    """ResNet basic block with GroupNorm (batch statistics would couple the samples of a batch)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.norm1 = nn.GroupNorm(math.gcd(8, out_ch), out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        self.norm2 = nn.GroupNorm(math.gcd(8, out_ch), out_ch)
        self.skip = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.skip = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.GroupNorm(math.gcd(8, out_ch), out_ch)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.norm1(self.conv1(x)))
        return F.relu(self.norm2(self.conv2(out)) + self.skip(x))


class ImageEncoder(nn.Module):
    """Small ResNet with GroupNorm and a spatial-softmax head: ``(N, C, H, W)`` in [0, 1] -> ``(N, feature_dim)``.

    Stem (stride 2) -> two basic blocks (the second with stride 2) -> K keypoints -> Linear -> ReLU.
    """

    def __init__(self, in_ch: int, channels: tuple[int, int], num_keypoints: int, feature_dim: int) -> None:
        super().__init__()
        c0, c1 = channels
        self.stem = nn.Sequential(
            nn.Conv2d(in_ch, c0, 3, stride=2, padding=1, bias=False), nn.GroupNorm(math.gcd(8, c0), c0), nn.ReLU()
        )
        self.stage = nn.Sequential(BasicBlock(c0, c0, 1), BasicBlock(c0, c1, 2))
        self.keypoints = SpatialSoftmax(c1, num_keypoints)
        self.out = nn.Sequential(nn.Linear(2 * num_keypoints, feature_dim), nn.ReLU())

    def forward(self, images: Tensor) -> Tensor:
        return self.out(self.keypoints(self.stage(self.stem(images * 2.0 - 1.0))))


def crop_images(images: Tensor, shape: tuple[int, int], random: bool) -> Tensor:
    """Crop ``(N, C, H, W)`` to ``shape``: an independent random window per image, or the centre window.

    Random offsets come from torch's global RNG. Raises ``ValueError`` if the crop is larger than the image.
    """
    n, _, height, width = images.shape
    ch, cw = shape
    if ch > height or cw > width:
        raise ValueError(f"crop_shape {shape} is larger than the images ({height}, {width})")
    if not random:
        top, left = (height - ch) // 2, (width - cw) // 2
        return images[:, :, top : top + ch, left : left + cw]
    top = torch.randint(0, height - ch + 1, (n,), device=images.device)
    left = torch.randint(0, width - cw + 1, (n,), device=images.device)
    rows = (top[:, None] + torch.arange(ch, device=images.device))[:, :, None]  # (N, ch, 1)
    cols = (left[:, None] + torch.arange(cw, device=images.device))[:, None, :]  # (N, 1, cw)
    batch = torch.arange(n, device=images.device)[:, None, None]
    return images.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)
