"""Batched ray-cast renderer against MuJoCo's own renderer (depth, segmentation) on the PushT scene and others."""

from __future__ import annotations

from pathlib import Path

import mujoco
import numpy as np
import pytest
import torch

from kernels import depth_to_points, world_from_camera_cv
from kernels.render import BatchRenderer, geom_color

PUSHT = Path(__file__).resolve().parents[2] / "sim" / "assets" / "pusht.xml"

# Every geom type the renderer tessellates, a mesh geom, and two cameras with the same fovy.
SHAPES = """<mujoco>
  <asset>
    <mesh name="wedge" vertex="0 0 0  0.1 0 0  0 0.08 0  0 0 0.06  0.1 0 0.06  0 0.08 0.06"/>
    <hfield name="bumps" nrow="9" ncol="9" size="0.1 0.1 0.03 0.01"
            elevation="0 0 0 0 0 0 0 0 0  0 1 1 1 1 1 1 1 0  0 1 2 2 2 2 2 1 0  0 1 2 3 3 3 2 1 0  0 1 2 3 4 3 2 1 0
                       0 1 2 3 3 3 2 1 0  0 1 2 2 2 2 2 1 0  0 1 1 1 1 1 1 1 0  0 0 0 0 0 0 0 0 0"/>
  </asset>
  <worldbody>
    <geom name="floor" type="plane" size="1 1 0.1" rgba="0.8 0.8 0.8 1"/>
    <geom name="box" type="box" size="0.05 0.08 0.04" pos="0.15 0.1 0.04" euler="0 0 0.5" rgba="1 0 0 1"/>
    <geom name="ball" type="sphere" size="0.06" pos="-0.15 0.1 0.06" rgba="0 1 0 1"/>
    <geom name="pill" type="capsule" size="0.03 0.08" pos="0 -0.15 0.05" euler="1.2 0.3 0" rgba="0 0 1 1"/>
    <geom name="can" type="cylinder" size="0.04 0.05" pos="-0.15 -0.12 0.05" rgba="1 1 0 1"/>
    <geom name="egg" type="ellipsoid" size="0.03 0.05 0.04" pos="0.15 -0.12 0.04" rgba="0 1 1 1"/>
    <geom name="wedge" type="mesh" mesh="wedge" pos="0.02 0.18 0" rgba="1 0 1 1"/>
    <geom name="bumps" type="hfield" hfield="bumps" pos="-0.05 0.35 0" rgba="0.6 0.4 0.2 1"/>
    <geom name="hidden" type="sphere" size="0.05" pos="0 0 0.3" group="4"/>
    <camera name="top" pos="0 0.05 0.9" xyaxes="1 0 0 0 1 0" fovy="50"/>
    <camera name="side" pos="0.7 -0.5 0.45" xyaxes="0.58 0.81 0 -0.35 0.25 0.9" fovy="50"/>
  </worldbody>
</mujoco>"""


def mujoco_reference(model, data, camera, height, width):
    """MuJoCo's depth (m, 0 where nothing) and geom segmentation (-1 background), sites hidden."""
    renderer = mujoco.Renderer(model, height, width)
    opt = mujoco.MjvOption()
    opt.sitegroup[:] = 0
    try:
        renderer.enable_depth_rendering()
        renderer.update_scene(data, camera=camera, scene_option=opt)
        depth = renderer.render().copy()
        renderer.disable_depth_rendering()
        renderer.enable_segmentation_rendering()
        renderer.update_scene(data, camera=camera, scene_option=opt)
        seg = renderer.render().copy()
    finally:
        renderer.close()
    geom = np.where(seg[..., 1] == int(mujoco.mjtObj.mjOBJ_GEOM), seg[..., 0], -1)
    depth[geom < 0] = 0.0
    return depth, geom


def interior(seg: np.ndarray) -> np.ndarray:
    """Pixels whose 3x3 neighbourhood shows one object: away from silhouette edges."""
    h, w = seg.shape
    pad = np.pad(seg, 1, mode="edge")
    out = np.ones_like(seg, dtype=bool)
    for di in (-1, 0, 1):
        for dj in (-1, 0, 1):
            out &= pad[1 + di : 1 + di + h, 1 + dj : 1 + dj + w] == seg
    return out


