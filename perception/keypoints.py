"""Spatial-softmax keypoints: where things are in a feature map, as continuous image coordinates. Shared by the
streaming model's frame encoder and the policies' image encoders (which import it from here, the lower layer)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


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
