"""The reconstruction model (issue 18): the LaCT update against a hand-written reference, Newton-Schulz's band,
streaming against all-at-once, Plücker rays by hand, the renderer, checkpoints, input errors, and a tiny overfit."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from perception.frames import ColorFrame
from perception.recon import (
    Cameras,
    FastWeights,
    ReconConfig,
    ReconModel,
    Views,
    forward_flops,
    inner_gradients,
    lact_update,
    load_recon,
    newton_schulz,
    pixel_rays,
    plucker_rays,
    recon_loss,
    save_recon,
    splat_points,
    views_from_frames,
)
from perception.recon.bench import run_recon_benchmarks

SIZE = 16  # px: tests run the tiny preset's network on 16x16 views (4 tokens each)


# ---------------------------------------------------------------------------------------------- a synthetic scene
def look_at(eye: np.ndarray, target: np.ndarray) -> np.ndarray:
    """world_from_camera (OpenCV axes) of a camera at ``eye`` looking at ``target``, world z up."""
    forward = (target - eye) / np.linalg.norm(target - eye)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    pose = np.eye(4)
    pose[:3, :3] = np.stack([right, np.cross(forward, right), forward], axis=1)
    pose[:3, 3] = eye
    return pose


def ring_cameras(n: int, size: int = SIZE, radius: float = 0.6, height: float = 0.5, phase: float = 0.0) -> Cameras:
    """``n`` cameras on a ring around the origin, looking at the table (one scene)."""
    f = 0.5 * size / math.tan(math.radians(30))
    k = np.array([[f, 0, (size - 1) / 2], [0, f, (size - 1) / 2], [0, 0, 1]])
    poses = [look_at(np.array([radius * math.cos(a), radius * math.sin(a), height]), np.zeros(3))
             for a in phase + np.linspace(0, 2 * math.pi, n, endpoint=False)]
    return Cameras(torch.tensor(np.stack([k] * n), dtype=torch.float32)[None],
                   torch.tensor(np.stack(poses), dtype=torch.float32)[None], size, size)


def table_scene(cameras: Cameras) -> tuple[torch.Tensor, torch.Tensor]:
    """``(rgb (B, V, 3, H, W), ray depth (B, V, H, W))`` of a textured table plane z = 0 seen by ``cameras``."""
    origins, directions = pixel_rays(cameras)
    t = -origins[..., 2] / directions[..., 2]
    hit = origins + t[..., None] * directions
    rgb = torch.stack((0.5 + 0.5 * torch.sin(12 * hit[..., 0]), 0.5 + 0.5 * torch.cos(12 * hit[..., 1]),
                       0.5 + 0.0 * hit[..., 0]), dim=2)
    return rgb, t


def tiny_model(seed: int = 0, **changes) -> ReconModel:
    torch.manual_seed(seed)
    return ReconModel(dataclasses.replace(ReconConfig(), **changes))


def scene_views(n: int, phase: float = 0.0) -> Views:
    cameras = ring_cameras(n, phase=phase)
    return Views(table_scene(cameras)[0], cameras)


# -------------------------------------------------------------------------------------- the LaCT fast-weight update
def reference_newton_schulz(g: torch.Tensor) -> torch.Tensor:
    """Muon's quintic, written out again for one matrix at a time."""
    out = torch.empty_like(g)
    for index in np.ndindex(*g.shape[:-2]):
        x = g[index] / g[index].norm()
        flip = x.shape[0] > x.shape[1]
        x = x.T if flip else x
        for _ in range(5):
            a = x @ x.T
            x = 3.4445 * x - 4.7750 * a @ x + 2.0315 * a @ a @ x
        out[index] = x.T if flip else x
    return out