def assert_matches_mujoco(model, data, renderer, world, cameras, out):
    for c, cam in enumerate(cameras):
        depth, geom = mujoco_reference(model, data, cam, renderer.height, renderer.width)
        ours_depth, ours_geom = out.depth[world, c], out.geom[world, c]
        assert np.mean(ours_geom == geom) >= 0.98, cam
        keep = interior(geom) & (geom >= 0) & (ours_geom == geom)
        assert keep.sum() > 0.3 * geom.size
        assert np.median(np.abs(ours_depth - depth)[keep]) < 1e-3, cam
        np.testing.assert_array_equal(out.body[world, c][ours_geom >= 0], model.geom_bodyid[ours_geom[ours_geom >= 0]])
        assert np.all(out.body[world, c][ours_geom < 0] == -1)


@pytest.fixture(scope="module")
def pusht():
    if not PUSHT.exists():
        pytest.skip(f"{PUSHT} is not there yet")
    return mujoco.MjModel.from_xml_path(str(PUSHT))


def _pusht_states(model, n, seed=0):
    rng = np.random.default_rng(seed)
    datas = []
    for _ in range(n):
        d = mujoco.MjData(model)
        if model.nkey:
            mujoco.mj_resetDataKeyframe(model, d, 0)
        d.qpos[:2] += rng.uniform(-0.08, 0.08, 2)
        yaw = rng.uniform(-np.pi, np.pi)
        d.qpos[3:7] = [np.cos(yaw / 2), 0, 0, np.sin(yaw / 2)]
        d.qpos[7:] += rng.normal(scale=0.15, size=model.nq - 7)
        mujoco.mj_forward(model, d)
        datas.append(d)
    return datas


def test_pusht_depth_and_segmentation_match_mujoco(pusht, device):
    cameras = [mujoco.mj_id2name(pusht, mujoco.mjtObj.mjOBJ_CAMERA, i) for i in range(pusht.ncam)]
    datas = _pusht_states(pusht, 4)  # 4 worlds: world-fixed cameras go through the static layer
    renderer = BatchRenderer(pusht, cameras, 96, 96, num_worlds=len(datas), device=device)
    renderer.update(datas)
    out = renderer.render()
    assert out.depth.shape == (4, len(cameras), 96, 96) and out.rgb.shape == (4, len(cameras), 96, 96, 3)
    for w, d in enumerate(datas):
        assert_matches_mujoco(pusht, d, renderer, w, cameras, out)


def test_all_geom_types_match_mujoco(device):
    model = mujoco.MjModel.from_xml_string(SHAPES)
    data = mujoco.MjData(model)
    mujoco.mj_forward(model, data)
    renderer = BatchRenderer(model, ["top", "side"], 120, 160, device=device)
    renderer.update(data)
    out = renderer.render()
    seen = set(np.unique(out.geom).tolist())
    expected = {mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, n) for n in
                ("floor", "box", "ball", "pill", "can", "egg", "wedge", "bumps")}
    assert expected <= seen
    assert mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, "hidden") not in seen  # group 4 is not drawn
    assert_matches_mujoco(model, data, renderer, 0, ["top", "side"], out)


