"""Checking and converting the arrays that enter and leave the kernel wrappers.

Inputs may be NumPy arrays (or nested lists), torch tensors or ``wp.array``; outputs come back as
the same kind as the call's primary input ("numpy or torch in, same out"). Every check raises
``ValueError`` naming the argument, so bad input never reaches a kernel.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import warp as wp

Kind = Literal["numpy", "torch", "warp"]
ElementKind = Literal["float", "int", "bool", "uint8", "depth", "color"]

_NP_DTYPES: dict[Any, type] = {
    wp.float32: np.float32,
    wp.float64: np.float64,
    wp.int32: np.int32,
    wp.int64: np.int64,
    wp.uint8: np.uint8,
    wp.bool: np.bool_,
    wp.vec3: np.float32,
    wp.vec4: np.float32,
    wp.mat44: np.float32,
    wp.mat33: np.float32,
}


def is_torch(x: Any) -> bool:
    """Return True for a torch tensor (without importing torch)."""
    return type(x).__module__.startswith("torch") and hasattr(x, "detach")


def kind_of(x: Any) -> Kind:
    """Return which array library ``x`` belongs to: ``numpy`` (also lists), ``torch`` or ``warp``."""
    if isinstance(x, wp.array):
        return "warp"
    if is_torch(x):
        return "torch"
    return "numpy"


def _shape_text(shape: tuple[int | None, ...]) -> str:
    names = iter("NMKL")
    return "(" + ", ".join(str(d) if d is not None else next(names) for d in shape) + ")"


def _check_shape(name: str, shape: tuple[int, ...], spec: tuple[int | None, ...]) -> None:
    if len(shape) != len(spec) or any(s is not None and d != s for d, s in zip(shape, spec)):
        raise ValueError(f"{name} must have shape {_shape_text(spec)}, got {tuple(shape)}")


def _element_ok(kind: ElementKind, dtype: Any, torch_tensor: Any = None) -> bool:
    if torch_tensor is not None:
        if kind == "float":
            return torch_tensor.is_floating_point()
        text = str(torch_tensor.dtype)
        if kind == "int":
            return text in ("torch.int32", "torch.int64", "torch.int16", "torch.uint8", "torch.int8")
        if kind == "bool":
            return text == "torch.bool"
        if kind == "uint8":
            return text == "torch.uint8"
        if kind == "depth":
            return torch_tensor.is_floating_point() or text in ("torch.uint16", "torch.int32")
        if kind == "color":
            return torch_tensor.is_floating_point() or text == "torch.uint8"
        return False
    dtype = np.dtype(dtype)
    if kind == "float":
        return np.issubdtype(dtype, np.floating)
    if kind == "int":
        return np.issubdtype(dtype, np.integer)
    if kind == "bool":
        return dtype == np.bool_
    if kind == "uint8":
        return dtype == np.uint8
    if kind == "depth":
        return np.issubdtype(dtype, np.floating) or dtype in (np.dtype(np.uint16), np.dtype(np.int32))
    if kind == "color":
        return np.issubdtype(dtype, np.floating) or dtype == np.uint8
    return False


_KIND_TEXT = {
    "float": "a floating-point dtype",
    "int": "an integer dtype",
    "bool": "dtype bool",
    "uint8": "dtype uint8",
    "depth": "a floating-point dtype (metres) or uint16 (scaled by depth_scale)",
    "color": "a floating-point dtype or uint8",
}


def as_warp(
    x: Any,
    name: str,
    device: wp.context.Device,
    *,
    shape: tuple[int | None, ...],
    dtype: Any,
    element: ElementKind = "float",
    allow_empty: bool = False,
    finite: bool = True,
) -> wp.array:
    """Check ``x`` and return it as a contiguous ``wp.array`` on ``device``.

    ``shape`` gives the expected shape (``None`` = any length); for vector dtypes (``wp.vec3``,
    ``wp.mat44``, ...) the trailing dimensions belong to the element. ``element`` says what dtypes
    are accepted; floating inputs are cast to float32.

    Raises:
        ValueError: naming ``name`` when the object is not an array, has the wrong shape or dtype,
            is empty (unless ``allow_empty``), or holds NaN/inf (when ``finite``).
    """
    if x is None:
        raise ValueError(f"{name} is required, got None")
    np_dtype = _NP_DTYPES[dtype]
    if isinstance(x, wp.array):
        # Zero-copy views: NumPy on the CPU, a torch tensor on a GPU; checked and converted below.
        x = x.numpy() if x.device.is_cpu else wp.to_torch(x)
    if is_torch(x) and x.device.type == "cpu":
        x = x.detach().numpy()  # NumPy's checks are much faster than torch's on the CPU
    if is_torch(x):
        _check_shape(name, tuple(x.shape), shape)
        if not _element_ok(element, None, x):
            raise ValueError(f"{name} must have {_KIND_TEXT[element]}, got {x.dtype}")
        if not allow_empty and x.numel() == 0:
            raise ValueError(f"{name} is empty (shape {tuple(x.shape)})")
        t = x.detach()
        if finite and t.is_floating_point() and t.numel() and not bool(t.isfinite().all()):
            raise ValueError(f"{name} contains NaN or infinite values")
        import torch

        t = t.to(device=str(device) if not device.is_cpu else "cpu", dtype=getattr(torch, np.dtype(np_dtype).name))
        return wp.from_torch(t.contiguous(), dtype=dtype)
    if not isinstance(x, np.ndarray):
        try:
            x = np.asarray(x)
        except Exception as exc:
            raise ValueError(f"{name} must be a NumPy array, torch tensor or wp.array, got {type(x).__name__}") from exc
        if x.dtype == object:
            raise ValueError(f"{name} must be a numeric array, got {type(x).__name__} of objects")
    _check_shape(name, x.shape, shape)
    if not _element_ok(element, x.dtype):
        raise ValueError(f"{name} must have {_KIND_TEXT[element]}, got {x.dtype}")
    if not allow_empty and x.size == 0:
        raise ValueError(f"{name} is empty (shape {x.shape})")
    if finite and np.issubdtype(x.dtype, np.floating) and x.size and not np.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    data = np.ascontiguousarray(x, dtype=np_dtype)
    if device.is_cpu:
        return wp.array(data, dtype=dtype, device=device, copy=False)
    return wp.array(data, dtype=dtype, device=device)


def as_matrix(x: Any, name: str, rows: int, cols: int) -> np.ndarray:
    """Check a small matrix (e.g. a 4x4 transform) and return it as float64 NumPy.

    Raises:
        ValueError: on the wrong shape, a non-numeric dtype or non-finite entries.
    """
    if x is None:
        raise ValueError(f"{name} is required, got None")
    if is_torch(x):
        x = x.detach().cpu().numpy()
    elif isinstance(x, wp.array):
        x = x.numpy()
    arr = np.asarray(x)
    if arr.shape != (rows, cols):
        raise ValueError(f"{name} must have shape ({rows}, {cols}), got {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"{name} must be numeric, got {arr.dtype}")
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


_LAST_ROW = np.array([0.0, 0.0, 0.0, 1.0])
_EYE3 = np.eye(3)


def as_rigid(x: Any, name: str, tol: float = 1e-4) -> np.ndarray:
    """Check a 4x4 rigid transform (orthonormal rotation, last row 0 0 0 1) and return float64.

    Raises:
        ValueError: if the matrix is not a rigid transform within ``tol``.
    """
    m = as_matrix(x, name, 4, 4)
    r = m[:3, :3]
    # np.allclose(a, b, atol=tol) (|a - b| <= tol + 1e-5 |b|) written out: np.allclose costs ~30 us
    # per call, a tenth of transforming 100k points.
    if (np.abs(m[3] - _LAST_ROW) - 1e-5 * _LAST_ROW).max() > tol:
        raise ValueError(f"{name} must have last row [0, 0, 0, 1], got {m[3].tolist()}")
    if (np.abs(r @ r.T - _EYE3) - 1e-5 * _EYE3).max() > tol or np.linalg.det(r) < 0:
        raise ValueError(f"{name} must hold a rotation (orthonormal, det +1) in its top-left 3x3")
    return m


def positive(value: Any, name: str, *, integer: bool = False, allow_zero: bool = False) -> Any:
    """Check a positive (or non-negative) finite scalar and return it as float or int.

    Raises:
        ValueError: if ``value`` is not a finite number > 0 (>= 0 with ``allow_zero``), or not an
            integer when ``integer``.
    """
    if integer:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ValueError(f"{name} must be an integer, got {value!r}")
        value = int(value)
    else:
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be a number, got {value!r}") from None
        if not np.isfinite(value):
            raise ValueError(f"{name} must be finite, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")
    return value


def to_kind(arr: wp.array, kind: Kind) -> Any:
    """Return a Warp array as ``kind``: NumPy (host copy or CPU view), torch (zero-copy) or Warp."""
    if kind == "warp":
        return arr
    if kind == "torch":
        return wp.to_torch(arr)
    return arr.numpy()


def np_to_kind(a: np.ndarray, kind: Kind, device: wp.context.Device) -> Any:
    """Return a host NumPy array as ``kind`` (torch tensors and Warp arrays go to ``device``)."""
    if kind == "numpy":
        return a
    arr = wp.array(np.ascontiguousarray(a), device=device)
    return to_kind(arr, kind)
