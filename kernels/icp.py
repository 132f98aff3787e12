"""Point-to-plane ICP: Gauss-Newton on the 6-DoF twist with a robust kernel, as Open3D's ``registration_icp``.

One Warp module. Each iteration is one launch: every source point, moved by the current estimate,
finds its nearest target point within ``max_correspondence_distance`` on a ``wp.HashGrid`` and adds
its weighted Jacobian terms (J^T J, J^T r, squared distance, count) into float64 slots; the host sums
the slots, solves the 6x6 system and left-multiplies the update, exactly as Open3D does. Fitness,
inlier RMSE and the stopping test (``relative_fitness``, ``relative_rmse``) follow Open3D too.

Two departures from Open3D, both for scenes it was not tuned on:

* The rotation is linearised about the moved source's centroid, not the world origin. The optimum is
  the same, but far from the origin (clouds around (100, -50, 20) m) an update about the origin
  turns a small rotation into metres of second-order error, and the iteration diverges.
* The 6x6 system is solved in its observable directions only (eigen-decomposition of the balanced
  J^T J, directions with eigenvalue below ``_OBSERVABLE`` of the largest left at zero), as Open3D's
  LDLT leaves exactly-zero pivots at zero. An exactly planar target (a table seen from above) fixes
  the height and the two tilts but not the in-plane slide or the spin about its normal; those stay at
  the initial guess and the result counts them in ``degenerate_directions``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import warp as wp

from kernels._arrays import as_rigid, as_warp, kind_of, np_to_kind, positive
from kernels._runtime import launch_chunks, reduction_slots, resolve_device
from kernels.neighbors import NeighborSearch, estimate_normals, gather, spatial_order

# Robust kernels, named as in Open3D (open3d.pipelines.registration.*Loss).
LOSSES = {"l2": 0, "l1": 1, "huber": 2, "cauchy": 3, "gm": 4, "tukey": 5}
_NUM_TERMS = 29  # 21 (upper J^T J) + 6 (J^T r) + squared distance + count
# Eigenvalues of the balanced J^T J below this fraction of the largest are unobservable directions:
# far above float32 rounding on an exact plane (~1e-14), far below the weakest direction of a
# real scene (a noisy plane's in-plane slide, ~1e-3).
_OBSERVABLE = 1e-6
# Grid cells: this many times the RMS correspondence distance, and at least this many point spacings.
# Twice the first choice (1.2, 1.5): fewer, fuller cells cost less than the hash look-ups of many
# near-empty ones; ICP at 100k points, interleaved runs on a loaded 2-core machine: ~2x faster, same
# result (3x was no faster).
_CELL_PER_DISTANCE = 2.4
_MIN_CELL_SPACINGS = 3.0


@wp.func
def _robust_weight(r: float, loss: int, k: float) -> float:
    """IRLS weight w(r) of Open3D's robust kernels (residual r in m, scale k in m)."""
    e = wp.abs(r)
    w = wp.float32(1.0)
    if loss == 1:
        w = 1.0 / wp.max(e, 1.0e-12)
    elif loss == 2:
        if e > k:
            w = k / e
    elif loss == 3:
        w = 1.0 / (1.0 + (r / k) * (r / k))
    elif loss == 4:
        w = k / ((k + r * r) * (k + r * r))
    elif loss == 5:
        if e > k:
            w = 0.0
        else:
            w = (1.0 - (e / k) * (e / k)) * (1.0 - (e / k) * (e / k))
    return w


@wp.func
def _nearest(grid: wp.uint64, target: wp.array(dtype=wp.vec3), s: wp.vec3, max_dist: float, cell: float,
             bound: float) -> wp.vec2:
    """Nearest target point strictly closer than max_dist to s: (index as float, squared distance); index -1 if none.

    With a known upper bound on the distance (``bound`` >= 0: the distance to last pass's partner)
    one query of that radius is exact. Otherwise it searches a radius of one cell first and widens
    it only while a point outside the searched radius could still beat the best candidate.
    """
    best = max_dist * max_dist
    hit = wp.int32(-1)
    j = wp.int32(0)
    radius = wp.min(cell, max_dist)
    if bound >= 0.0:
        radius = wp.min(bound * 1.00001 + 1.0e-7, max_dist)
    while True:
        query = wp.hash_grid_query(grid, s, radius)
        while wp.hash_grid_query_next(query, j):
            dd = wp.length_sq(target[j] - s)
            if dd < best:
                best = dd
                hit = j
        if radius >= max_dist or (hit >= 0 and best <= radius * radius):
            break
        radius = wp.min(2.0 * radius, max_dist)
    return wp.vec2(float(hit), best)


