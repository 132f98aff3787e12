"""Fast geometry for realsim in NVIDIA Warp: point clouds, ICP, TSDF, batched ray-cast rendering, correction forces.

The same kernels run on the CPU and on a CUDA GPU (``device="cpu" | "cuda" | "auto"``). Wrappers take
NumPy arrays, torch tensors or ``wp.array`` and return the same kind; bad input raises ``ValueError``
naming the argument before any kernel runs. Importing this package initialises Warp (kernel cache
under ``WARP_CACHE_PATH``, else ``<repo>/.cache/warp``). Nothing here imports another project package.
"""

from kernels._runtime import cpu_threads, resolve_device, set_cpu_threads
from kernels.cameras import camera_intrinsics, fovy_intrinsics, world_from_camera_cv
from kernels.forces import CorrectionForces
from kernels.icp import ICPResult, icp_point_to_plane
from kernels.neighbors import (
    ChamferResult,
    KnnPass,
    KnnResult,
    NeighborSearch,
    RadiusResult,
    chamfer_distance,
    estimate_normals,
    knn_search,
    radius_search,
    statistical_outlier_mask,
)
from kernels.pointcloud import (
    DepthPoints,
    VoxelResult,
    depth_to_points,
    farthest_point_sample,
    transform_points,
    voxel_downsample,
)
from kernels.render import BatchRenderer, RenderOutput
from kernels.tsdf import SurfacePoints, TSDFVolume

__all__ = [
    "BatchRenderer",
    "ChamferResult",
    "CorrectionForces",
    "DepthPoints",
    "ICPResult",
    "KnnPass",
    "KnnResult",
    "NeighborSearch",
    "RadiusResult",
    "RenderOutput",
    "SurfacePoints",
    "TSDFVolume",
    "VoxelResult",
    "camera_intrinsics",
    "chamfer_distance",
    "cpu_threads",
    "depth_to_points",
    "estimate_normals",
    "farthest_point_sample",
    "fovy_intrinsics",
    "icp_point_to_plane",
    "knn_search",
    "radius_search",
    "resolve_device",
    "set_cpu_threads",
    "statistical_outlier_mask",
    "transform_points",
    "voxel_downsample",
    "world_from_camera_cv",
]
