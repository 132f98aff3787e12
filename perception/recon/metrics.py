"""Reconstruction quality figures (issue 18): novel-view depth AbsRel, RGB PSNR, and the Chamfer distance of
reconstructed points to an object's true surface. Plain numpy / scipy, units m (Chamfer reported by callers in mm)."""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree


def depth_absrel(pred: np.ndarray, true: np.ndarray) -> float:
    """Mean ``|pred - true| / true`` over pixels whose true depth is known (> 0); nan when none is.

    Raises:
        ValueError: arrays of different shapes.
    """
    pred, true = np.asarray(pred, float), np.asarray(true, float)
    if pred.shape != true.shape:
        raise ValueError(f"depth_absrel: shapes differ, {pred.shape} vs {true.shape}")
    known = true > 0
    if not known.any():
        return float("nan")
    return float(np.mean(np.abs(pred[known] - true[known]) / true[known]))


def psnr(pred: np.ndarray, true: np.ndarray, peak: float = 1.0) -> float:
    """Peak signal-to-noise ratio (dB) of images in [0, ``peak``]; capped at 100 dB for identical images.

    Raises:
        ValueError: arrays of different shapes.
    """
    pred, true = np.asarray(pred, float), np.asarray(true, float)
    if pred.shape != true.shape:
        raise ValueError(f"psnr: shapes differ, {pred.shape} vs {true.shape}")
    mse = float(np.mean((pred - true) ** 2))
    return 100.0 if mse <= 1e-10 * peak**2 else float(10.0 * np.log10(peak**2 / mse))


def chamfer(pred: np.ndarray, true: np.ndarray, empty: float = float("nan")) -> float:
    """Symmetric Chamfer distance (m): the mean of the mean nearest-neighbour distance from ``pred`` (N, 3) to
    ``true`` (M, 3) (accuracy) and from ``true`` to ``pred`` (completeness). ``empty`` when ``pred`` has no point.

    Raises:
        ValueError: ``true`` empty, or arrays that are not (N, 3).
    """
    pred, true = np.asarray(pred, float).reshape(-1, 3), np.asarray(true, float).reshape(-1, 3)
    if len(true) == 0:
        raise ValueError("chamfer: the true surface has no point")
    if len(pred) == 0:
        return empty
    accuracy = cKDTree(true).query(pred)[0].mean()
    completeness = cKDTree(pred).query(true)[0].mean()
    return float(0.5 * (accuracy + completeness))


def crop_near(points: np.ndarray, surface: np.ndarray, margin: float, min_z: float) -> np.ndarray:
    """The ``points`` (N, 3) inside ``surface``'s axis-aligned bounding box grown by ``margin`` (m) and above
    ``min_z`` (m, e.g. clear of the table plane): the reconstruction "near the object"."""
    points = np.asarray(points, float).reshape(-1, 3)
    low, high = surface.min(axis=0) - margin, surface.max(axis=0) + margin
    keep = np.all((points >= low) & (points <= high), axis=1) & (points[:, 2] > min_z)
    return points[keep]