@wp.kernel
def _pilot_distances(grid: wp.uint64, target: wp.array(dtype=wp.vec3), source: wp.array(dtype=wp.vec3),
                     pick: wp.array(dtype=wp.int32), pose: wp.mat44, max_dist: float, cell: float,
                     out: wp.array(dtype=float)):
    t = wp.tid()
    r = _nearest(grid, target, wp.transform_point(pose, source[pick[t]]), max_dist, cell, -1.0)
    out[t] = wp.where(r[0] >= 0.0, wp.sqrt(r[1]), -1.0)


@wp.kernel
def _icp_terms(grid: wp.uint64, target: wp.array(dtype=wp.vec3), target_normals: wp.array(dtype=wp.vec3),
               source: wp.array(dtype=wp.vec3), pose: wp.mat44, centre: wp.vec3, max_dist: float, cell: float, loss: int,
               loss_scale: float, partner: wp.array(dtype=wp.int32), acc: wp.array2d(dtype=wp.float64),
               offset: int, chunk: int, spread: int):
    t = wp.tid()
    i = t + offset
    s = wp.transform_point(pose, source[i])
    bound = wp.float32(-1.0)
    if partner[i] >= 0:
        bound = wp.length(target[partner[i]] - s)
    found = _nearest(grid, target, s, max_dist, cell, bound)
    hit = wp.int32(found[0])
    best = found[1]
    partner[i] = hit
    if hit < 0:
        return
    slot = chunk + t % spread
    nt = target_normals[hit]
    r = wp.dot(s - target[hit], nt)
    w = _robust_weight(r, loss, loss_scale)
    c = wp.cross(s - centre, nt)  # rotation linearised about the moved source's centroid
    jac = wp.vector(wp.float64(c[0]), wp.float64(c[1]), wp.float64(c[2]),
                    wp.float64(nt[0]), wp.float64(nt[1]), wp.float64(nt[2]))
    wd = wp.float64(w)
    rd = wp.float64(r)
    term = wp.int32(0)
    for a in range(6):
        for b in range(a, 6):
            wp.atomic_add(acc, slot, term, wd * jac[a] * jac[b])
            term += 1
    for a in range(6):
        wp.atomic_add(acc, slot, 21 + a, wd * jac[a] * rd)
    wp.atomic_add(acc, slot, 27, wp.float64(best))
    wp.atomic_add(acc, slot, 28, wp.float64(1.0))


@dataclass(frozen=True)
class ICPResult:
    """Outcome of ``icp_point_to_plane``.

    Attributes:
        transformation: 4x4 float64 target_from_source transform (same array kind as the source).
        fitness: inlier correspondences / source points, at the returned transform.
        inlier_rmse: RMS Euclidean distance (m) of the inlier correspondences.
        iterations: Gauss-Newton updates applied.
        converged: True when the relative fitness/RMSE test stopped it before ``max_iterations``.
        degenerate_directions: how many of the 6 twist directions the correspondences at the
            returned transform do not constrain (0 on a well-posed scene, 3 on an exact plane: the
            in-plane slide and the spin about its normal, left at the initial guess; 6 with no
            correspondences).
    """

    transformation: Any
    fitness: float
    inlier_rmse: float
    iterations: int
    converged: bool
    degenerate_directions: int = 0


def _twist_to_matrix(x: np.ndarray) -> np.ndarray:
    """[alpha, beta, gamma, tx, ty, tz] -> 4x4 with R = Rz(gamma) Ry(beta) Rx(alpha), as Open3D."""
    a, b, g = x[:3]
    ca, sa, cb, sb, cg, sg = np.cos(a), np.sin(a), np.cos(b), np.sin(b), np.cos(g), np.sin(g)
    rx = np.array([[1, 0, 0], [0, ca, -sa], [0, sa, ca]])
    ry = np.array([[cb, 0, sb], [0, 1, 0], [-sb, 0, cb]])
    rz = np.array([[cg, -sg, 0], [sg, cg, 0], [0, 0, 1]])
    m = np.eye(4)
    m[:3, :3] = rz @ ry @ rx
    m[:3, 3] = x[3:]
    return m


def _about(centre: np.ndarray, motion: np.ndarray) -> np.ndarray:
    """``motion`` (4x4, acting on coordinates relative to ``centre``) as a 4x4 acting on world coordinates (m)."""
    out = motion.copy()
    out[:3, 3] += centre - motion[:3, :3] @ centre
    return out