def test_the_fast_weight_update_matches_autograd_and_a_hand_written_muon_step():
    gen = torch.Generator().manual_seed(0)
    b, h, n, dim, hid = 2, 2, 7, 4, 6
    w = FastWeights(*(torch.randn(b, h, *s, generator=gen, dtype=torch.float64) for s in
                      ((hid, dim), (dim, hid), (hid, dim))))
    k, v = torch.randn(2, b, h, n, dim, generator=gen, dtype=torch.float64)
    eta = F.softplus(torch.randn(b, h, n, generator=gen, dtype=torch.float64))
    params = [p.clone().requires_grad_(True) for p in w]
    w1, w2, w3 = params
    f = (F.silu(k @ w1.mT) * (k @ w3.mT)) @ w2.mT
    loss = -(eta * (f * v).sum(-1)).sum()  # L = -sum_i eta_i <f(k_i), v_i>
    grads = torch.autograd.grad(loss, params)
    for ours, ref in zip(inner_gradients(w, k, v, eta), grads, strict=True):
        torch.testing.assert_close(ours, ref, atol=1e-10, rtol=1e-10)
    expected = []
    for weight, grad in zip(w, grads, strict=True):
        new = weight - reference_newton_schulz(grad)
        expected.append(new * weight.norm(dim=-1, keepdim=True) / new.norm(dim=-1, keepdim=True))
    for ours, ref in zip(lact_update(w, k, v, eta, muon_steps=5), expected, strict=True):
        torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)
        # each row keeps its pre-update norm
    updated = lact_update(w, k, v, eta)
    for before, after in zip(w, updated, strict=True):
        torch.testing.assert_close(after.norm(dim=-1), before.norm(dim=-1), atol=1e-5, rtol=0)
        assert (after - before).abs().max() > 1e-2  # the update did move the weights


