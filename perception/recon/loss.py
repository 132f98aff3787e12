"""The reconstruction loss on query views whose pixels are known (DESIGN.md section 6, tttLRM: image MSE + small
depth and opacity terms; the perceptual term is left to the GPU preset's trainer)."""

from __future__ import annotations

import torch

from perception.recon.cameras import pixel_rays
from perception.recon.model import ReconOutput


def recon_loss(out: ReconOutput, rgb: torch.Tensor, ray_depth: torch.Tensor | None = None, depth_weight: float = 0.1,
               opacity_weight: float = 0.01) -> tuple[torch.Tensor, dict[str, float]]:
    """``(loss, terms)`` of predictions ``out`` against the query views' ``rgb`` (B, Q, 3, H, W) in [0, 1] and,
    when given, their depth along each ray ``ray_depth`` (B, Q, H, W) m (0 = unknown): RGB MSE + ``depth_weight``
    x mean |log depth error| over known pixels + ``opacity_weight`` x mean (1 - opacity) (every pixel of a view shows
    some surface)."""
    mse = torch.mean((out.rgb - rgb) ** 2)
    terms = {"rgb_mse": mse}
    if ray_depth is not None:
        known = ray_depth > 0
        error = (torch.log(out.depth) - torch.log(ray_depth.clamp(min=1e-6))).abs()
        terms["depth_l1_log"] = (error * known).sum() / known.sum().clamp(min=1)
    terms["opacity"] = torch.mean(1.0 - out.opacity)
    loss = mse + depth_weight * terms.get("depth_l1_log", 0.0) + opacity_weight * terms["opacity"]
    return loss, {f"losses/{k}": float(v.detach()) for k, v in terms.items()}


def z_to_ray_depth(z_depth: torch.Tensor, cameras) -> torch.Tensor:
    """Depth along the optical axis (B, V, H, W) m -> along each pixel's ray (the model's output), 0 kept as 0."""
    _, directions = pixel_rays(cameras)
    axis = cameras.world_from_camera[..., None, None, :3, 2]  # the optical axis in the world
    cos = (directions * axis).sum(-1)
    return z_depth / cos
