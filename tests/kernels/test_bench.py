"""The kernels benchmark runs end to end on small data and reports every figure it promises."""

from __future__ import annotations

import math

import pytest

from kernels.bench import PUSHT_XML, run_kernel_benchmarks

OPS = ["depth_to_points", "transform_points", "voxel_downsample", "knn_k10", "radius_search", "normals_k30",
       "outlier_removal_k20", "farthest_point_1024", "chamfer", "icp_point_to_plane"]


def test_benchmark_reports_every_op_and_the_renderer(capsys):
    figures = run_kernel_benchmarks("cpu", [3000], render_worlds=2, render_size=16)
    out = capsys.readouterr().out
    for op in OPS:
        ratio = [v for k, v in figures.items() if k.startswith(op) and k.endswith("_ratio_vs_open3d")]
        assert len(ratio) == 1 and math.isfinite(ratio[0]) and ratio[0] > 0, op
    assert "tsdf_128cube_x4_3k_ratio_vs_open3d" in figures and "depth_to_points_3k_ms" in figures
    assert figures["knn_mixed_k10_3k_ratio_vs_halves"] > 0 and figures["knn_mixed_k10_3k_ratio_vs_open3d"] > 0
    if PUSHT_XML.exists():
        assert figures["render_2x16_fps"] > 0
        assert figures["render_2x16_ratio_vs_mujoco_rgb"] > 0
        assert "render_2x16" in out
    assert all(op in out for op in OPS)  # one table line per measurement


@pytest.mark.parametrize("sizes", [[], [10], None])
def test_benchmark_rejects_bad_sizes(sizes):
    with pytest.raises(ValueError, match="sizes must list cloud sizes"):
        run_kernel_benchmarks("cpu", sizes)
