"""Scenes the twin renders for the reconstruction model (issue 18): the PushT table with a randomised T-block, seen
by random look-at cameras, under randomised lights and colours, written as a dataset of atomic npz shards.

One scene: the env's reset with the block at a uniform random planar pose in ``block_region`` (the arm parked clear
of it), the block scaled by ``shape_scale`` (both boxes, so it stays a T resting on the table), random block colour,
table tint and light strengths / directions; then ``n_views`` cameras on a hemisphere around the block (radius,
elevation, azimuth uniform; looking at the block's centre plus ``target_jitter``; vertical field of view from
``fovy_deg``, pinhole intrinsics by :func:`kernels.cameras.fovy_intrinsics`). Each view is rendered by MuJoCo:
RGB (``supersample`` x the size, box-filtered down), depth along the optical axis (m) and the block's pixel mask at
``image_size``. Cameras are stored as OpenCV ``world_from_camera`` read back from MuJoCo's camera state after the
pose is set (:func:`kernels.cameras.world_from_camera_cv`), so what is stored is what was rendered.

Dataset layout (``write_scenes``)::

    <root>/meta.json                        the SceneConfig it was made with (a mismatch refuses to add to it)
    <root>/<split>/shard_00000.npz          shard_size scenes, written atomically; existing shards are skipped
        images (S, V, H, W, 3) uint8        depth (S, V, H, W) float32 m (optical axis, 0: none)   mask (S, V, H, W) bool
        intrinsics (S, V, 3, 3) float32     world_from_camera (S, V, 4, 4) float32 (OpenCV axes)
        block_pose (S, 7) float64 (x y z, quat wxyz)   surface (S, N, 3) float32 world points on the block's
        exposed faces (not its bottom)     seed (S,) int64

Splits by seed: ``train`` scene ``i`` is seed ``seed + i``; ``heldout`` scene ``i`` is ``seed + HELDOUT_OFFSET + i``,
so held-out block poses, shapes and cameras are draws the training set never saw.
"""

from __future__ import annotations

import dataclasses
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import mujoco
import numpy as np

from kernels.cameras import CV_FROM_MUJOCO, fovy_intrinsics, world_from_camera_cv
from perception.atomic import atomic_write
from sim.block_perception import block_surface
from sim.pusht_config import PushTConfig
from sim.pusht_env import PushTEnv
from sim.pusht_geometry import BLOCK_GEOMS

HELDOUT_OFFSET = 1_000_000  # held-out scene seeds start here (beyond any training seed)
SPLITS = ("train", "heldout")
SCENE_CAMERA = "overhead"  # the world camera whose pose and fovy are set for each view (a dedicated env's model)
SURFACE_SPACING = 0.003  # m between the block surface model's points before the fixed-size sample


