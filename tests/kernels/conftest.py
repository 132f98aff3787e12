"""Shared fixtures for the kernels tests: devices, seeded generators and synthetic clouds."""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")  # MuJoCo's reference renderer, headless (the Makefile sets it too)

import numpy as np
import pytest
import warp as wp

import kernels  # noqa: F401  (initialises Warp with the project's kernel cache)

HAS_CUDA = wp.get_cuda_device_count() > 0
DEVICES = [
    "cpu",
    pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")]),
]


@pytest.fixture(params=DEVICES)
def device(request) -> str:
    """Each test using it runs on the CPU and, when there is one, on a CUDA device."""
    return request.param


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def surface_cloud(rng: np.random.Generator, n: int, noise: float = 0.002) -> np.ndarray:
    """Points on three planes and a sphere around the origin (negative coordinates included), float32."""
    p = rng.uniform(-1.0, 1.0, (n, 3))
    kind = rng.integers(0, 4, n)
    p[kind == 0, 2] = -0.2
    p[kind == 1, 0] = -1.0
    p[kind == 2, 1] = -1.0
    s = rng.normal(size=(int((kind == 3).sum()), 3))
    p[kind == 3] = 0.3 * s / np.linalg.norm(s, axis=1, keepdims=True) + [0.3, 0.2, 0.3]
    return (p + rng.normal(scale=noise, size=p.shape)).astype(np.float32)
