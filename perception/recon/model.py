"""The reconstruction model (tttLRM in the small, DESIGN.md section 6): calibrated RGB(-D) views in, one 3D point per
pixel of any query camera out (depth along the ray, colour, opacity).

Tokens: 8x8 patches. An input view's token carries the patch's RGB (mapped to [-1, 1]), its depth when
``use_depth``, and its 6 Plücker ray channels (:func:`perception.recon.cameras.plucker_rays`); a query view's token
carries only the rays. The rays are the only positional code, so any image size divisible by the patch runs.
Each block: self-attention within each view, a LaCT layer across views (:mod:`perception.recon.lact`: input tokens
write the fast weights, every token reads them), an MLP. The query tokens never attend to the input tokens: what
they know of the scene is what the fast weights hold, so the state after the input views is a fixed-size memory.

Two modes, one code path (:meth:`ReconModel.forward`):

* all at once (``chunk_views=None``): one fast-weight update per layer from every input view's tokens;
* streaming (``chunk_views=4``): :meth:`ReconModel.update` per chunk of views, carrying :class:`ReconState`, then
  :meth:`ReconModel.query`. Under ``torch.no_grad`` a chunk's tokens are freed before the next arrives, so memory
  does not grow with the number of views. One chunk covering every view is exactly the all-at-once mode; more
  chunks take more (nonlinear) Muon steps and give another, equally valid, state.

``config.frozen`` (the ablation) skips every update: the query views are read through the learned initial weights.

Cost (recon_tiny: 32x32 views, 16 tokens each, d=64, 2 blocks, fast hidden 64 per head; forward FLOPs, multiply-add
= 2, :func:`forward_flops`): per token and block self-attention projections 33k + attention 4k, MLP 33k, LaCT
projections 33k + read 25k, + update (input tokens) 49k; embedding 60k (input) / 49k (query), head 41k (query).
An input token costs ~0.43 MFLOP, a query token ~0.34 MFLOP, and Newton-Schulz ~9.8 MFLOP per update and layer
(5 iterations on three 64x32 weights of 2 heads): a training sample of 4 input views (one update) + 2 query views is
~58 MFLOP forward (~0.17 GFLOP with the backward pass), inside DESIGN.md 4b's ~100 MFLOP-per-sample forward budget;
streaming 16 views in chunks of 4 is ~0.19 GFLOP.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from perception.recon.cameras import Cameras, Views, pixel_rays, plucker_rays
from perception.recon.config import ReconConfig
from perception.recon.lact import FastWeights, LaCTLayer

PLUCKER_CHANNELS = 6
OUTPUT_CHANNELS = 5  # depth, r, g, b, opacity per pixel


@dataclasses.dataclass
class ReconOutput:
    """Per query pixel: ``depth`` (B, Q, H, W) m along the ray, ``rgb`` (B, Q, 3, H, W) in [0, 1], ``opacity``
    (B, Q, H, W) in [0, 1], and the ``points`` (B, Q, H, W, 3) they place in the world (m)."""

    depth: torch.Tensor
    rgb: torch.Tensor
    opacity: torch.Tensor
    points: torch.Tensor


@dataclasses.dataclass
class ReconState:
    """What the model holds between chunks of input views: each LaCT layer's fast weights and the views seen."""

    fast_weights: list[FastWeights]
    n_views: int = 0