def test_shading_is_geom_colour_times_lambert(device):
    model = mujoco.MjModel.from_xml_string(SHAPES)
    data = mujoco.MjData(model)
    mujoco.mj_forward(model, data)
    renderer = BatchRenderer(model, ["top"], 60, 80, ambient=0.25, device=device)
    renderer.update(data)
    out = renderer.render()
    geom, rgb = out.geom[0, 0], out.rgb[0, 0].astype(np.float64)
    assert np.all(rgb[geom < 0] == 0)
    floor = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, "floor")
    colour = geom_color(model, floor)[:3]
    # The floor faces the camera: shade = ambient + (1 - ambient) * cos(angle between ray and normal).
    rows, cols = np.nonzero(geom == floor)
    k = renderer.intrinsics()
    rays = np.stack([(cols - k[0, 2]) / k[0, 0], (rows - k[1, 2]) / k[1, 1], np.ones(len(rows))], axis=1)
    cos = 1.0 / np.linalg.norm(rays, axis=1)
    expected = np.clip(np.round(np.outer(0.25 + 0.75 * cos, colour) * 255), 0, 255)
    np.testing.assert_allclose(rgb[rows, cols], expected, atol=1.0)
    ball = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, "ball")
    green = rgb[geom == ball]
    assert np.all(green[:, [0, 2]] == 0) and green[:, 1].min() >= 0.25 * 255 - 1 and green[:, 1].max() <= 255


def test_depth_back_projects_onto_the_scene(device):
    model = mujoco.MjModel.from_xml_string(SHAPES)
    data = mujoco.MjData(model)
    mujoco.mj_forward(model, data)
    renderer = BatchRenderer(model, ["side"], 90, 120, device=device)
    renderer.update(data)
    out = renderer.render()
    pose = renderer.world_from_camera_cv(0, 0)
    np.testing.assert_allclose(pose, world_from_camera_cv(model, data, "side"), atol=1e-6)
    floor = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, "floor")
    pts = depth_to_points(out.depth[0, 0], renderer.intrinsics(0), world_from_camera=pose,
                          mask=out.geom[0, 0] == floor).points
    assert len(pts) > 1000
    np.testing.assert_allclose(pts[:, 2], 0.0, atol=1e-5)  # the floor is the plane z = 0
    ball = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, "ball")
    pts = depth_to_points(out.depth[0, 0], renderer.intrinsics(0), world_from_camera=pose,
                          mask=out.geom[0, 0] == ball).points
    r = np.linalg.norm(pts - data.geom_xpos[ball], axis=1)
    q = model.vis.quality  # tessellated sphere: inside by at most the sagitta of one slice and one stack
    sag = 0.06 * (1 - np.cos(np.pi / q.numslices) * np.cos(np.pi / (2 * q.numstacks)))
    assert np.all(r <= 0.06 + 1e-5) and np.all(r >= 0.06 - sag - 1e-5)


def test_many_worlds_equal_single_world_renders_and_arrays_update(pusht):
    cameras = ["overhead", "wrist"]
    datas = _pusht_states(pusht, 4, seed=1)
    batch = BatchRenderer(pusht, cameras, 48, 64, num_worlds=4)
    batch.update(datas)
    out = batch.render(like="torch")
    assert isinstance(out.depth, torch.Tensor) and out.depth.shape == (4, 2, 48, 64)
    single = BatchRenderer(pusht, cameras, 48, 64)
    for w, d in enumerate(datas):
        single.update(d)
        one = single.render()
        np.testing.assert_array_equal(one.geom[0], out.geom[w].numpy())
        np.testing.assert_allclose(one.depth[0], out.depth[w].numpy(), atol=1e-6)
    stack = lambda name: np.stack([getattr(d, name) for d in datas])  # noqa: E731
    batch.update_from_arrays(stack("geom_xpos"), stack("geom_xmat"), stack("cam_xpos"), stack("cam_xmat"))
    again = batch.render()
    np.testing.assert_array_equal(again.geom, out.geom.numpy())
    batch.update_from_body_poses(stack("xpos"), stack("xquat"))  # what a batched simulator provides
    from_bodies = batch.render()
    assert np.mean(from_bodies.geom == out.geom.numpy()) > 0.999
    np.testing.assert_allclose(from_bodies.depth, out.depth.numpy(), atol=1e-4)


def test_free_camera_pose_renders_like_the_model_camera():
    model = mujoco.MjModel.from_xml_string(SHAPES)
    data = mujoco.MjData(model)
    mujoco.mj_forward(model, data)
    renderer = BatchRenderer(model, ["top", "side"], 40, 50)
    renderer.update(data)
    side = renderer.render().depth[0, 1]
    side_id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, "side")
    renderer.set_camera_pose(0, 0, data.cam_xpos[side_id], data.cam_xmat[side_id])  # "top" slot, same fovy
    np.testing.assert_allclose(renderer.render().depth[0, 0], side, atol=1e-6)


