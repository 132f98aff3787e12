"""Flow-matching action-chunk policy (rectified flow, as in pi0's action expert) for low-dim and image inputs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from policies.base import Policy
from policies.common.flow import euler_sample, flow_matching_loss
from policies.common.inputs import check_observation_steps
from policies.common.vision import ImageEncoder, crop_images
from policies.flow_matching.config import FlowMatchingConfig
from policies.flow_matching.networks import MLPVelocityNet, UNetVelocityNet
from policies.normalize import image_chw


class FlowMatchingPolicy(Policy):
    """Predict an action chunk by integrating a learned velocity field from Gaussian noise.

    Condition: the normalised low-dim observations (``observation.state``, ``observation.environment_state``)
    of the last ``n_obs_steps`` steps, flattened, plus per-camera image features from an
    :class:`ImageEncoder` per ``observation.images.*`` key. Velocity network: ``config.network``.

    Training batch (un-normalised; the policy normalises): ``observation.*`` ``(B, To, ...)`` (images float
    ``(B, To, C, H, W)`` in [0, 1]), ``action`` ``(B, H, A)``, optional ``action_is_pad`` ``(B, H)`` bool.
    Loss: ``mean ||v(x_t, t) - (a - x0)||^2`` over non-padded actions, ``x_t = (1 - t) x0 + t a``.

    Raises ``ValueError`` for unsupported features (depth) and ``KeyError``/``ValueError`` naming a missing or
    misshapen batch key.
    """

    name: ClassVar[str] = "flow_matching"
    config_class: ClassVar[type[FlowMatchingConfig]] = FlowMatchingConfig

    def __init__(
        self,
        config: FlowMatchingConfig,
        features: Mapping[str, Mapping[str, Any]],
        stats: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        super().__init__(config, features, stats)
        unsupported = [k for k in self.input_keys if self.feature_kinds[k] == "depth"]
        if unsupported:
            raise ValueError(f"flow_matching does not take depth inputs {unsupported}; drop them from features")
        self.lowdim_keys = [k for k in self.input_keys if self.feature_kinds[k] in ("state", "env")]
        self.image_keys = [k for k in self.input_keys if self.feature_kinds[k] == "visual"]
        if not self.input_keys:
            raise ValueError("features must contain at least one observation.* input")
        self.image_encoders = nn.ModuleDict()
        for key in self.image_keys:
            channels = image_chw(key, self.features[key])[0]
            self.image_encoders[key.replace(".", "__")] = ImageEncoder(
                channels, config.vision_channels, config.spatial_softmax_num_keypoints, config.image_feature_dim
            )
        lowdim = sum(int(self.features[k]["shape"][0]) for k in self.lowdim_keys)
        cond_dim = config.n_obs_steps * (lowdim + config.image_feature_dim * len(self.image_keys))
        self.net = self._build_net(config, cond_dim)

    def _build_net(self, config: FlowMatchingConfig, cond_dim: int) -> nn.Module:
        if config.network == "mlp":
            return MLPVelocityNet(config.horizon, self.action_dim, cond_dim, config.mlp_hidden_dim,
                                  config.mlp_num_blocks, config.time_embed_dim)
        return UNetVelocityNet(self.action_dim, cond_dim, config.unet_down_dims, config.unet_kernel_size,
                               config.unet_n_groups, config.time_embed_dim)

    def _check_obs(self, obs: Mapping[str, Tensor]) -> int:
        """Check every input key is present with ``(B, To, ...)`` shape; return B."""
        check_observation_steps(obs, self.input_keys, self.image_keys, self.config.n_obs_steps, f"{self.input_keys}")
        return int(obs[self.input_keys[0]].shape[0])

    def encode_observations(self, obs: Mapping[str, Tensor]) -> Tensor:
        """Condition vector ``(B, cond_dim)`` from normalised ``(B, To, ...)`` observations."""
        batch_size = self._check_obs(obs)
        parts = [obs[k] for k in self.lowdim_keys]
        for key in self.image_keys:
            images = obs[key].flatten(0, 1)  # (B * To, C, H, W)
            if self.config.crop_shape is not None:
                images = crop_images(images, self.config.crop_shape, random=self.training)
            feats = self.image_encoders[key.replace(".", "__")](images)
            parts.append(feats.unflatten(0, (batch_size, self.config.n_obs_steps)))
        return torch.cat(parts, dim=-1).flatten(1)

    def forward(self, batch: Mapping[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        """Flow-matching loss on one un-normalised batch (``sample_weights`` honoured); returns ``(loss, {"loss": float})``."""
        if "action" not in batch:
            raise KeyError("batch has no 'action'")
        norm = self.normalizer.normalize({**batch, "action": self.to_relative(batch["action"], batch)})
        cond = self.encode_observations(norm)
        actions = norm["action"]
        expected = (cond.shape[0], self.config.horizon, self.action_dim)
        if tuple(actions.shape) != expected:
            raise ValueError(f"'action': expected shape {expected} (B, horizon, action_dim), got {tuple(actions.shape)}")
        loss = flow_matching_loss(lambda x, t: self.net(x, t, cond), actions, self.config.time_sampling,
                                  batch.get("action_is_pad"), batch.get("sample_weights"))
        return loss, {"loss": loss.item()}

    @torch.no_grad()
    def predict_action_chunk(self, obs: Mapping[str, Tensor], generator: torch.Generator | None = None) -> Tensor:
        """Sample ``(B, horizon, action_dim)`` actions in world units by Euler integration from noise.

        ``obs`` holds un-normalised ``(B, n_obs_steps, ...)`` tensors. With a ``generator`` the noise, and so
        the output, is reproducible.
        """
        cond = self.encode_observations(self.normalizer.normalize(obs))
        shape = (cond.shape[0], self.config.horizon, self.action_dim)
        x = euler_sample(lambda x, t: self.net(x, t, cond), shape, self.config.num_inference_steps, generator,
                         cond.device, cond.dtype)
        if self.config.clip_sample and self.normalizer.modes.get("action") == "min_max":
            x = x.clamp(-1.0, 1.0)
        return self.to_absolute(self.normalizer.unnormalize_action(x), obs)
