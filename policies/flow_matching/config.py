"""Configuration of the flow-matching action-chunk policy."""

from __future__ import annotations

import dataclasses

from policies.base import PolicyConfig
from policies.common.flow import TIME_SAMPLINGS

NETWORKS = ("mlp", "unet")


@dataclasses.dataclass
class FlowMatchingConfig(PolicyConfig):
    """Flow-matching (rectified flow) policy: a velocity network over an action chunk, conditioned on observations.

    Training regresses the velocity ``a - x0`` at ``x_t = (1 - t) x0 + t a`` (``x0 ~ N(0, I)``, ``t = 1`` is
    data); inference integrates ``dx/dt = v(x, t)`` from noise with ``num_inference_steps`` Euler steps.
    The timeline fields (``n_obs_steps``, ``horizon``, ``n_action_steps``) and ``normalization_mapping``
    come from :class:`PolicyConfig`.
    """

    # --- velocity network --------------------------------------------------------------------------------------
    network: str = "mlp"  # "mlp": FiLM residual MLP over the flat chunk; "unet": DP 1D conv U-Net (~10x slower on CPU)
    time_embed_dim: int = 128  # sinusoidal embedding of the flow time t, then a 2-layer MLP
    mlp_hidden_dim: int = 512  # width of the residual MLP (512 x 3 blocks: ~2.2 M parameters on PushT state)
    mlp_num_blocks: int = 3  # residual FiLM blocks of the MLP
    unet_down_dims: tuple[int, ...] = (64, 128, 256)  # channels per U-Net level; horizon must divide 2**(levels - 1)
    unet_kernel_size: int = 5  # temporal conv kernel of the U-Net
    unet_n_groups: int = 8  # GroupNorm groups in the U-Net

    # --- image encoder (one per camera, trained from scratch) --------------------------------------------------------
    vision_channels: tuple[int, int] = (32, 64)  # channels of the stem and of the residual stage (stride 2 each)
    spatial_softmax_num_keypoints: int = 32  # keypoints of the spatial-softmax head (2 coordinates each)
    image_feature_dim: int = 64  # per-camera feature size after the keypoint projection
    crop_shape: tuple[int, int] | None = None  # (h, w) crop: random in training, centred in eval; None = no crop

    # --- flow matching ---------------------------------------------------------------------------------------------
    time_sampling: str = "uniform"  # "uniform" U(0,1); "beta" pi0's 0.999 * (1 - Beta(1.5, 1)); "logit_normal" sigmoid(N(0,1))
    num_inference_steps: int = 10  # Euler steps from noise (t = 0) to actions (t = 1)
    clip_sample: bool = True  # clip sampled actions to [-1, 1] when the action is min_max normalised

    def __post_init__(self) -> None:
        super().__post_init__()
        self.unet_down_dims = tuple(int(d) for d in self.unet_down_dims)
        self.vision_channels = tuple(int(c) for c in self.vision_channels)
        if self.crop_shape is not None:
            self.crop_shape = tuple(int(c) for c in self.crop_shape)
            if len(self.crop_shape) != 2 or min(self.crop_shape) < 1:
                raise ValueError(f"crop_shape must be None or (h, w) with h, w >= 1, got {self.crop_shape!r}")
        if self.network not in NETWORKS:
            raise ValueError(f"network must be one of {NETWORKS}, got {self.network!r}")
        if self.time_sampling not in TIME_SAMPLINGS:
            raise ValueError(f"time_sampling must be one of {TIME_SAMPLINGS}, got {self.time_sampling!r}")
        for field in ("time_embed_dim", "mlp_hidden_dim", "mlp_num_blocks", "unet_kernel_size", "unet_n_groups",
                      "spatial_softmax_num_keypoints", "image_feature_dim", "num_inference_steps"):
            if int(getattr(self, field)) < 1:
                raise ValueError(f"{field} must be >= 1, got {getattr(self, field)!r}")
        if self.time_embed_dim % 2:
            raise ValueError(f"time_embed_dim must be even (sin and cos halves), got {self.time_embed_dim}")
        if len(self.vision_channels) != 2:
            raise ValueError(f"vision_channels must have 2 entries (stem, stage), got {self.vision_channels!r}")
        if self.network == "unet":
            self._check_unet()

    def _check_unet(self) -> None:
        if not self.unet_down_dims:
            raise ValueError("unet_down_dims must not be empty")
        factor = 2 ** (len(self.unet_down_dims) - 1)
        if self.horizon % factor:
            raise ValueError(
                f"horizon ({self.horizon}) must be divisible by 2**(len(unet_down_dims) - 1) = {factor} for the U-Net"
            )
        if self.unet_kernel_size % 2 == 0:
            raise ValueError(f"unet_kernel_size must be odd (same-length convs), got {self.unet_kernel_size}")
        bad = [d for d in self.unet_down_dims if d % self.unet_n_groups]
        if bad:
            raise ValueError(f"unet_down_dims {bad} are not divisible by unet_n_groups={self.unet_n_groups}")
