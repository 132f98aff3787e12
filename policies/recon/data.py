"""The twin's reconstruction scenes (written by ``sim.recon_scenes.write_scenes``) as arrays, and the batches the
trainer and the evaluation take: ``k`` input views and some query views of each scene, as model inputs and targets.

Shard layout (read here, written in sim/): ``<root>/<split>/shard_*.npz`` with images (S, V, H, W, 3) uint8, depth
(S, V, H, W) m along the optical axis (0: none), mask (S, V, H, W) bool (the block's pixels), intrinsics (S, V, 3, 3),
world_from_camera (S, V, 4, 4) OpenCV, block_pose (S, 7), surface (S, N, 3) m, seed (S,).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from perception.recon.cameras import Cameras, Views
from perception.recon.loss import z_to_ray_depth

FIELDS = ("images", "depth", "mask", "intrinsics", "world_from_camera", "block_pose", "surface", "seed")


@dataclasses.dataclass
class ReconScenes:
    """All scenes of a split, stacked (the shard arrays, module docstring)."""

    images: np.ndarray
    depth: np.ndarray
    mask: np.ndarray
    intrinsics: np.ndarray
    world_from_camera: np.ndarray
    block_pose: np.ndarray
    surface: np.ndarray
    seed: np.ndarray

    def __len__(self) -> int:
        return len(self.images)

    @property
    def n_views(self) -> int:
        """Views per scene."""
        return self.images.shape[1]

    def subset(self, index: np.ndarray | slice) -> ReconScenes:
        """The scenes ``index``."""
        return ReconScenes(**{f: getattr(self, f)[index] for f in FIELDS})


@dataclasses.dataclass
class ReconBatch:
    """Model inputs and targets of B scenes: input ``views``, ``queries`` cameras (B, Q), their ``rgb``
    (B, Q, 3, H, W) in [0, 1], ``ray_depth`` (B, Q, H, W) m along each ray (0: none) and block ``mask`` (B, Q, H, W)."""

    views: Views
    queries: Cameras
    rgb: torch.Tensor
    ray_depth: torch.Tensor
    mask: torch.Tensor


def load_scenes(root: str | Path, split: str) -> ReconScenes:
    """Every shard of ``<root>/<split>``, in shard order.

    Raises:
        FileNotFoundError: no shard there.
    """
    paths = sorted((Path(root) / split).glob("shard_*.npz"))
    if not paths:
        raise FileNotFoundError(f"no scene shards in {Path(root) / split} (write them with sim.recon_scenes)")
    parts = []
    for path in paths:
        with np.load(path) as shard:
            parts.append({f: shard[f] for f in FIELDS})
    return ReconScenes(**{f: np.concatenate([p[f] for p in parts]) for f in FIELDS})


def make_batch(scenes: ReconScenes, index: np.ndarray, inputs: np.ndarray, queries: np.ndarray,
               device: torch.device | str = "cpu") -> ReconBatch:
    """The batch of scenes ``index`` (B,) with input views ``inputs`` (B, k) and query views ``queries`` (B, Q)
    (view indices per scene).

    Raises:
        ValueError: index arrays whose shapes disagree.
    """
    if inputs.ndim != 2 or queries.ndim != 2 or len(inputs) != len(index) or len(queries) != len(index):
        raise ValueError(f"make_batch: need inputs (B, k) and queries (B, Q) for B = {len(index)} scenes, got "
                         f"{inputs.shape} and {queries.shape}")
    rows = np.asarray(index)[:, None]
    size = scenes.images.shape[2:4]

    def cameras(views: np.ndarray) -> Cameras:
        return Cameras(torch.as_tensor(scenes.intrinsics[rows, views], device=device),
                       torch.as_tensor(scenes.world_from_camera[rows, views], device=device), *size)

    def images(views: np.ndarray) -> torch.Tensor:
        pixels = torch.as_tensor(scenes.images[rows, views], device=device)
        return pixels.permute(0, 1, 4, 2, 3).float() / 255.0

    query_cameras = cameras(queries)
    depth = torch.as_tensor(scenes.depth[rows, queries], device=device)
    input_views = Views(images(inputs), cameras(inputs), torch.as_tensor(scenes.depth[rows, inputs], device=device))
    return ReconBatch(input_views, query_cameras, images(queries), z_to_ray_depth(depth, query_cameras),
                      torch.as_tensor(scenes.mask[rows, queries], device=device))


def sample_batch(scenes: ReconScenes, rng: np.random.Generator, batch_size: int, n_inputs: int, n_query: int,
                 device: torch.device | str = "cpu") -> ReconBatch:
    """``batch_size`` random scenes, each with ``n_inputs`` input and ``n_query`` query views drawn without
    replacement from its views.

    Raises:
        ValueError: more views asked for than a scene has.
    """
    if n_inputs + n_query > scenes.n_views:
        raise ValueError(f"sample_batch: {n_inputs} input + {n_query} query views, but scenes have {scenes.n_views}")
    index = rng.integers(len(scenes), size=batch_size)
    order = np.argsort(rng.random((batch_size, scenes.n_views)), axis=1)
    return make_batch(scenes, index, order[:, :n_inputs], order[:, n_inputs:n_inputs + n_query], device)
