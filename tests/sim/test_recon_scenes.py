"""sim/recon_scenes.py: the stored cameras are the ones MuJoCo rendered with (the block's true surface projects onto
pixels whose rendered depth matches), scenes are deterministic in their seed, shards resume and splits differ."""

from __future__ import annotations

import numpy as np
import pytest

from sim.recon_scenes import SceneConfig, SceneRenderer, look_at, split_seeds, write_scenes


@pytest.fixture(scope="module")
def scene():
    renderer = SceneRenderer(SceneConfig(image_size=64, n_views=6))
    try:
        yield renderer.scene(7), renderer.scene(7)
    finally:
        renderer.close()


def _depth_agreement(scene: dict, world_from_camera: np.ndarray, view: int, tol: float = 0.004) -> float:
    """Fraction of the block surface points in view whose pixel's rendered depth is within ``tol`` m of theirs."""
    k, pose = scene["intrinsics"][view], world_from_camera
    local = (scene["surface"] - pose[:3, 3]) @ pose[:3, :3]
    uvw = local @ k.T
    u, v = np.round(uvw[:, 0] / uvw[:, 2]).astype(int), np.round(uvw[:, 1] / uvw[:, 2]).astype(int)
    size = scene["depth"].shape[-1]
    inside = (u >= 0) & (u < size) & (v >= 0) & (v < size) & (local[:, 2] > 0)
    rendered = scene["depth"][view][v[inside], u[inside]]
    return float(np.mean(np.abs(rendered - local[inside, 2]) < tol))


def test_true_surface_projects_onto_pixels_of_its_rendered_depth(scene):
    s, _ = scene
    # about half the surface faces a camera; the rest is hidden behind the block's own faces (depth in front of it)
    agree = [_depth_agreement(s, s["world_from_camera"][v], v) for v in range(len(s["images"]))]
    assert np.median(agree) > 0.25
    # a camera 1 cm off along its axis loses the agreement: the check sees a wrong pose
    shifted = [s["world_from_camera"][v].copy() for v in range(len(s["images"]))]
    for pose in shifted:
        pose[:3, 3] += 0.01 * pose[:3, 2]
    wrong = [_depth_agreement(s, shifted[v], v) for v in range(len(s["images"]))]
    assert np.median(wrong) < 0.1


def test_block_pixels_back_project_onto_the_block_surface(scene):
    s, _ = scene
    for view in range(len(s["images"])):
        v, u = np.nonzero(s["mask"][view])
        if len(u) == 0:
            continue
        z = s["depth"][view][v, u]
        rays = np.stack((u, v, np.ones_like(u)), axis=1) @ np.linalg.inv(s["intrinsics"][view]).T
        world = (rays * z[:, None]) @ s["world_from_camera"][view][:3, :3].T + s["world_from_camera"][view][:3, 3]
        nearest = np.min(np.linalg.norm(world[:, None] - s["surface"][None], axis=-1), axis=1)
        assert np.median(nearest) < 0.004  # surface sample ~3 mm apart, 1024 of them


def test_a_scene_is_deterministic_in_its_seed_and_looks_at_the_block(scene):
    a, b = scene
    for key in ("images", "depth", "world_from_camera", "surface", "block_pose"):
        np.testing.assert_array_equal(a[key], b[key])
    assert a["mask"].any(axis=(1, 2)).mean() >= 0.5  # the block is seen in most views (the arm may hide it)
    assert a["images"].shape == (6, 64, 64, 3) and a["images"].dtype == np.uint8
    np.testing.assert_allclose(a["intrinsics"][:, 0, 2], 31.5)


def test_look_at_points_the_optical_axis_at_the_target():
    rotation = look_at(np.array([1.0, 0.0, 1.0]), np.zeros(3))
    np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(rotation[:, 2], np.array([-1.0, 0.0, -1.0]) / np.sqrt(2))
    assert rotation[2, 1] < 0  # image y (down) points down in the world
    with pytest.raises(ValueError, match="straight up or down"):
        look_at(np.array([0.0, 0.0, 1.0]), np.zeros(3))


def test_shards_resume_and_splits_do_not_share_seeds(tmp_path):
    cfg = SceneConfig(image_size=16, n_views=2, n_train=3, n_heldout=1, shard_size=2)
    assert write_scenes(tmp_path, cfg, progress=False) == {"train": 2, "heldout": 1}
    first = (tmp_path / "train" / "shard_00000.npz").stat().st_mtime_ns
    (tmp_path / "train" / "shard_00001.npz").unlink()
    write_scenes(tmp_path, cfg, progress=False)
    assert (tmp_path / "train" / "shard_00000.npz").stat().st_mtime_ns == first  # kept, not re-rendered
    with np.load(tmp_path / "train" / "shard_00001.npz") as shard:
        assert shard["seed"].tolist() == [2]
    assert not set(split_seeds(cfg, "train")) & set(split_seeds(cfg, "heldout"))
    with pytest.raises(ValueError, match="fields \\['image_size'\\]"):
        write_scenes(tmp_path, SceneConfig(image_size=32, n_views=2, n_train=3, n_heldout=1, shard_size=2))
    with pytest.raises(ValueError, match="scenes.radius"):
        SceneConfig(radius=[0.8, 0.4])