@pytest.mark.parametrize("shape", [(64, 32), (32, 64), (16, 48), (128, 32)])
def test_newton_schulz_output_is_near_orthogonal_within_the_quintic_band(shape):
    g = torch.randn(8, *shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    s = torch.linalg.svdvals(newton_schulz(g, steps=5))
    # Muon's quintic does not converge to 1: it leaves well-conditioned singular values in about [0.68, 1.14]
    assert s.min() > 0.6 and s.max() < 1.2
    u, _, vh = torch.linalg.svd(g, full_matrices=False)  # and it keeps the singular vectors (close to U V^T)
    assert torch.linalg.matrix_norm(newton_schulz(g) - u @ vh, ord=2).max() < 0.35


# ------------------------------------------------------------------------------------- streaming and all-at-once
def test_streaming_with_one_chunk_covering_every_view_is_the_all_at_once_mode():
    model = tiny_model().eval()
    views, queries = scene_views(6), ring_cameras(2, phase=0.3)
    with torch.no_grad():
        once, streamed = model(views, queries), model(views, queries, chunk_views=6)
    torch.testing.assert_close(streamed.depth, once.depth, atol=0, rtol=0)
    torch.testing.assert_close(streamed.rgb, once.rgb, atol=0, rtol=0)


def test_chunked_streaming_is_sequential_updates_carrying_the_fast_weights():
    model = tiny_model().eval()
    views, queries = scene_views(8), ring_cameras(2, phase=0.3)
    with torch.no_grad():
        state = model.init_state(1)
        for start in (0, 4):
            state = model.update(state, views.select(slice(start, start + 4)))
        by_hand = model.query(state, queries)
        streamed, once = model(views, queries, chunk_views=4), model(views, queries)
    assert state.n_views == 8
    torch.testing.assert_close(streamed.depth, by_hand.depth, atol=1e-6, rtol=0)
    # two Muon steps are not one: chunking changes the state by design (lact.py's docstring)
    assert (streamed.depth - once.depth).abs().max() > 1e-6


def test_the_streaming_state_stays_the_same_size_however_many_views_arrive():
    model = tiny_model().eval()
    with torch.no_grad():
        state = model.init_state(1)
        sizes = []
        for chunk in range(16):
            state = model.update(state, scene_views(4, phase=0.1 * chunk))
            sizes.append(sum(w.numel() for fast in state.fast_weights for w in fast))
            assert all(not w.requires_grad for fast in state.fast_weights for w in fast)
    assert state.n_views == 64 and len(set(sizes)) == 1


def test_frozen_fast_weights_ignore_the_input_views():
    model = tiny_model(frozen=True).eval()
    queries = ring_cameras(1, phase=0.3)
    with torch.no_grad():
        a, b = model(scene_views(2), queries), model(scene_views(5, phase=1.0), queries)
        live = ReconModel(dataclasses.replace(model.config, frozen=False))
        live.load_state_dict(model.state_dict())
        c = live.eval()(scene_views(2), queries)
    torch.testing.assert_close(a.depth, b.depth, atol=0, rtol=0)
    assert (c.depth - a.depth).abs().max() > 1e-5  # the same weights, updated, read another scene


# ----------------------------------------------------------------------------------------------- rays and render
def test_plucker_rays_match_a_hand_computed_pinhole_ray():
    rot = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # 90 degrees about z
    pose = np.eye(4)
    pose[:3, :3], pose[:3, 3] = rot, [1.0, 2.0, 3.0]
    k = np.array([[100.0, 0.0, 1.5], [0.0, 120.0, 0.5], [0.0, 0.0, 1.0]])
    cams = Cameras(torch.tensor(k)[None, None], torch.tensor(pose)[None, None], height=2, width=4)
    rays = plucker_rays(cams)[0, 0]  # (6, H, W)
    d_cam = np.array([(3 - 1.5) / 100.0, (1 - 0.5) / 120.0, 1.0])  # pixel u = 3, v = 1
    d = rot @ (d_cam / np.linalg.norm(d_cam))
    m = np.cross([1.0, 2.0, 3.0], d)
    np.testing.assert_allclose(rays[:, 1, 3].numpy(), np.concatenate([d, m]), atol=1e-12)
    centre = rays[:3, 0, 1].numpy()  # pixel (1, 0): x offset -0.5/100, y offset -0.5/120
    np.testing.assert_allclose(centre, rot @ ([-0.005, -0.5 / 120, 1.0] / np.linalg.norm([-0.005, -0.5 / 120, 1.0])),
                               atol=1e-12)


def test_splatting_a_views_own_points_gives_back_its_depth_and_colours_with_gradients():
    cams = ring_cameras(1, size=24)
    rgb, t = table_scene(cams)
    origins, directions = pixel_rays(cams)
    points = (origins + t[..., None] * directions).reshape(1, -1, 3).requires_grad_(True)
    colors = rgb.permute(0, 1, 3, 4, 2).reshape(1, -1, 3)
    out = splat_points(points, colors, torch.ones(1, points.shape[1]), cams, tau=0.01)
    z = t * (directions * cams.world_from_camera[..., None, None, :3, 2]).sum(-1)  # ray depth -> optical axis
    inner = (slice(None), slice(None), slice(1, -1), slice(1, -1))
    # each point lands on its own pixel centre (to float rounding): a neighbour's weight is at most ~1e-4
    torch.testing.assert_close(out.depth[inner], z[inner], atol=1e-3, rtol=0)
    torch.testing.assert_close(out.rgb.permute(0, 1, 3, 4, 2)[inner], rgb.permute(0, 1, 3, 4, 2)[inner], atol=2e-3,
                               rtol=0)
    assert out.alpha[inner].min() > 0.6
    out.depth[inner].sum().backward()
    assert points.grad.abs().sum() > 0


def test_a_nearer_point_hides_a_farther_one_in_the_same_pixel():
    cams = ring_cameras(1, size=8)
    origins, directions = pixel_rays(cams)
    o, d = origins[0, 0, 4, 4], directions[0, 0, 4, 4]
    points = torch.stack((o + 0.5 * d, o + 0.8 * d))[None]
    out = splat_points(points, torch.tensor([[[1.0, 0, 0], [0, 0, 1.0]]]), torch.ones(1, 2), cams, tau=0.02)
    assert out.rgb[0, 0, 0, 4, 4] > 0.99 * out.alpha[0, 0, 4, 4] and out.rgb[0, 0, 2, 4, 4] < 1e-3


# -------------------------------------------------------------------------------------- checkpoints and errors
def test_a_checkpoint_round_trip_gives_identical_outputs(tmp_path):
    model = tiny_model(seed=3).eval()
    views, queries = scene_views(3), ring_cameras(1, phase=0.2)
    save_recon(model, tmp_path / "ckpt")
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["config.json", "model.safetensors"]
    loaded = load_recon(tmp_path / "ckpt")
    with torch.no_grad():
        torch.testing.assert_close(loaded(views, queries).depth, model(views, queries).depth, atol=0, rtol=0)
    assert load_recon(tmp_path / "ckpt", frozen=True).config.frozen
    with pytest.raises(ValueError, match="unknown ReconConfig fields"):
        load_recon(tmp_path / "ckpt", width=3)
    with pytest.raises(FileNotFoundError, match="no reconstruction model"):
        load_recon(tmp_path / "missing")


def _frame(name: str, size: int, intrinsics: np.ndarray | None = None) -> ColorFrame:
    k = np.array([[20.0, 0, size / 2], [0, 20.0, size / 2], [0, 0, 1]]) if intrinsics is None else intrinsics
    return ColorFrame(name, np.zeros((size, size, 3), np.uint8), k, np.eye(4))


def test_clear_errors_for_missing_intrinsics_mixed_sizes_and_zero_views():
    with pytest.raises(ValueError, match="intrinsics are missing"):
        Cameras(None, torch.eye(4)[None, None], 16, 16)
    with pytest.raises(ValueError, match="intrinsics 3x3"):  # a frame cannot be made without them either
        ColorFrame("top", np.zeros((16, 16, 3), np.uint8), None, np.eye(4))
    with pytest.raises(ValueError, match=r"mixed image sizes .*'b': \(24, 24\)"):
        views_from_frames([_frame("a", 16), _frame("b", 24)])
    with pytest.raises(ValueError, match="zero views"):
        views_from_frames([])
    with pytest.raises(ValueError, match="zero views"):
        Cameras(torch.zeros(1, 0, 3, 3), torch.zeros(1, 0, 4, 4), 16, 16)
    views = views_from_frames([_frame("a", 16), _frame("b", 16)])
    assert views.images.shape == (1, 2, 3, 16, 16)
    model = tiny_model()
    with pytest.raises(ValueError, match="patch_size"):
        model(views_from_frames([_frame("a", 20)]), ring_cameras(1))
    with pytest.raises(ValueError, match="ReconConfig.d_model"):
        ReconConfig(d_model=30)
    with pytest.raises(ValueError, match="ReconConfig.depth_far"):
        ReconConfig(depth_near=1.0, depth_far=0.5)


# --------------------------------------------------------------------------------------------- budget and overfit
def test_the_tiny_preset_fits_the_cpu_budget():
    # DESIGN.md 4b: ~100 MFLOP forward per training sample; a sample is 4 input + 2 query views at 32x32
    assert forward_flops(ReconConfig(), n_input=4, n_query=2) < 100e6
    assert forward_flops(ReconConfig(frozen=True), 4, 2) < forward_flops(ReconConfig(), 4, 2)


def test_the_loss_on_one_scene_falls_when_the_model_fits_it():
    model = tiny_model(seed=0)
    views, queries = scene_views(2), ring_cameras(1, phase=0.4)
    rgb, depth = table_scene(queries)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        loss, terms = recon_loss(model(views, queries), rgb, depth)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert set(terms) == {"losses/rgb_mse", "losses/depth_l1_log", "losses/opacity"}
    assert np.mean(losses[-5:]) < 0.3 * np.mean(losses[:3])


def test_the_bench_streams_in_flat_memory_while_one_update_over_all_views_grows():
    # 32 px views (16 tokens) and 256 of them: one update over all views holds >= 4096 tokens' activations (MBs),
    # well above the page-level resolution of the peak-RSS reading, which 64 tiny views (64 kB) fell under
    figures = run_recon_benchmarks(dataclasses.replace(ReconConfig(), image_size=32), [8, 256], chunk_views=4)
    assert figures["peak_mem_ratio_256_vs_8"] < 1.1
    assert figures["allatonce_mem_delta_mb_256"] > figures["stream_mem_delta_mb_256"] + 0.5
    assert figures["chunk_ms_8"] > 0 and figures["mflop_per_chunk"] > 0
