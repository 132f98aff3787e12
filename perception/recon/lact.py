"""Large-chunk test-time training (LaCT) layers: a gated-MLP fast weight written from input tokens, read by all.

Per head, the fast weight is ``W = (W1, W2, W3)`` with ``f(x) = W2 (silu(W1 x) * (W3 x))`` (W1, W3: hidden x dim,
W2: dim x hidden). One *update* from tokens ``(k_i, v_i)`` with per-token learning rates ``eta_i``:

1. inner loss ``L = -sum_i eta_i <f(k_i), v_i>`` (negative dot product), gradients ``G = dL/dW`` in closed form
   (:func:`inner_gradients`; equal to autograd's, and differentiable for the outer training loop);
2. each ``G`` orthogonalised by :func:`newton_schulz` (Muon's quintic, 5 iterations), the update ``U``;
3. ``W <- W - U``, then every row of each weight rescaled to its pre-update norm (LaCT's weight norm: the update
   turns the weights, it does not grow them).

The *apply* step evaluates ``f`` with the updated weights on query tokens. Chunked (streaming) updates carry ``W``
from one chunk to the next; because steps 2-3 are not linear in the tokens, k chunks give another ``W`` than one
update over the union — streaming equals all-at-once only when a single chunk covers every view.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

# Muon's quintic Newton-Schulz coefficients (Keller Jordan): fast to push singular values into about [0.7, 1.2],
# not to converge to exactly 1.
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


class FastWeights(NamedTuple):
    """One LaCT layer's fast weights for a batch: w1, w3 (B, H, hidden, dim) and w2 (B, H, dim, hidden)."""

    w1: torch.Tensor
    w2: torch.Tensor
    w3: torch.Tensor


def newton_schulz(g: torch.Tensor, steps: int = 5, eps: float = 1e-7) -> torch.Tensor:
    """``g`` (..., m, n) pushed towards the nearest semi-orthogonal matrix ``U V^T`` by ``steps`` iterations of Muon's
    quintic ``X <- a X + (b A + c A^2) X``, ``A = X X^T``, after scaling ``g`` to unit Frobenius norm."""
    a, b, c = NS_COEFFICIENTS
    x = g / (g.norm(dim=(-2, -1), keepdim=True) + eps)
    tall = g.shape[-2] > g.shape[-1]
    if tall:
        x = x.mT
    for _ in range(steps):
        gram = x @ x.mT
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.mT if tall else x


def fast_forward(w: FastWeights, x: torch.Tensor) -> torch.Tensor:
    """``f(x) = W2 (silu(W1 x) * (W3 x))`` per head: x (B, H, N, dim) -> (B, H, N, dim)."""
    return (F.silu(x @ w.w1.mT) * (x @ w.w3.mT)) @ w.w2.mT


def inner_gradients(w: FastWeights, k: torch.Tensor, v: torch.Tensor, eta: torch.Tensor) -> FastWeights:
    """``dL/dW`` of ``L = -sum_i eta_i <f(k_i), v_i>`` for k, v (B, H, N, dim), eta (B, H, N), each scene and head
    on its own (the sum runs over its N tokens)."""
    a, b = k @ w.w1.mT, k @ w.w3.mT  # (B, H, N, hidden)
    sig = torch.sigmoid(a)
    gate = a * sig  # silu(a)
    d_out = -eta[..., None] * v  # dL/df(k_i)
    d_w2 = d_out.mT @ (gate * b)
    d_hidden = d_out @ w.w2
    d_a = d_hidden * b * sig * (1.0 + a * (1.0 - sig))  # silu'(a) = s (1 + a (1 - s))
    d_b = d_hidden * gate
    return FastWeights(d_a.mT @ k, d_w2, d_b.mT @ k)


def lact_update(w: FastWeights, k: torch.Tensor, v: torch.Tensor, eta: torch.Tensor, muon_steps: int = 5,
                eps: float = 1e-6) -> FastWeights:
    """The fast weights after one update from tokens ``(k, v)`` with learning rates ``eta`` (module docstring)."""
    updated = []
    for weight, grad in zip(w, inner_gradients(w, k, v, eta), strict=True):
        step = newton_schulz(grad, muon_steps) if muon_steps > 0 else grad
        new = weight - step
        updated.append(new * (weight.norm(dim=-1, keepdim=True) / (new.norm(dim=-1, keepdim=True) + eps)))
    return FastWeights(*updated)


class LaCTLayer(nn.Module):
    """A cross-view LaCT layer: tokens (B, N, d) -> (B, N, d) read through the fast weights, which ``update=True``
    first writes from the same tokens. Keys and queries are unit length per head; learning rates
    ``eta = softplus(x W_eta + b)`` per token and head."""

    def __init__(self, d_model: int, heads: int, hidden: int, muon_steps: int = 5, lr_bias: float = 0.0):
        super().__init__()
        self.heads, self.dim, self.muon_steps = heads, d_model // heads, muon_steps
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.eta = nn.Linear(d_model, heads)
        nn.init.zeros_(self.eta.weight)
        nn.init.constant_(self.eta.bias, lr_bias)
        self.w1 = nn.Parameter(torch.randn(heads, hidden, self.dim) / self.dim**0.5)
        self.w2 = nn.Parameter(torch.randn(heads, self.dim, hidden) / hidden**0.5)
        self.w3 = nn.Parameter(torch.randn(heads, hidden, self.dim) / self.dim**0.5)
        self.norm = nn.RMSNorm(self.dim)
        self.out = nn.Linear(d_model, d_model, bias=False)

    def initial_state(self, batch: int) -> FastWeights:
        """The learned initial fast weights, one copy per scene (B, H, ...)."""
        return FastWeights(*(w.expand(batch, *w.shape) for w in (self.w1, self.w2, self.w3)))

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.heads, self.dim)).transpose(1, 2)  # (B, N, d) -> (B, H, N, dim)

    def forward(self, x: torch.Tensor, state: FastWeights, update: bool) -> tuple[torch.Tensor, FastWeights]:
        """``(output, fast weights)``: with ``update`` the weights are first updated from ``x``'s tokens, then read
        by all of them; without, only read."""
        q, k, v = (self._heads(t) for t in self.qkv(x).chunk(3, dim=-1))
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        if update:
            eta = F.softplus(self.eta(x)).transpose(1, 2)  # (B, H, N)
            state = lact_update(state, k, v, eta, self.muon_steps)
        read = self.norm(fast_forward(state, q)).transpose(1, 2).flatten(2)
        return self.out(read), state
