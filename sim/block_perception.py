"""What the PushT scene gives perception: the T-block's surface model, and the default depth tracker of a twin.

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