@dataclass
class SceneConfig:
    """How twin scenes for reconstruction are drawn and how many are written (units m, degrees, px).

    Raises:
        ValueError: a field out of range (the message names it).
    """

    image_size: int = 32  # px, square views (the recon preset's image_size)
    supersample: int = 2  # RGB rendered this many times larger per side, then box-filtered (anti-aliasing)
    n_views: int = 20  # views per scene (evaluation: up to 16 inputs + the rest as queries)
    n_surface: int = 1024  # points sampled on the block's exposed surface (Chamfer's truth)
    max_depth: float = 3.0  # m; rendered depth beyond this (the far plane past the table) is stored as 0 (none)
    # cameras: look-at on a hemisphere around the block
    radius: list[float] = field(default_factory=lambda: [0.4, 0.75])  # m from the look-at point
    elevation_deg: list[float] = field(default_factory=lambda: [25.0, 75.0])  # above the table plane
    fovy_deg: list[float] = field(default_factory=lambda: [40.0, 55.0])  # vertical field of view, per view
    target_jitter: float = 0.03  # m, uniform noise on the look-at point (x, y, z)
    # the block
    block_region: list[float] = field(default_factory=lambda: [0.35, -0.22, 0.72, 0.22])  # x0 y0 x1 y1 of its origin
    shape_scale: list[float] = field(default_factory=lambda: [0.85, 1.15])  # uniform scale of the whole T
    # appearance
    light_scale: list[float] = field(default_factory=lambda: [0.5, 1.3])  # factor on each light's diffuse
    light_dir_noise: float = 0.3  # std of the noise added to each light's direction (then renormalised)
    table_tint: list[float] = field(default_factory=lambda: [0.6, 1.0])  # per-channel factor on the table texture
    block_rgb: list[float] = field(default_factory=lambda: [0.1, 0.9])  # per-channel range of the block's colour
    # dataset
    n_train: int = 2000  # scenes in the train split
    n_heldout: int = 64  # scenes in the heldout split
    shard_size: int = 32  # scenes per npz shard (the unit of atomic writes and of resume)
    seed: int = 0  # first training scene's seed

    def __post_init__(self) -> None:
        for name in ("image_size", "supersample", "n_views", "n_surface", "shard_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"scenes.{name} must be >= 1, got {getattr(self, name)}")
        if self.max_depth <= 0:
            raise ValueError(f"scenes.max_depth must be > 0, got {self.max_depth}")
        if self.n_train < 0 or self.n_heldout < 0:
            raise ValueError(f"scenes.n_train and scenes.n_heldout must be >= 0, got {self.n_train}, {self.n_heldout}")
        for name in ("radius", "elevation_deg", "fovy_deg", "shape_scale", "light_scale", "table_tint", "block_rgb"):
            low, high = getattr(self, name)
            if not 0 < low <= high:
                raise ValueError(f"scenes.{name} must be [low, high] with 0 < low <= high, got {[low, high]}")
        if self.elevation_deg[1] >= 90 or self.fovy_deg[1] >= 180:
            raise ValueError(f"scenes.elevation_deg must stay below 90 and fovy_deg below 180, got "
                             f"{self.elevation_deg}, {self.fovy_deg}")
        x0, y0, x1, y1 = self.block_region
        if x1 < x0 or y1 < y0:
            raise ValueError(f"scenes.block_region must be [x0, y0, x1, y1] with x0 <= x1, y0 <= y1, got "
                             f"{self.block_region}")


def look_at(position: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The 3x3 rotation (columns: camera axes in the world) of an OpenCV camera at ``position`` looking at ``target``
    with world z up in the image (x right, y down, z forward).

    Raises:
        ValueError: looking straight up or down, or at its own position.
    """
    forward = np.asarray(target, float) - np.asarray(position, float)
    right = np.cross(forward, (0.0, 0.0, 1.0))
    if np.linalg.norm(forward) < 1e-9 or np.linalg.norm(right) < 1e-9 * np.linalg.norm(forward):
        raise ValueError("look_at: the camera must not look straight up or down, or at its own position")
    forward, right = forward / np.linalg.norm(forward), right / np.linalg.norm(right)
    return np.stack((right, np.cross(forward, right), forward), axis=1)


class SceneRenderer:
    """Draws and renders scenes (module docstring) in one dedicated PushT env whose model it modifies."""

    def __init__(self, config: SceneConfig):
        self.config = c = config
        self.env = PushTEnv(PushTConfig(), render_mode=None)
        model = self.env.model
        self.camera = model.camera(SCENE_CAMERA).id
        self.block_geoms = [model.geom(name).id for name in BLOCK_GEOMS]
        self.table_mat = model.mat("table").id
        self._nominal = {"geom_size": model.geom_size.copy(), "geom_pos": model.geom_pos.copy(),
                         "light_diffuse": model.light_diffuse.copy(), "light_dir": model.light_dir.copy(),
                         "mat_rgba": model.mat_rgba.copy(), "geom_rgba": model.geom_rgba.copy()}
        size = c.image_size
        self.rgb_renderer = mujoco.Renderer(model, height=size * c.supersample, width=size * c.supersample)
        self.renderer = mujoco.Renderer(model, height=size, width=size)

    def close(self) -> None:
        """Releases the renderers and the env."""
        self.rgb_renderer.close()
        self.renderer.close()
        self.env.close()

    def _randomize(self, rng: np.random.Generator) -> None:
        """Block scale and colour, table tint, light strengths and directions (from the nominal model)."""
        c, model = self.config, self.env.model
        for name, value in self._nominal.items():
            getattr(model, name)[:] = value
        scale, colour = rng.uniform(*c.shape_scale), rng.uniform(*c.block_rgb, size=3)
        for g in self.block_geoms:
            model.geom_size[g] *= scale
            model.geom_pos[g] *= scale
            model.geom_rgba[g, :3] = colour
        model.mat_rgba[self.table_mat, :3] *= rng.uniform(*c.table_tint, size=3)
        model.light_diffuse[:] *= rng.uniform(*c.light_scale, size=(model.nlight, 1))
        direction = model.light_dir + rng.normal(0.0, c.light_dir_noise, size=model.light_dir.shape)
        direction[:, 2] = -np.abs(direction[:, 2]) - 0.2  # lights keep shining down onto the table
        model.light_dir[:] = direction / np.linalg.norm(direction, axis=1, keepdims=True)

    def _place_camera(self, rng: np.random.Generator, target: np.ndarray) -> float:
        """Puts the scene camera on the hemisphere around ``target``; returns its fovy (deg)."""
        c, model = self.config, self.env.model
        radius, azimuth = rng.uniform(*c.radius), rng.uniform(-np.pi, np.pi)
        elevation = np.deg2rad(rng.uniform(*c.elevation_deg))
        aim = target + rng.uniform(-c.target_jitter, c.target_jitter, size=3)
        position = aim + radius * np.array([np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth),
                                            np.sin(elevation)])
        rotation = look_at(position, aim) @ CV_FROM_MUJOCO  # MuJoCo camera axes: y up, looking along -z
        quat = np.zeros(4)
        mujoco.mju_mat2Quat(quat, rotation.ravel())
        model.cam_pos[self.camera], model.cam_quat[self.camera] = position, quat
        model.cam_fovy[self.camera] = fovy = rng.uniform(*c.fovy_deg)
        return float(fovy)

    def _render_view(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(rgb HxWx3 uint8, depth HxW float32 m, block mask HxW bool) of the scene camera in its current pose."""
        c, data = self.config, self.env.data
        self.rgb_renderer.update_scene(data, camera=self.camera)
        hi = self.rgb_renderer.render().astype(np.float32)
        s, size = c.supersample, c.image_size
        rgb = hi.reshape(size, s, size, s, 3).mean(axis=(1, 3)).round().astype(np.uint8)
        self.renderer.enable_depth_rendering()
        self.renderer.update_scene(data, camera=self.camera)
        depth = self.renderer.render().astype(np.float32)
        depth[depth > c.max_depth] = 0.0  # past the table: no surface (MuJoCo's far plane)
        self.renderer.disable_depth_rendering()
        self.renderer.enable_segmentation_rendering()
        self.renderer.update_scene(data, camera=self.camera)
        seg = self.renderer.render()
        self.renderer.disable_segmentation_rendering()
        mask = np.isin(seg[..., 0], self.block_geoms) & (seg[..., 1] == mujoco.mjtObj.mjOBJ_GEOM)
        return rgb, depth, mask

    def scene(self, seed: int) -> dict[str, np.ndarray]:
        """One scene of ``seed`` (deterministic in it): the arrays of one row of a shard (module docstring)."""
        c, env = self.config, self.env
        rng = np.random.default_rng(seed)
        self._randomize(rng)
        x0, y0, x1, y1 = c.block_region
        pose = np.array([rng.uniform(x0, x1), rng.uniform(y0, y1), rng.uniform(-np.pi, np.pi)])
        env.reset(seed=int(seed), options={"block_pose": pose})
        body = env.model.body("block").id
        block_pose = np.concatenate((env.data.xpos[body], env.data.xquat[body]))
        views = {"images": [], "depth": [], "mask": [], "intrinsics": [], "world_from_camera": []}
        for _ in range(c.n_views):
            fovy = self._place_camera(rng, env.data.xpos[body].copy())
            mujoco.mj_forward(env.model, env.data)
            for key, value in zip(("images", "depth", "mask"), self._render_view(), strict=True):
                views[key].append(value)
            views["intrinsics"].append(fovy_intrinsics(fovy, c.image_size, c.image_size))
            views["world_from_camera"].append(world_from_camera_cv(env.model, env.data, self.camera))
        out = {k: np.stack(v) for k, v in views.items()}
        out["intrinsics"] = out["intrinsics"].astype(np.float32)
        out["world_from_camera"] = out["world_from_camera"].astype(np.float32)
        out["block_pose"], out["surface"], out["seed"] = block_pose, self._surface(rng, body), np.int64(seed)
        return out

    def _surface(self, rng: np.random.Generator, body: int) -> np.ndarray:
        """``n_surface`` world points on the block's faces other than its bottom (float32, m)."""
        points, normals = block_surface(self.env.model, spacing=SURFACE_SPACING)
        points = points[normals[:, 2] > -0.5]
        pick = rng.choice(len(points), self.config.n_surface, replace=len(points) < self.config.n_surface)
        data = self.env.data
        world = points[pick] @ data.xmat[body].reshape(3, 3).T + data.xpos[body]
        return world.astype(np.float32)


def split_seeds(config: SceneConfig, split: str) -> np.ndarray:
    """The scene seeds of ``split`` (``train`` or ``heldout``).

    Raises:
        ValueError: an unknown split.
    """
    if split == "train":
        return config.seed + np.arange(config.n_train)
    if split == "heldout":
        return config.seed + HELDOUT_OFFSET + np.arange(config.n_heldout)
    raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")


def _check_meta(root: Path, config: SceneConfig) -> None:
    """Writes ``meta.json`` or checks that the one there describes the same scenes (only counts may differ)."""
    meta = root / "meta.json"
    mine = dataclasses.asdict(config)
    if meta.is_file():
        theirs = json.loads(meta.read_text())
        differ = sorted(k for k in mine if k not in ("n_train", "n_heldout") and theirs.get(k) != mine[k])
        if differ:
            raise ValueError(f"{root} holds scenes of another SceneConfig (fields {differ} differ); use another "
                             f"data_root")
    root.mkdir(parents=True, exist_ok=True)
    atomic_write(meta, json.dumps(mine, indent=2).encode())


def write_scenes(root: str | Path, config: SceneConfig, splits: tuple[str, ...] = SPLITS,
                 progress: bool = True) -> dict[str, int]:
    """Renders the scenes of ``splits`` into ``root`` (layout in the module docstring), shard by shard, skipping
    shards already there (resumable); returns how many shards each split has.

    Raises:
        ValueError: ``root`` holds scenes of another config.
    """
    root = Path(root)
    _check_meta(root, config)
    renderer: SceneRenderer | None = None
    counts = {}
    try:
        for split in splits:
            seeds = split_seeds(config, split)
            shards = [seeds[i:i + config.shard_size] for i in range(0, len(seeds), config.shard_size)]
            (root / split).mkdir(parents=True, exist_ok=True)
            for index, shard in enumerate(shards):
                path = root / split / f"shard_{index:05d}.npz"
                if path.is_file():
                    continue
                renderer = renderer or SceneRenderer(config)
                rows = [renderer.scene(int(s)) for s in shard]
                buffer = io.BytesIO()
                np.savez(buffer, **{k: np.stack([r[k] for r in rows]) for k in rows[0]})
                atomic_write(path, buffer.getvalue())
                if progress:
                    print(f"scenes {split}: shard {index + 1}/{len(shards)} written", flush=True)
            counts[split] = len(shards)
    finally:
        if renderer is not None:
            renderer.close()
    return counts