def _observable_step(jtj: np.ndarray, jtr: np.ndarray, length: float) -> tuple[np.ndarray, int]:
    """Gauss-Newton twist minimising ``|J x + r|^2`` in the observable directions; and how many are not.

    The rotation columns are scaled by ``length`` (m, the source's radius) so that radians and metres
    weigh alike; eigen-directions of the balanced J^T J under ``_OBSERVABLE`` of its largest
    eigenvalue get no update (a pseudo-inverse, as Open3D's LDLT with zero pivots).
    """
    scale = np.array([1.0 / length] * 3 + [1.0] * 3)
    values, vectors = np.linalg.eigh(jtj * scale[:, None] * scale[None, :])
    keep = values > _OBSERVABLE * max(float(values[-1]), 0.0)
    if not keep.any():
        return np.zeros(6), 6
    v = vectors[:, keep]
    y = v @ ((v.T @ (-jtr * scale)) / values[keep])
    return y * scale, int(6 - keep.sum())


class _AdaptiveGrid:
    """The target's hash grid, with cells sized to the current correspondence distances.

    A query first searches one cell around the moved source point, so cells a few times the typical
    nearest distance answer most queries at once (``_CELL_PER_DISTANCE``); far from convergence that
    distance is large, near convergence it shrinks to the point spacing (``_MIN_CELL_SPACINGS``).
    """

    def __init__(self, search: NeighborSearch, max_dist: float):
        self.search = search
        self.max_dist = max_dist
        # A degenerate spacing (duplicate or coplanar-grid points) must not give zero-width cells.
        self.min_cell = max(min(max_dist, _MIN_CELL_SPACINGS * search.spacing()), 1e-3 * max_dist)
        self.cell = -1.0

    def fit(self, distance: float) -> None:
        cell = float(np.clip(_CELL_PER_DISTANCE * distance, self.min_cell, self.max_dist))
        if self.cell < 0 or abs(cell - self.cell) > 0.25 * self.cell:
            self.search.grid.build(self.search.sorted, cell)
            self.cell = cell


def _radius_about(src: wp.array, mean: np.ndarray) -> float:
    """RMS distance (m) of ``src`` from ``mean``, from a sample; 1 m for a single point or coincident points."""
    pick = np.random.default_rng(0).integers(0, src.shape[0], min(src.shape[0], 1024)).astype(np.int32)
    sample = src.numpy()[pick] if src.device.is_cpu else gather(src, wp.array(pick, device=src.device)).numpy()
    r = float(np.sqrt(np.mean(np.sum((sample.astype(np.float64) - mean) ** 2, axis=1))))
    return r if r > 0.0 else 1.0


def _pilot_scale(grid: _AdaptiveGrid, src: wp.array, pose: np.ndarray) -> float:
    """Median distance (m) from sampled source points, moved by ``pose``, to the target (within max_dist)."""
    dev = src.device
    grid.fit(0.0)
    pick = np.random.default_rng(0).integers(0, src.shape[0], 256).astype(np.int32)
    out = wp.empty(len(pick), dtype=float, device=dev)
    mat = wp.mat44(*pose.astype(np.float32).reshape(-1).tolist())
    wp.launch(_pilot_distances, len(pick), inputs=[grid.search.grid.id, grid.search.sorted, src,
                                                   wp.array(pick, device=dev), mat, grid.max_dist, grid.cell, out],
              device=dev)
    d = out.numpy()
    d = d[d >= 0]
    return float(np.median(d)) if len(d) else grid.max_dist


class _Terms:
    """Sums of one ICP pass: 6x6 J^T J, J^T r, squared distances and correspondence count."""

    def __init__(self, acc: np.ndarray):
        total = acc.sum(axis=0)
        self.jtj = np.zeros((6, 6))
        iu = np.triu_indices(6)
        self.jtj[iu] = total[:21]
        self.jtj = self.jtj + np.triu(self.jtj, 1).T
        self.jtr = total[21:27]
        self.sq_sum = float(total[27])
        self.count = int(np.rint(total[28]))


