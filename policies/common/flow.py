"""Flow matching (rectified flow) on action chunks: time embedding, the training loss and Euler sampling.

Convention (as pi0): ``x_t = (1 - t) x0 + t a`` with noise ``x0 ~ N(0, I)`` at ``t = 0`` and data ``a`` at ``t = 1``;
the network regresses the velocity ``a - x0``; sampling integrates ``dx/dt = v(x, t)`` from ``t = 0`` to 1.
Nothing here knows about features or normalisation: a policy passes a closure ``velocity_fn(x, t)``.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn

TIME_SAMPLINGS = ("uniform", "beta", "logit_normal")
VelocityFn = Callable[[Tensor, Tensor], Tensor]  # (noisy chunk (B, H, A), time (B,)) -> velocity (B, H, A)
# std of the initial noise of euler_sample (1: the trained distribution); set by initial_noise_scale
_NOISE_SCALE: contextvars.ContextVar[float] = contextvars.ContextVar("initial_noise_scale", default=1.0)


@contextlib.contextmanager
def initial_noise_scale(scale: float) -> Iterator[None]:
    """Within the block, :func:`euler_sample` draws its initial noise with std ``scale`` instead of 1 (a sampling
    temperature for exploration: > 1 more diverse chunks, < 1 closer to the mode; every policy that samples through
    :func:`euler_sample` obeys it).

    Raises: ValueError: ``scale`` <= 0.
    """
    if not scale > 0:
        raise ValueError(f"initial noise scale must be > 0, got {scale}")
    token = _NOISE_SCALE.set(float(scale))
    try:
        yield
    finally:
        _NOISE_SCALE.reset(token)


def sincos_time_embedding(t: Tensor, dim: int, min_period: float = 4e-3, max_period: float = 4.0) -> Tensor:
    """Sine-cosine embedding ``(B, dim)`` of flow times ``t`` ``(B,)`` in [0, 1], periods log-spaced (as pi0)."""
    fraction = torch.linspace(0.0, 1.0, dim // 2, device=t.device, dtype=torch.float32)
    period = min_period * (max_period / min_period) ** fraction
    angle = t.float()[:, None] * (2 * math.pi / period)[None, :]
    return torch.cat([torch.sin(angle), torch.cos(angle)], dim=-1)


class TimeEmbedding(nn.Module):
    """Flow time ``t`` ``(B,)`` -> ``(B, dim)``: sine-cosine features through a 2-layer MLP."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.SiLU(), nn.Linear(4 * dim, dim))

    def forward(self, t: Tensor) -> Tensor:
        return self.mlp(sincos_time_embedding(t, self.dim))


def sample_flow_time(kind: str, n: int, device: torch.device) -> Tensor:
    """``n`` training flow times in [0, 1] from torch's global RNG.

    ``kind``: ``"uniform"`` U(0, 1); ``"logit_normal"`` sigmoid(N(0, 1)); ``"beta"`` pi0's ``0.999 (1 - Beta(1.5, 1))``
    (most mass at noisy, small t). Raises ``ValueError`` for another kind.
    """
    if kind == "uniform":
        return torch.rand(n, device=device)
    if kind == "logit_normal":
        return torch.sigmoid(torch.randn(n, device=device))
    if kind != "beta":
        raise ValueError(f"time_sampling must be one of {TIME_SAMPLINGS}, got {kind!r}")
    beta = torch.distributions.Beta(torch.tensor(1.5, device=device), torch.tensor(1.0, device=device))
    return 0.999 * (1.0 - beta.sample((n,)))


def flow_matching_loss(velocity_fn: VelocityFn, actions: Tensor, time_sampling: str,
                       action_is_pad: Tensor | None = None, sample_weights: Tensor | None = None) -> Tensor:
    """Mean squared velocity error on normalised ``actions`` ``(B, H, A)``, padded steps left out.

    Draws the noise first, then the times (torch's global RNG), so a seeded run is reproducible.
    ``action_is_pad`` ``(B, H)`` bool marks chunk steps past the episode end. ``sample_weights`` ``(B,)`` >= 0
    (reward-aligned BC, :mod:`policies.rewards.rabc`) weights each sample's valid steps: the loss is
    ``sum_i w_i * err_i / sum_i w_i * n_i`` (``err_i`` the sample's summed squared error over its ``n_i`` valid
    step-dims), so uniform weights give the unweighted loss, zero-weight samples are ignored, and an all-zero batch
    gives 0 (no gradient) instead of NaN.
    """
    noise = torch.randn_like(actions)
    t = sample_flow_time(time_sampling, actions.shape[0], actions.device)
    t_ = t[:, None, None]
    velocity = velocity_fn((1 - t_) * noise + t_ * actions, t)
    err = (velocity - (actions - noise)).square()
    if action_is_pad is None and sample_weights is None:
        return err.mean()
    valid = torch.ones_like(err[..., 0]) if action_is_pad is None else (~action_is_pad.bool()).to(err.dtype)
    if sample_weights is None:
        valid = valid.unsqueeze(-1)
        return (err * valid).sum() / (valid.sum() * actions.shape[-1]).clamp_min(1.0)
    weight = (valid * sample_weights.to(err.dtype)[:, None]).unsqueeze(-1)  # (B, H, 1)
    total = weight.sum() * actions.shape[-1]
    return (err * weight).sum() / total.clamp_min(torch.finfo(err.dtype).tiny)


def euler_sample(velocity_fn: VelocityFn, shape: tuple[int, ...], steps: int, generator: torch.Generator | None,
                 device: torch.device, dtype: torch.dtype) -> Tensor:
    """Integrate ``dx/dt = v(x, t)`` from Gaussian noise of ``shape`` at ``t = 0`` to ``t = 1`` in ``steps`` Euler steps.

    The noise comes from ``generator`` (reproducible) or torch's global RNG, with std 1 unless
    :func:`initial_noise_scale` sets another.
    """
    x = torch.randn(shape, generator=generator, device=device, dtype=dtype)
    scale = _NOISE_SCALE.get()
    if scale != 1.0:
        x = x * scale
    for i in range(steps):
        t = torch.full((shape[0],), i / steps, device=device, dtype=dtype)
        x = x + velocity_fn(x, t) / steps
    return x
