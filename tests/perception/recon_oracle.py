"""A stand-in reconstruction model for tests: the true rendered depth back-projected, behind ``ReconModel``'s
interface, so the estimator and the twin's ``recon`` correction are tested apart from a model's accuracy."""

from __future__ import annotations

import numpy as np
import torch

from perception.recon import Cameras, ReconOutput, Views, pixel_rays, z_to_ray_depth


class DepthOracle:
    """``oracle(views, queries)``: the query cameras' points are ``depth`` (V, H, W) z-depth m back-projected through
    them (opacity 1 where there is a surface, 0 elsewhere); the views' pixels are ignored. Set ``depth`` anew for each
    instant."""

    def __init__(self, depth: np.ndarray | None = None) -> None:
        self.depth = depth
        self.calls = 0

    def __call__(self, views: Views, queries: Cameras) -> ReconOutput:
        self.calls += 1
        depth = torch.as_tensor(np.asarray(self.depth), dtype=torch.float32)[None]  # (1, V, H, W)
        assert tuple(depth.shape[1:]) == (queries.n_views, queries.height, queries.width), depth.shape
        ray = z_to_ray_depth(depth, queries)
        origins, directions = pixel_rays(queries)
        rgb = torch.full((*depth.shape[:2], 3, *depth.shape[2:]), 0.5)
        return ReconOutput(ray, rgb, (depth > 0).float(), origins + ray[..., None] * directions)