def test_moving_one_world_camera_leaves_the_others_on_the_static_layer():
    model = mujoco.MjModel.from_xml_string(SHAPES.replace('<geom name="ball"', '<body><freejoint/><geom name="ball"')
                                           .replace('rgba="0 1 0 1"/>', 'rgba="0 1 0 1"/></body>', 1))
    datas = []
    for shift in range(5):
        d = mujoco.MjData(model)
        d.qpos[:3] = [-0.15 + 0.02 * shift, 0.1, 0.06]
        mujoco.mj_forward(model, d)
        datas.append(d)
    renderer = BatchRenderer(model, ["top", "side"], 40, 50, num_worlds=5)
    renderer.update(datas)
    before = renderer.render()
    side = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, "side")
    renderer.set_camera_pose(2, 0, datas[2].cam_xpos[side], datas[2].cam_xmat[side])
    after = renderer.render()
    np.testing.assert_allclose(after.depth[2, 0], before.depth[2, 1], atol=1e-6)  # world 2 now sees the side view
    keep = [0, 1, 3, 4]
    np.testing.assert_array_equal(after.geom[keep], before.geom[keep])
    single = BatchRenderer(model, ["top", "side"], 40, 50)
    for w in keep:  # and the static layer gives what one world rendered alone (no layer) gives
        single.update(datas[w])
        one = single.render()
        np.testing.assert_array_equal(one.geom[0], after.geom[w])
        np.testing.assert_allclose(one.depth[0], after.depth[w], atol=1e-6)
        np.testing.assert_array_equal(one.rgb[0], after.rgb[w])


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda m, d: BatchRenderer(m, ["nope"], 8, 8), ValueError,
         r"camera 'nope' does not exist; the model has cameras \['top', 'side'\]"),
        (lambda m, d: BatchRenderer(m, [7], 8, 8), ValueError, "camera 7 does not exist"),
        (lambda m, d: BatchRenderer(m, [], 8, 8), ValueError, "cameras must list at least one camera"),
        (lambda m, d: BatchRenderer(m, ["top"], 0, 8), ValueError, "height must be > 0"),
        (lambda m, d: BatchRenderer(m, ["top"], 8, 8, geom_groups=[5]), ValueError, "no geom with alpha > 0 in groups"),
        (lambda m, d: BatchRenderer(m, ["top"], 8, 8).render(), RuntimeError, r"call update\(data\) before render"),
        (lambda m, d: BatchRenderer(m, ["top"], 8, 8, num_worlds=2).update(d), ValueError, "update needs 2 MjData"),
        (lambda m, d: BatchRenderer(m, ["top"], 8, 8).update_from_arrays(d.geom_xpos, d.geom_xmat, d.cam_xpos, d.cam_xmat),
         ValueError, r"geom_xpos must have shape \(1, 9, 3\), got \(9, 3\)"),
        (lambda m, d: BatchRenderer(m, ["top"], 8, 8).set_camera_pose(0, 0, [0, 0, 1], np.ones((3, 3))), ValueError,
         "xmat must be a rotation matrix"),
        (lambda m, d: BatchRenderer(m, ["top"], 8, 8).set_camera_pose(0, 3, [0, 0, 1], np.eye(3)), ValueError, "out of range"),
        (lambda m, d: BatchRenderer(m, ["top"], 8, 8).update_from_body_poses(d.xpos[None], 2 * d.xquat[None]), ValueError,
         "xquat must hold unit quaternions"),
    ],
)
def test_renderer_rejects_bad_input(call, error, message):
    model = mujoco.MjModel.from_xml_string(SHAPES)
    data = mujoco.MjData(model)
    mujoco.mj_forward(model, data)
    with pytest.raises(error, match=message):
        call(model, data)
