"""The reconstruction model's configuration: tokens, the transformer with LaCT cross-view layers, the output range."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class ReconConfig:
    """Shape of :class:`perception.recon.model.ReconModel` (pixels, tokens, units m). The defaults are the
    ``recon_tiny`` preset (conf/recon/recon_tiny.yaml), sized to this CPU's budget (DESIGN.md section 4b; the FLOP
    count is in :mod:`perception.recon.model`); ``recon_base`` is the GPU preset.

    Each view becomes ``(image_size / patch_size)**2`` tokens of ``patch_size`` x ``patch_size`` pixels carrying RGB
    (+ depth when ``use_depth``) and 6 Plücker ray channels. A block is per-view self-attention, a LaCT layer (a
    gated-MLP fast weight per head, written from the input views, read by every token) and an MLP.

    Raises:
        ValueError: a field out of range (the message names it).
    """

    # tokens
    image_size: int = 32  # px, the square training / benchmark resolution (any multiple of patch_size runs)
    patch_size: int = 8  # px per token side
    use_depth: bool = False  # input tokens also carry the input views' depth (m, 0 = missing)
    # transformer
    d_model: int = 64  # token width
    n_blocks: int = 2  # blocks of (per-view self-attention, LaCT, MLP)
    n_heads: int = 4  # self-attention heads
    mlp_ratio: int = 2  # MLP hidden width = mlp_ratio * d_model
    # LaCT cross-view layers (DESIGN.md section 6, tttLRM)
    fast_heads: int = 2  # fast-weight heads; each head's width is d_model / fast_heads
    fast_hidden_ratio: int = 2  # fast gated-MLP hidden width = fast_hidden_ratio * head width
    muon_steps: int = 5  # Newton-Schulz iterations orthogonalising each update (0: the raw gradient)
    lr_bias: float = 0.0  # initial bias of the per-token learning rate projection (eta = softplus(Wx + b))
    frozen: bool = False  # ablation: skip every fast-weight update (fast weights stay at their learned init)
    chunk_views: int = 4  # views per fast-weight update in streaming mode
    # output, one point per query pixel
    depth_near: float = 0.05  # m, smallest depth along a ray
    depth_far: float = 4.0  # m, largest depth along a ray

    def __post_init__(self) -> None:
        positive = ("image_size", "patch_size", "d_model", "n_blocks", "n_heads", "mlp_ratio", "fast_heads",
                    "fast_hidden_ratio", "chunk_views", "depth_near")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"ReconConfig.{name} must be > 0, got {getattr(self, name)}")
        if self.muon_steps < 0:
            raise ValueError(f"ReconConfig.muon_steps must be >= 0, got {self.muon_steps}")
        if self.image_size % self.patch_size:
            raise ValueError(f"ReconConfig.image_size ({self.image_size}) must be a multiple of patch_size "
                             f"({self.patch_size})")
        if self.d_model % self.n_heads or self.d_model % self.fast_heads:
            raise ValueError(f"ReconConfig.d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads}) and "
                             f"fast_heads ({self.fast_heads})")
        if self.depth_far <= self.depth_near:
            raise ValueError(f"ReconConfig.depth_far ({self.depth_far}) must exceed depth_near ({self.depth_near})")

    @property
    def tokens_per_view(self) -> int:
        """Tokens of one view at ``image_size``."""
        return (self.image_size // self.patch_size) ** 2

    @property
    def fast_dim(self) -> int:
        """Width of one fast-weight head (its keys, values and queries)."""
        return self.d_model // self.fast_heads

    @property
    def fast_hidden(self) -> int:
        """Hidden width of one fast-weight head's gated MLP."""
        return self.fast_hidden_ratio * self.fast_dim
