"""What the PushT scene gives perception: the T-block's surface model, and the default estimators of a twin (the depth
ICP tracker; with ``twin.correction=recon`` the RGB reconstruction estimator).

``perception/`` never reads the simulator; this module is where the MuJoCo model's geometry becomes the plain arrays
and numbers the estimators take (surface points and normals, the pusher's radius).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import mujoco
import numpy as np

from perception.block_tracker import BlockTracker, BlockTrackerConfig
from perception.object_points import Segmentation
from sim.pusht_geometry import BLOCK_GEOMS

if TYPE_CHECKING:
    from perception.protocol import Estimator
    from perception.recon_estimator import ReconEstimator
    from sim.pusht_env import PushTEnv
    from sim.twin import TwinConfig

SURFACE_SPACING = 0.004  # m between the surface model's points
RELOCALIZE_AFTER = 0.2  # s of twin time without an accepted fit before the block is searched for from scratch
RELOCALIZE_YAWS = 24  # initial yaws tried by that search


def segmentation(env: PushTEnv, config: TwinConfig) -> Segmentation:
    """Which depth points are the block's in ``env``'s scene: the twin's height band, and the pusher's radius plus
    ``config.pusher_clearance`` around the pusher."""
    return Segmentation(tuple(config.height_band), float(env.model.geom("pusher").size[0]) + config.pusher_clearance)


def depth_block_tracker(env: PushTEnv, config: TwinConfig) -> BlockTracker:
    """The twin's default estimator: the ICP tracker of ``env``'s T-block with the twin's acceptance thresholds
    (``min_fitness``, ``max_rmse``) and correspondence distance (``cutoff / 2``)."""
    points, normals = block_surface(env.model, spacing=SURFACE_SPACING)
    tracker_config = BlockTrackerConfig(min_fitness=config.min_fitness, max_rmse=config.max_rmse,
                                        max_correspondence=config.cutoff / 2, relocalize_after=RELOCALIZE_AFTER,
                                        relocalize_yaws=RELOCALIZE_YAWS)
    return BlockTracker(points, normals, tracker_config, segmentation(env, config))


def default_estimator(env: PushTEnv, config: TwinConfig) -> Estimator:
    """The twin's estimator for ``config.correction``: :func:`recon_block_estimator` for ``recon``, else
    :func:`depth_block_tracker`.

    Raises:
        ValueError / FileNotFoundError: ``recon`` without a loadable ``twin.recon_model`` (naming the key).
    """
    if config.correction == "recon":
        return recon_block_estimator(env, config)
    return depth_block_tracker(env, config)


def recon_block_estimator(env: PushTEnv, config: TwinConfig, model: object | None = None) -> ReconEstimator:
    """The twin's RGB estimator: ``model`` (default: loaded from ``config.recon_model``, seen at its training
    resolution) on the colour frames, its points registered to ``env``'s T-block with the depth tracker's
    thresholds and segmentation.

    Raises:
        ValueError: no ``model`` and an empty ``twin.recon_model``. FileNotFoundError: no model in that directory
            (the message names ``twin.recon_model``).
    """
    from perception.recon import load_recon
    from perception.recon_estimator import ReconEstimator, ReconEstimatorConfig

    if model is None:
        if not config.recon_model:
            raise ValueError("twin.correction=recon needs twin.recon_model: the directory of a trained "
                             "reconstruction model (model.safetensors + config.json, e.g. from scripts/train_recon.py)")
        try:
            model = load_recon(config.recon_model)
        except FileNotFoundError as error:
            raise FileNotFoundError(f"twin.recon_model={config.recon_model!r}: {error}") from error
    input_size = int(getattr(getattr(model, "config", None), "image_size", 0))
    tracker = depth_block_tracker(env, config)
    # points farther from the prior's block origin than the block's farthest point plus the twin's cutoff are not its
    reach = float(np.linalg.norm(tracker.surface_points[:, :2], axis=1).max()) + config.cutoff
    estimator_config = ReconEstimatorConfig(min_opacity=config.recon_min_opacity, crop_radius=reach,
                                            input_size=input_size, query_scale=config.recon_query_scale)
    return ReconEstimator(model, tracker.surface_points, tracker.surface_normals, estimator_config, tracker.config,
                          tracker.segmentation)


def block_surface(model: mujoco.MjModel, spacing: float) -> tuple[np.ndarray, np.ndarray]:
    """Points about ``spacing`` m apart on the faces of the block's boxes, with outward normals (block frame)."""
    points, normals = [], []
    for name in BLOCK_GEOMS:
        geom = model.geom(name)
        center, half = geom.pos.copy(), geom.size.copy()
        for axis in range(3):
            u, v = [a for a in range(3) if a != axis]
            nu, nv = (max(2, round(2 * half[a] / spacing) + 1) for a in (u, v))
            grid = np.stack(np.meshgrid(np.linspace(-half[u], half[u], nu), np.linspace(-half[v], half[v], nv)), -1)
            for side in (-1.0, 1.0):
                face = np.zeros((grid.shape[0] * grid.shape[1], 3))
                face[:, u], face[:, v] = grid[..., 0].ravel(), grid[..., 1].ravel()
                face[:, axis] = side * half[axis]
                normal = np.zeros(3)
                normal[axis] = side
                points.append(face + center)
                normals.append(np.repeat(normal[None], len(face), 0))
    points, normals = np.concatenate(points), np.concatenate(normals)
    # Drop faces shared by the two boxes (inside the T) and the duplicates on box edges.
    boxes = [(model.geom(name).pos, model.geom(name).size) for name in BLOCK_GEOMS]
    probe = points + 1e-3 * normals
    inside = np.zeros(len(points), dtype=bool)
    for center, half in boxes:
        inside |= np.all(np.abs(probe - center) < half, axis=1)
    points, normals = points[~inside], normals[~inside]
    _, keep = np.unique(np.round(points / (spacing / 4)), axis=0, return_index=True)
    return points[np.sort(keep)], normals[np.sort(keep)]
