"""A differentiable renderer of coloured points into any camera (losses against other views, and pictures).

Choice: a *soft z-buffer* splat in plain torch, no Warp kernel. Each point projects to sub-pixel ``(u, v)`` and
spreads over its 4 neighbouring pixel centres with bilinear weights (differentiable in the point's position). Per
pixel, the front depth ``z_min`` is the nearest of the contributions weighing at least 0.25 (bilinear x opacity: a
point grazing a pixel from its neighbour must not hide the surface there; ``scatter_reduce(amin)``, not
differentiated), and each contribution is weighted by ``w = bilinear * opacity * exp(-(z - z_min) / (tau * z_min))``:
the front surface dominates, points a few ``tau`` (relative depth) behind it fade out, and gradients reach positions,
colours and opacities alike. Then ``colour = sum w c / sum w``, ``depth = sum w z / sum w``, coverage
``alpha = 1 - prod (1 - w)`` (an opaque point on a pixel centre covers it), and the colour is composited over
``background``. It costs O(points) scatter-adds and no per-pixel sorting, which suits the CPU; with one point per
pixel of a few 32x32-64x64 views the sums are small, so a Warp kernel would not pay here (it would for millions of
points, or for exact depth-sorted alpha compositing of Gaussians).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from perception.recon.cameras import Cameras

CORNERS = ((0, 0), (1, 0), (0, 1), (1, 1))
MIN_FRONT_W = 0.25  # contributions lighter than this (bilinear x opacity) do not set a pixel's front depth
MAX_W = 0.999  # a single contribution covers at most this much of a pixel (keeps log(1 - w) finite)


class Rendered(NamedTuple):
    """Per pixel of each camera: ``rgb`` (B, V, 3, H, W) in [0, 1], ``depth`` (B, V, H, W) m along the optical axis
    (0 where nothing lands), ``alpha`` (B, V, H, W) coverage in [0, 1)."""

    rgb: torch.Tensor
    depth: torch.Tensor
    alpha: torch.Tensor


def _project(points: torch.Tensor, cameras: Cameras) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(u, v, z)`` (B, V, N) of world points (B, N, 3) in each camera (pixels, m along the optical axis)."""
    pose = cameras.world_from_camera
    rot, trans = pose[..., :3, :3], pose[..., :3, 3]
    local = torch.einsum("bvji,bvnj->bvni", rot, points[:, None] - trans[:, :, None])
    z = local[..., 2]
    safe = torch.where(z > 1e-6, z, torch.ones_like(z))
    k = cameras.intrinsics
    u = k[..., 0, 0, None] * local[..., 0] / safe + k[..., 0, 2, None]
    v = k[..., 1, 1, None] * local[..., 1] / safe + k[..., 1, 2, None]
    return u, v, z


def splat_points(points: torch.Tensor, colors: torch.Tensor, opacity: torch.Tensor, cameras: Cameras,
                 tau: float = 0.02, near: float = 1e-3, background: float = 0.0) -> Rendered:
    """Renders points (B, N, 3) m with ``colors`` (B, N, 3) and ``opacity`` (B, N) into every camera of ``cameras``
    (B, V) by the soft z-buffer of the module docstring; ``tau`` is the relative depth over which hidden points fade,
    points nearer than ``near`` (m) are dropped.

    Raises:
        ValueError: points, colours and opacities that disagree in shape, or a batch other than the cameras'.
    """
    b, n = points.shape[:2]
    if colors.shape != (b, n, 3) or opacity.shape != (b, n) or cameras.intrinsics.shape[0] != b:
        raise ValueError(f"splat_points: need points (B, N, 3), colors (B, N, 3), opacity (B, N) and cameras of batch "
                         f"B; got {tuple(points.shape)}, {tuple(colors.shape)}, {tuple(opacity.shape)}, "
                         f"{tuple(cameras.intrinsics.shape)}")
    v_count, height, width = cameras.n_views, cameras.height, cameras.width
    u, v, z = _project(points, cameras)
    u0, v0 = torch.floor(u), torch.floor(v)
    fu, fv = u - u0, v - v0
    image = torch.arange(b * v_count, device=points.device).reshape(b, v_count, 1) * (height * width)
    idx, weight = [], []
    for du, dv in CORNERS:
        ui, vi = u0 + du, v0 + dv
        valid = (z > near) & (ui >= 0) & (ui < width) & (vi >= 0) & (vi < height)
        idx.append(torch.where(valid, image + vi.clamp(0, height - 1).long() * width + ui.clamp(0, width - 1).long(),
                               0))
        bilinear = (fu if du else 1 - fu) * (fv if dv else 1 - fv)
        weight.append(torch.where(valid, bilinear, torch.zeros_like(bilinear)))
    idx, weight = torch.stack(idx, -1).flatten(), torch.stack(weight, -1).flatten()  # (B V N 4,)
    depth = z[..., None].expand(b, v_count, n, 4).flatten()
    n_pixels = b * v_count * height * width
    opac = opacity[:, None, :, None].expand(b, v_count, n, 4).flatten()
    heavy = (weight * opac).detach() >= MIN_FRONT_W
    z_min = torch.full((n_pixels,), float("inf"), dtype=z.dtype, device=z.device).scatter_reduce(
        0, idx, torch.where(heavy, depth, torch.full_like(depth, float("inf"))).detach(), "amin")
    front = torch.exp(-((depth - z_min[idx]).clamp(min=0) / (tau * z_min[idx].clamp(min=near))))
    w = torch.where(weight > 0, weight * opac * front, torch.zeros_like(weight))
    total = torch.zeros(n_pixels, dtype=w.dtype, device=w.device).index_add(0, idx, w)
    col = colors[:, None, :, None, :].expand(b, v_count, n, 4, 3).reshape(-1, 3)
    rgb_sum = torch.zeros(n_pixels, 3, dtype=w.dtype, device=w.device).index_add(0, idx, w[:, None] * col)
    z_sum = torch.zeros(n_pixels, dtype=w.dtype, device=w.device).index_add(0, idx, w * depth)
    clear = torch.zeros(n_pixels, dtype=w.dtype, device=w.device).index_add(0, idx, torch.log1p(-w.clamp(max=MAX_W)))
    alpha = 1.0 - torch.exp(clear)
    mean_rgb = rgb_sum / (total[:, None] + 1e-8)
    rgb = alpha[:, None] * mean_rgb + (1.0 - alpha[:, None]) * background
    return Rendered(rgb=rgb.reshape(b, v_count, height, width, 3).permute(0, 1, 4, 2, 3),
                    depth=(z_sum / (total + 1e-8)).reshape(b, v_count, height, width),
                    alpha=alpha.reshape(b, v_count, height, width))


def render_output(points: torch.Tensor, rgb: torch.Tensor, opacity: torch.Tensor, cameras: Cameras,
                  **options: float) -> Rendered:
    """:func:`splat_points` of a :class:`~perception.recon.model.ReconOutput`'s per-pixel fields (points
    (B, Q, H, W, 3), rgb (B, Q, 3, H, W), opacity (B, Q, H, W)): every query view's points into ``cameras``."""
    b = points.shape[0]
    return splat_points(points.reshape(b, -1, 3), rgb.permute(0, 1, 3, 4, 2).reshape(b, -1, 3),
                        opacity.reshape(b, -1), cameras, **options)
