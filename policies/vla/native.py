"""The ``native`` VLA trunk, trained from scratch: conv image tokens + word tokens + a state token -> transformer.

Token sequence (one sample)::

    [ cam0 frame tokens (grid_h x grid_w) ... camK ... | instruction words (max_length, padding masked) | state ]

Bidirectional attention with the padded words masked out of every key. The state token (proprioception plus a
learned bias) comes last; the auxiliary head reads its output.

With ``film`` the image encoder is also conditioned on the instruction before any token exists (RT-1's FiLM): an
attention-pooled instruction embedding sets a per-channel scale and shift after the encoder's stem and stage, so
the convolutions can pick out the instructed pad's colour where the trunk's 16 coarse tokens alone must otherwise
carry every pad. ``keypoints`` adds one token per frame holding the expected (x, y) of K spatial-softmax maps of the
(FiLM-conditioned) feature map: sub-cell positions of the block and the instructed pad, which the coarse grid tokens
give only to within a cell. Zero-initialised: training starts from the unconditioned encoder. During training the
instruction is perturbed (:func:`policies.vla.tokenizer.perturb_instructions`: words shuffled, ``<unk>`` inserted,
words replaced by ``<unk>``), so a paraphrase's unseen words and the colour at a new position are familiar inputs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from policies.common.vision import FeatureMapEncoder, SpatialSoftmax
from policies.vla.config import VLAConfig
from policies.vla.layers import Block, init_weights
from policies.vla.tokenizer import WordTokenizer, perturb_instructions


def _conv_out(size: int) -> int:
    """Spatial size after the encoder's two stride-2 3x3 convs (padding 1): ``ceil(ceil(size / 2) / 2)``."""
    return math.ceil(math.ceil(size / 2) / 2)


def merge_kernel(key: str, height: int, width: int, grid: tuple[int, int]) -> tuple[int, int]:
    """Patch-merge kernel that turns the encoder's feature map of a ``height x width`` image into ``grid`` tokens.

    Raises ``ValueError`` naming the camera when the map does not divide into the grid.
    """
    map_h, map_w = _conv_out(height), _conv_out(width)
    if map_h % grid[0] or map_w % grid[1]:
        raise ValueError(f"{key!r}: the {map_h}x{map_w} feature map of {height}x{width} images does not divide "
                         f"into image_token_grid {grid}; pick a grid that divides it")
    return map_h // grid[0], map_w // grid[1]


