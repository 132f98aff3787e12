"""Image encoders trained from scratch: a small GroupNorm ResNet giving a feature map, keypoints or a feature vector.

Used by the flow-matching policy (a keypoint feature vector per camera) and by the VLA's native backbone (the
feature map, cut into image tokens). ``crop_images`` is the random/centre crop augmentation both can apply.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from perception.keypoints import SpatialSoftmax

__all__ = ["BasicBlock", "FeatureMapEncoder", "ImageEncoder", "SpatialSoftmax", "crop_images"]


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


class FeatureMapEncoder(nn.Module):
    """Small ResNet with GroupNorm: ``(N, C, H, W)`` in [0, 1] -> a feature map ``(N, channels[1], ~H/4, ~W/4)``.

    Stem (3x3 conv, stride 2) -> two basic blocks (the second with stride 2). ``full_resolution_block=False`` drops
    the first block, which runs at H/2 x W/2 and costs half the encoder's compute (the VLA's CPU preset).
    """

    def __init__(self, in_ch: int, channels: tuple[int, int], full_resolution_block: bool = True) -> None:
        super().__init__()
        c0, c1 = channels
        self.stem = nn.Sequential(
            nn.Conv2d(in_ch, c0, 3, stride=2, padding=1, bias=False), nn.GroupNorm(math.gcd(8, c0), c0), nn.ReLU()
        )
        blocks = [BasicBlock(c0, c0, 1)] if full_resolution_block else []
        self.stage = nn.Sequential(*blocks, BasicBlock(c0, c1, 2))

    def feature_map(self, images: Tensor, film: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """The feature map of images in [0, 1] (mapped to [-1, 1] first).

        ``film``: per-image FiLM parameters ``(N, 2 * channels[0])`` and ``(N, 2 * channels[1])``, each the
        concatenated (scale, shift) applied as ``x * (1 + scale) + shift`` after the stem and after the stage (RT-1's
        conditioning of the image encoder on the instruction); ``None``: unconditioned.
        """
        x = self.stem(images * 2.0 - 1.0)
        if film is not None:
            x = _modulate(x, film[0])
        x = self.stage(x)
        return x if film is None else _modulate(x, film[1])

    def forward(self, images: Tensor) -> Tensor:
        return self.feature_map(images)


def _modulate(x: Tensor, scale_shift: Tensor) -> Tensor:
    """FiLM: ``x * (1 + scale) + shift`` per channel of ``(N, C, h, w)``, with ``scale_shift`` ``(N, 2C)``."""
    scale, shift = scale_shift[:, :, None, None].chunk(2, dim=1)
    return x * (1.0 + scale) + shift


class ImageEncoder(FeatureMapEncoder):
    """:class:`FeatureMapEncoder` with a spatial-softmax head: ``(N, C, H, W)`` in [0, 1] -> ``(N, feature_dim)``.

    Feature map -> K keypoints -> Linear -> ReLU.
    """

    def __init__(self, in_ch: int, channels: tuple[int, int], num_keypoints: int, feature_dim: int) -> None:
        super().__init__(in_ch, channels)
        self.keypoints = SpatialSoftmax(channels[1], num_keypoints)
        self.out = nn.Sequential(nn.Linear(2 * num_keypoints, feature_dim), nn.ReLU())

    def forward(self, images: Tensor) -> Tensor:
        return self.out(self.keypoints(self.feature_map(images)))


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