def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """(B, V, C, H, W) -> (B, V, (H/p)(W/p), C p p): row-major patches, each flattened channel-first."""
    b, v, c, h, w = x.shape
    x = x.reshape(b, v, c, h // p, p, w // p, p).permute(0, 1, 3, 5, 2, 4, 6)
    return x.reshape(b, v, (h // p) * (w // p), c * p * p)


def unpatchify(x: torch.Tensor, p: int, height: int, width: int) -> torch.Tensor:
    """Inverse of :func:`patchify`: (B, V, T, C p p) -> (B, V, C, H, W)."""
    b, v, _, cpp = x.shape
    c = cpp // (p * p)
    x = x.reshape(b, v, height // p, width // p, c, p, p).permute(0, 1, 4, 2, 5, 3, 6)
    return x.reshape(b, v, c, height, width)


class ReconBlock(nn.Module):
    """Per-view self-attention, a cross-view LaCT layer, an MLP; pre-norm residuals over tokens (B, V, T, d)."""

    def __init__(self, c: ReconConfig):
        super().__init__()
        d = c.d_model
        self.heads = c.n_heads
        self.norm_attn, self.norm_lact, self.norm_mlp = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.attn_out = nn.Linear(d, d)
        self.lact = LaCTLayer(d, c.fast_heads, c.fast_hidden, c.muon_steps, c.lr_bias)
        self.mlp = nn.Sequential(nn.Linear(d, c.mlp_ratio * d), nn.GELU(), nn.Linear(c.mlp_ratio * d, d))

    def forward(self, x: torch.Tensor, state: FastWeights, update: bool) -> tuple[torch.Tensor, FastWeights]:
        """``(tokens, fast weights)``; ``update``: these tokens first write the fast weights."""
        b, v, t, d = x.shape
        q, k, val = self.qkv(self.norm_attn(x)).reshape(b * v, t, 3, self.heads, d // self.heads).unbind(2)
        attn = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), val.transpose(1, 2))
        x = x + self.attn_out(attn.transpose(1, 2).reshape(b, v, t, d))
        read, state = self.lact(self.norm_lact(x).reshape(b, v * t, d), state, update)
        x = x + read.reshape(b, v, t, d)
        return x + self.mlp(self.norm_mlp(x)), state


class ReconModel(nn.Module):
    """Views -> per-pixel points of query cameras (module docstring). ``forward(views, queries)`` for training and
    evaluation; ``init_state`` / ``update`` / ``query`` for a stream of views.

    Raises (from every entry point):
        ValueError: an image size that is not a multiple of ``patch_size`` (naming it).
    """

    def __init__(self, config: ReconConfig):
        super().__init__()
        self.config = c = config
        patch = c.patch_size**2
        self.input_embed = nn.Linear((3 + int(c.use_depth) + PLUCKER_CHANNELS) * patch, c.d_model)
        self.query_embed = nn.Linear(PLUCKER_CHANNELS * patch, c.d_model)
        self.blocks = nn.ModuleList(ReconBlock(c) for _ in range(c.n_blocks))
        self.head_norm = nn.LayerNorm(c.d_model)
        self.head = nn.Linear(c.d_model, OUTPUT_CHANNELS * patch)

    def init_state(self, batch: int) -> ReconState:
        """The state before any view: every layer's learned initial fast weights, for ``batch`` scenes."""
        return ReconState([block.lact.initial_state(batch) for block in self.blocks])

    def _check_size(self, cameras: Cameras) -> None:
        p = self.config.patch_size
        if cameras.height % p or cameras.width % p:
            raise ValueError(f"image size {cameras.height}x{cameras.width} is not a multiple of ReconConfig."
                             f"patch_size ({p})")

    def update(self, state: ReconState, views: Views) -> ReconState:
        """The state after writing ``views`` (a chunk of input views) into every layer's fast weights; with
        ``config.frozen`` the weights are left as they are (only ``n_views`` counts the views)."""
        self._check_size(views.cameras)
        if self.config.frozen:
            return ReconState(list(state.fast_weights), state.n_views + views.n_views)
        channels = [views.images * 2.0 - 1.0]
        if self.config.use_depth:
            depth = views.depth if views.depth is not None else torch.zeros_like(views.images[:, :, 0])
            channels.append(depth[:, :, None])
        channels.append(plucker_rays(views.cameras))
        x = self.input_embed(patchify(torch.cat(channels, dim=2), self.config.patch_size))
        weights = []
        for block, fast in zip(self.blocks, state.fast_weights, strict=True):
            x, fast = block(x, fast, update=True)
            weights.append(fast)
        return ReconState(weights, state.n_views + views.n_views)

    def query(self, state: ReconState, cameras: Cameras) -> ReconOutput:
        """Every pixel of ``cameras`` read from ``state``: depth, colour, opacity and its world point."""
        self._check_size(cameras)
        c = self.config
        x = self.query_embed(patchify(plucker_rays(cameras), c.patch_size))
        for block, fast in zip(self.blocks, state.fast_weights, strict=True):
            x, _ = block(x, fast, update=False)
        out = unpatchify(self.head(self.head_norm(x)), c.patch_size, cameras.height, cameras.width)
        log_near, log_far = torch.log(torch.tensor(c.depth_near)), torch.log(torch.tensor(c.depth_far))
        depth = torch.exp(log_near + torch.sigmoid(out[:, :, 0]) * (log_far - log_near))
        origins, directions = pixel_rays(cameras)
        return ReconOutput(depth=depth, rgb=torch.sigmoid(out[:, :, 1:4]), opacity=torch.sigmoid(out[:, :, 4]),
                           points=origins + depth[..., None] * directions)

    def forward(self, views: Views, queries: Cameras, chunk_views: int | None = None) -> ReconOutput:
        """Reconstructs ``views`` and reads ``queries``: all views in one update (``chunk_views=None``) or in chunks
        of ``chunk_views`` views, in order (streaming).

        Raises:
            ValueError: ``chunk_views`` < 1, input and query batches that differ.
        """
        if chunk_views is not None and chunk_views < 1:
            raise ValueError(f"chunk_views must be >= 1, got {chunk_views}")
        batch = views.images.shape[0]
        if queries.intrinsics.shape[0] != batch:
            raise ValueError(f"views have batch {batch} but queries {queries.intrinsics.shape[0]}")
        step = chunk_views or views.n_views
        state = self.init_state(batch)
        for start in range(0, views.n_views, step):
            state = self.update(state, views.select(slice(start, start + step)))
        return self.query(state, queries)


def forward_flops(config: ReconConfig, n_input: int, n_query: int, chunk_views: int | None = None) -> float:
    """Forward FLOPs (multiply-add = 2) of one scene: ``n_input`` views written (in updates of ``chunk_views``,
    None: one), ``n_query`` views read, at ``config.image_size``."""
    c, d, t = config, config.d_model, config.tokens_per_view
    patch, hid = c.patch_size**2, c.fast_hidden
    block = 2 * (4 * d * d + 2 * t * d + 2 * c.mlp_ratio * d * d + 4 * d * d + d * c.fast_heads + 3 * d * hid)
    update = 2 * 6 * d * hid  # forward of a, b and the four gradient products per token
    dim = c.fast_dim
    ns = 2 * c.muon_steps * (2 * dim * dim * hid + dim**3) * 3 * c.fast_heads  # per update and layer (wide side dim)
    n_updates = 0 if n_input == 0 else -(-n_input // (chunk_views or n_input))
    per_input = 2 * (3 + int(c.use_depth) + PLUCKER_CHANNELS) * patch * d + c.n_blocks * (block + update)
    per_query = 2 * PLUCKER_CHANNELS * patch * d + c.n_blocks * block + 2 * d * OUTPUT_CHANNELS * patch
    frozen_input = 0 if c.frozen else n_input * t * per_input + n_updates * c.n_blocks * ns
    return float(frozen_input + n_query * t * per_query)