class NativeBackbone(nn.Module):
    """Images ``[(B, C, H, W)]`` (per camera and frame), instructions and state ``(B, S)`` -> tokens ``(B, L, dim)``.

    Args:
        config: the policy config (dim, trunk_layers, num_heads, mlp_ratio, vision_channels, image_token_grid,
            image_history).
        cameras: ``(key, (C, H, W))`` of each camera, in input order.
        state_dim: size of the flattened proprioception history (0: none; the state token is then a learned one).
        tokenizer: the instruction tokenizer (its vocabulary sizes the word embedding).
    """

    def __init__(self, config: VLAConfig, cameras: Sequence[tuple[str, tuple[int, int, int]]], state_dim: int,
                 tokenizer: WordTokenizer) -> None:
        super().__init__()
        d, grid = config.dim, config.image_token_grid
        self.tokenizer = tokenizer
        self.hidden_dim = d
        self.encoders = nn.ModuleDict()
        self.merges = nn.ModuleDict()
        self.keypoints = nn.ModuleDict()
        for key, (channels, height, width) in cameras:
            name = key.replace(".", "__")
            kernel = merge_kernel(key, height, width, grid)
            self.encoders[name] = FeatureMapEncoder(channels, config.vision_channels,
                                                    config.vision_full_resolution_block)
            self.merges[name] = nn.Conv2d(config.vision_channels[1], d, kernel, stride=kernel)
            if config.keypoints:
                self.keypoints[name] = nn.Sequential(SpatialSoftmax(config.vision_channels[1], config.keypoints),
                                                     nn.Linear(2 * config.keypoints, d))
        self.film = None
        if config.film and cameras:
            self.text_pool = nn.Linear(d, 1)  # attention-pooling scores of the instruction's words
            self.film = nn.Linear(d, 2 * sum(config.vision_channels))
        self.instruction_noise = {"dropout": config.word_dropout, "shuffle": config.word_shuffle,
                                  "insert": config.word_insert}
        self.film_sizes = (2 * config.vision_channels[0], 2 * config.vision_channels[1])
        tokens_per_frame = grid[0] * grid[1] + (1 if config.keypoints else 0)
        self.image_pos = nn.Parameter(torch.zeros(len(cameras) * config.image_history, tokens_per_frame, d))
        self.word_embed = nn.Embedding(len(tokenizer), d)
        self.word_pos = nn.Parameter(torch.zeros(tokenizer.max_length, d))
        self.state_proj = nn.Linear(state_dim, d) if state_dim else None
        self.state_token = nn.Parameter(torch.zeros(d))
        self.blocks = nn.ModuleList(Block(d, config.num_heads, config.mlp_ratio) for _ in range(config.trunk_layers))
        self.norm = nn.LayerNorm(d)
        init_weights(self)
        if self.film is not None:
            nn.init.zeros_(self.film.weight)
        for param in (self.image_pos, self.word_pos, self.state_token):
            nn.init.trunc_normal_(param, std=0.02)

    def instruction_film(self, words: Tensor, word_mask: Tensor) -> tuple[Tensor, Tensor]:
        """FiLM parameters ``(B, 2 * c0)``, ``(B, 2 * c1)`` from the word embeddings ``(B, W, dim)`` (padding masked)."""
        scores = self.text_pool(words).squeeze(-1).masked_fill(~word_mask, float("-inf"))
        weights = torch.nan_to_num(scores.softmax(dim=1))  # an empty instruction pools to zero
        pooled = (weights[..., None] * words).sum(dim=1)
        return tuple(self.film(pooled).split(self.film_sizes, dim=-1))

    def image_tokens(self, images: dict[str, Tensor], film: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """``{camera key: (B, T, C, H, W)}`` in [0, 1] -> ``(B, cameras * T * tokens per frame, dim)`` with positions
        (tokens per frame: the grid cells, then the keypoint token when ``keypoints`` is set).

        ``film``: per-sample FiLM parameters of the encoders (see :meth:`instruction_film`), or ``None``.
        """
        parts = []
        for key, frames in images.items():
            name = key.replace(".", "__")
            b, t = frames.shape[:2]
            per_frame = None if film is None else tuple(f.repeat_interleave(t, dim=0) for f in film)
            fmap = self.encoders[name].feature_map(frames.flatten(0, 1), per_frame)
            frame_tokens = self.merges[name](fmap).flatten(2).transpose(1, 2)  # (B * T, cells, d)
            if name in self.keypoints:
                frame_tokens = torch.cat([frame_tokens, self.keypoints[name](fmap)[:, None]], dim=1)
            parts.append(frame_tokens.unflatten(0, (b, t)))  # (B, T, tokens per frame, d)
        tokens = torch.cat(parts, dim=1) + self.image_pos  # (B, cameras * T, tokens per frame, d)
        return tokens.flatten(1, 2)

    def forward(self, images: dict[str, Tensor], tasks: Sequence[str], state: Tensor | None) -> tuple[Tensor, Tensor]:
        """Trunk tokens ``(B, L, dim)`` and their validity mask ``(B, L)``; the state token is the last one.

        Raises ``ValueError`` for an instruction longer than the tokenizer's ``max_length``.
        """
        ids, word_mask = self.tokenizer.encode(tasks)
        if self.training:
            ids = perturb_instructions(ids, **self.instruction_noise)
            word_mask = ids != 0
        longest = int(word_mask.sum(dim=1).max()) if len(tasks) else 0
        device = self.word_pos.device  # padding columns no instruction reaches are cut
        ids, word_mask = ids[:, :longest].to(device), word_mask[:, :longest].to(device)
        words = self.word_embed(ids) + self.word_pos[:longest]
        b = words.shape[0]
        state_tok = self.state_token.expand(b, 1, -1)
        if self.state_proj is not None and state is not None:
            state_tok = state_tok + self.state_proj(state)[:, None, :]
        parts = [words, state_tok]
        if images:
            film = self.instruction_film(words, word_mask) if self.film is not None else None
            parts.insert(0, self.image_tokens(images, film))
        tokens = torch.cat(parts, dim=1)
        ones = torch.ones(b, tokens.shape[1] - ids.shape[1] - 1, dtype=torch.bool, device=tokens.device)
        mask = torch.cat([ones, word_mask, word_mask.new_ones(b, 1)], dim=1)
        for block in self.blocks:
            tokens = block(tokens, mask)
        return self.norm(tokens), mask