def icp_point_to_plane(
    source: Any,
    target: Any,
    max_correspondence_distance: float,
    *,
    init: Any | None = None,
    target_normals: Any | None = None,
    loss: str = "l2",
    loss_scale: float = 1.0,
    max_iterations: int = 30,
    relative_fitness: float = 1e-6,
    relative_rmse: float = 1e-6,
    device: str | None = None,
) -> ICPResult:
    """Align ``source (N, 3)`` to ``target (M, 3)`` by point-to-plane ICP; return target_from_source.

    Args:
        source, target: point clouds (m).
        max_correspondence_distance: pairs farther apart than this (m) are not correspondences.
        init: initial 4x4 rigid target_from_source guess; default identity.
        target_normals: ``(M, 3)`` unit normals of the target; estimated (PCA, 30 neighbours) if None.
        loss: robust kernel ``l2``, ``l1``, ``huber``, ``cauchy``, ``gm`` or ``tukey`` (Open3D's).
        loss_scale: the kernel's scale ``k`` (m).
        max_iterations, relative_fitness, relative_rmse: Open3D's ``ICPConvergenceCriteria``.

    Raises:
        ValueError: on bad clouds or normals (shape, dtype, empty, NaN), a non-rigid ``init``,
            an unknown loss or non-positive scalars.
    """
    dev = resolve_device(device, source)
    src = as_warp(source, "source", dev, shape=(None, 3), dtype=wp.vec3)
    tgt = as_warp(target, "target", dev, shape=(None, 3), dtype=wp.vec3)
    if target_normals is None:
        nrm = as_warp(estimate_normals(tgt, min(30, tgt.shape[0]), viewpoint=None), "target_normals", dev,
                      shape=(tgt.shape[0], 3), dtype=wp.vec3)
    else:
        nrm = as_warp(target_normals, "target_normals", dev, shape=(tgt.shape[0], 3), dtype=wp.vec3)
    max_dist = positive(max_correspondence_distance, "max_correspondence_distance")
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {sorted(LOSSES)}, got {loss!r}")
    scale = positive(loss_scale, "loss_scale")
    iterations = positive(max_iterations, "max_iterations", integer=True, allow_zero=True)
    rel_fit = positive(relative_fitness, "relative_fitness", allow_zero=True)
    rel_rmse = positive(relative_rmse, "relative_rmse", allow_zero=True)
    pose = np.eye(4) if init is None else as_rigid(init, "init")

    # Target and source in Morton order: grid cells and consecutive queries then touch nearby memory.
    search = NeighborSearch(tgt, device=dev.alias)
    tgt_sorted, nrm_sorted = search.sorted, gather(nrm, search.order)
    src = gather(src, spatial_order(src))
    n = src.shape[0]
    slots = reduction_slots(n, dev)
    acc = wp.zeros((slots, _NUM_TERMS), dtype=wp.float64, device=dev)
    partner = wp.full(n, -1, dtype=wp.int32, device=dev)  # last pass's correspondence of each source point
    grid = _AdaptiveGrid(search, max_dist)
    grid.fit(_pilot_scale(grid, src, pose))
    mean = np.asarray(wp.utils.array_sum(src), dtype=np.float64) / n  # source centroid (m, source frame)
    length = _radius_about(src, mean)

    def centre(m: np.ndarray) -> np.ndarray:
        return m[:3, :3] @ mean + m[:3, 3]

    def evaluate(m: np.ndarray) -> _Terms:
        acc.zero_()
        mat = wp.mat44(*m.astype(np.float32).reshape(-1).tolist())
        launch_chunks(_icp_terms, n, [search.grid.id, tgt_sorted, nrm_sorted, src, mat, wp.vec3(*centre(m)), max_dist,
                                      grid.cell, LOSSES[loss], scale, partner, acc], dev, slots)
        terms = _Terms(acc.numpy())
        if terms.count:
            grid.fit(np.sqrt(terms.sq_sum / terms.count))  # next pass: cells sized to the current distances
        return terms

    def score(t: _Terms) -> tuple[float, float]:
        return t.count / n, (np.sqrt(t.sq_sum / t.count) if t.count else 0.0)

    terms = evaluate(pose)
    done, converged = 0, False
    for _ in range(iterations):
        if terms.count == 0:
            break
        x, _ = _observable_step(terms.jtj, terms.jtr, length)
        pose = _about(centre(pose), _twist_to_matrix(x)) @ pose
        done += 1
        previous = score(terms)
        terms = evaluate(pose)
        fitness, rmse = score(terms)
        if abs(previous[0] - fitness) < rel_fit and abs(previous[1] - rmse) < rel_rmse:
            converged = True
            break
    fitness, rmse = score(terms)
    degenerate = _observable_step(terms.jtj, terms.jtr, length)[1] if terms.count else 6
    return ICPResult(np_to_kind(pose, kind_of(source), dev), float(fitness), float(rmse), done, converged, degenerate)
