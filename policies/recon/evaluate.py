"""Held-out figures of the reconstruction model (issue 18, "what it must show" 1): for 2, 4, 8 and 16 input views of
each held-out twin scene (block poses, shapes and cameras never trained on), read the scene's last ``n_query`` views:

* ``depth_absrel_<n>``: mean |depth - true| / true along each query ray, over pixels with a surface;
* ``psnr_<n>``: RGB PSNR (dB) of the query views;
* ``chamfer_mm_<n>``: Chamfer distance (mm) between the block's true exposed surface and the model's points at the
  query pixels that show the block (the truth's mask picks the pixels; their 3D points are the model's own).

Each figure is the mean over scenes, for every model given (``""``: the TTT model, ``frozen_``: its fast weights
frozen), and ``tsdf_`` for Open3D TSDF fusion of the same input views with *true* depth
(:mod:`perception.recon.tsdf_baseline`): Chamfer of its surface points near the block (the block's box grown by
``crop_margin``, above ``min_z``), and depth AbsRel / PSNR of its mesh ray-cast into the query views over the pixels
it covers (``tsdf_coverage_<n>`` says how many).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import torch

from perception.recon.metrics import chamfer, crop_near, depth_absrel, psnr
from perception.recon.model import ReconModel
from perception.recon.tsdf_baseline import TSDFConfig, tsdf_fuse, tsdf_points, tsdf_render
from policies.recon.data import ReconScenes, make_batch

MM = 1000.0


@dataclass
class ReconEvalConfig:
    """Which held-out views and scenes the figures use.

    Raises:
        ValueError: a field out of range (the message names it).
    """

    view_counts: list[int] = field(default_factory=lambda: [2, 4, 8, 16])  # input views (the scene's first n)
    n_query: int = 4  # query views: the scene's last n_query (never inputs)
    max_scenes: int = 64  # held-out scenes evaluated (the first ones)
    batch_size: int = 8  # scenes per model forward
    chunk_views: int = 0  # 0: all input views in one update; > 0: streaming in chunks of this many views
    tsdf: bool = True  # also the TSDF fusion baseline
    tsdf_config: TSDFConfig = field(default_factory=TSDFConfig)
    crop_margin: float = 0.01  # m around the block's box: TSDF points counted as the block's
    min_z: float = 0.002  # m; TSDF points at or below this height are the table's
    split: str = "heldout"

    def __post_init__(self) -> None:
        if not self.view_counts or min(self.view_counts) < 1:
            raise ValueError(f"eval.view_counts must be >= 1 each, got {self.view_counts}")
        for name in ("n_query", "max_scenes", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"eval.{name} must be >= 1, got {getattr(self, name)}")
        if self.chunk_views < 0 or self.crop_margin < 0:
            raise ValueError("eval.chunk_views and eval.crop_margin must be >= 0")


def _model_figures(model: ReconModel, scenes: ReconScenes, n: int, cfg: ReconEvalConfig) -> dict[str, list[float]]:
    """Per-scene depth AbsRel, PSNR and Chamfer (mm) of ``model`` from the first ``n`` views."""
    figures: dict[str, list[float]] = defaultdict(list)
    queries = np.arange(scenes.n_views - cfg.n_query, scenes.n_views)
    device = next(model.parameters()).device
    for start in range(0, len(scenes), cfg.batch_size):
        index = np.arange(start, min(start + cfg.batch_size, len(scenes)))
        batch = make_batch(scenes, index, np.tile(np.arange(n), (len(index), 1)), np.tile(queries, (len(index), 1)),
                           device)
        with torch.no_grad():
            out = model(batch.views, batch.queries, chunk_views=cfg.chunk_views or None)
        pred_depth, true_depth = out.depth.cpu().numpy(), batch.ray_depth.cpu().numpy()
        pred_rgb, true_rgb = out.rgb.cpu().numpy(), batch.rgb.cpu().numpy()
        points, mask = out.points.cpu().numpy(), batch.mask.cpu().numpy()
        for row, scene in enumerate(index):
            figures["depth_absrel"].append(depth_absrel(pred_depth[row], true_depth[row]))
            figures["psnr"].append(psnr(pred_rgb[row], true_rgb[row]))
            figures["chamfer_mm"].append(MM * chamfer(points[row][mask[row]], scenes.surface[scene]))
    return figures


def _tsdf_figures(scenes: ReconScenes, n: int, cfg: ReconEvalConfig) -> dict[str, list[float]]:
    """Per-scene figures of TSDF fusion of the first ``n`` views with true depth."""
    figures: dict[str, list[float]] = defaultdict(list)
    q = slice(scenes.n_views - cfg.n_query, scenes.n_views)
    size = scenes.images.shape[2:4]
    for s in range(len(scenes)):
        surface = scenes.surface[s]
        volume = tsdf_fuse(scenes.images[s, :n], scenes.depth[s, :n], scenes.intrinsics[s, :n],
                           scenes.world_from_camera[s, :n], surface.mean(axis=0), cfg.tsdf_config)
        near = crop_near(tsdf_points(volume), surface, cfg.crop_margin, cfg.min_z)
        figures["chamfer_mm"].append(MM * chamfer(near, surface))
        render = tsdf_render(volume, scenes.intrinsics[s, q], scenes.world_from_camera[s, q], *size)
        batch = make_batch(scenes, np.array([s]), np.arange(1)[None], np.arange(q.start, q.stop)[None])
        true_depth, true_rgb = batch.ray_depth[0].numpy(), batch.rgb[0].permute(0, 2, 3, 1).numpy()
        hit = (render.depth > 0) & (true_depth > 0)
        figures["coverage"].append(float(hit.mean()))
        figures["depth_absrel"].append(depth_absrel(render.depth[hit], true_depth[hit]) if hit.any() else np.nan)
        figures["psnr"].append(psnr(render.rgb[hit], true_rgb[hit]) if hit.any() else np.nan)
    return figures


def evaluate_recon(models: dict[str, ReconModel], scenes: ReconScenes, cfg: ReconEvalConfig) -> dict[str, float]:
    """``{<prefix><figure>_<n>: value}`` for every model (by prefix) and, with ``cfg.tsdf``, ``tsdf_``; means over
    the first ``cfg.max_scenes`` scenes (nan-skipping: a scene whose query views miss the block has no Chamfer).

    Raises:
        ValueError: scenes with fewer views than the largest view count plus ``cfg.n_query``.
    """
    if scenes.n_views < max(cfg.view_counts) + cfg.n_query:
        raise ValueError(f"evaluate_recon: scenes have {scenes.n_views} views; {max(cfg.view_counts)} inputs + "
                         f"{cfg.n_query} queries need more (eval.view_counts, eval.n_query)")
    scenes = scenes.subset(slice(0, cfg.max_scenes))
    figures: dict[str, float] = {}
    for n in cfg.view_counts:
        parts = {prefix: _model_figures(model.eval(), scenes, n, cfg) for prefix, model in models.items()}
        if cfg.tsdf:
            parts["tsdf_"] = _tsdf_figures(scenes, n, cfg)
        for prefix, per_scene in parts.items():
            for name, values in per_scene.items():
                finite = [v for v in values if np.isfinite(v)]
                figures[f"{prefix}{name}_{n}"] = round(float(np.mean(finite)), 4) if finite else float("nan")
    return figures
