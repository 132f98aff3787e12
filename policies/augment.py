"""Image augmentation of training batches: random shift (DrQ) and random crop-and-resize, on any device.

Both act on a batch's image tensors ``(B, To, C, H, W)`` float in [0, 1] and apply one transform per sample to all
``To`` observation steps (the policy sees a consistent history). The random draws come from torch's global CPU
generator, so the trainer's seeding makes them reproducible and equal on every device.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def random_shift(images: Tensor, pad: int) -> Tensor:
    """``images`` ``(B, To, C, H, W)`` shifted by a random whole number of pixels in [-pad, pad] per axis and sample.

    The image is padded by ``pad`` pixels on each side (edge pixels repeated) and cropped back to ``H x W`` at a random
    offset (DrQ's augmentation). ``pad=0`` returns ``images`` unchanged.
    """
    if pad == 0:
        return images
    b, to, c, h, w = images.shape
    flat = F.pad(images.reshape(b, to * c, h, w), (pad, pad, pad, pad), mode="replicate")
    offsets = torch.randint(0, 2 * pad + 1, (b, 2)).to(images.device)  # (dy, dx) of the crop in the padded image
    rows = offsets[:, :1] + torch.arange(h, device=images.device)  # (B, H)
    cols = offsets[:, 1:] + torch.arange(w, device=images.device)  # (B, W)
    batch = torch.arange(b, device=images.device)[:, None, None]
    shifted = flat.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # (B, H, W, To*C)
    return shifted.permute(0, 3, 1, 2).reshape(b, to, c, h, w)


def random_crop_resize(images: Tensor, min_area: float) -> Tensor:
    """``images`` ``(B, To, C, H, W)``, each sample a random crop resized back to ``H x W`` (bilinear).

    The crop keeps the aspect ratio and a fraction of the image area drawn uniformly in ``[min_area, 1]``, at a
    uniformly random position inside the image. ``min_area=1`` returns ``images`` unchanged.
    """
    if min_area >= 1:
        return images
    b, to, c, h, w = images.shape
    area = min_area + (1 - min_area) * torch.rand(b)
    side = area.sqrt()  # crop side as a fraction of the image side
    centre = (1 - side)[:, None] * (2 * torch.rand(b, 2) - 1)  # keeps the crop inside [-1, 1]
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = side
    theta[:, :, 2] = centre
    grid = F.affine_grid(theta.to(images.device, images.dtype), [b, to * c, h, w], align_corners=False)
    out = F.grid_sample(images.reshape(b, to * c, h, w), grid, mode="bilinear", align_corners=False)
    return out.reshape(b, to, c, h, w)


def augment_batch(batch: Mapping[str, Tensor], image_keys: Sequence[str], shift: int, crop_scale: float) -> dict:
    """``batch`` with each of ``image_keys`` crop-resized (``crop_scale`` < 1) then shifted (``shift`` > 0 pixels).

    Raises:
        ValueError: an image key is not a ``(B, To, C, H, W)`` tensor.
    """
    out = dict(batch)
    for key in image_keys:
        images = batch[key]
        if images.ndim != 5:
            raise ValueError(f"{key!r}: augmentation expects (B, To, C, H, W) images, got {tuple(images.shape)}")
        out[key] = random_shift(random_crop_resize(images, crop_scale), shift)
    return out
