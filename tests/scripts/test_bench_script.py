"""scripts/bench.py goes through Hydra (conf/bench.yaml, typed) and keeps its command line: `bench.py <area> key=value`."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from scripts import _entry
from tests.conftest import REPO_ROOT
from tests.test_config_defaults import compose_entry


@pytest.mark.parametrize(("argv", "overrides"), [
    (["sim"], ["area=sim"]),
    (["sim", "n_steps=10", "n_envs=1"], ["area=sim", "sim.n_steps=10", "sim.n_envs=1"]),
    (["kernels", "sizes=[100000]"], ["area=kernels", "kernels.sizes=[100000]"]),
    (["kernels", "sizes=3000,5000", "device=cpu"], ["area=kernels", "kernels.sizes=[3000,5000]", "kernels.device=cpu"]),
    (["sync", "sources=twin,raw", "out=/tmp/s.json"], ["area=sync", "sync.sources=[twin,raw]", "out=/tmp/s.json"]),
    (["area=bridge", "rate_hz=250", "hydra.run.dir=x"], ["area=bridge", "bridge.rate_hz=250", "hydra.run.dir=x"]),
    (["policy", "preset=vla_tiny", "n_iters=20"], ["area=policy", "policy.presets=[vla_tiny]", "policy.n_iters=20"]),
    (["policy", "presets=a,b"], ["area=policy", "policy.presets=[a,b]"]),
    (["kernels", "sizes=3000"], ["area=kernels", "kernels.sizes=[3000]"]),  # one value of a list option
    (["reward", "k=5", "path=/m"], ["area=reward", "reward.k=5", "reward.path=/m"]),
    (["streaming", "n_frames=500"], ["area=streaming", "streaming.n_frames=500"]),
    (["perception", "view_counts=16"], ["area=perception", "perception.view_counts=[16]"]),
])
def test_the_area_word_and_plain_options_become_overrides_of_that_area(argv, overrides):
    assert _entry.bench_overrides(argv) == overrides


@pytest.mark.parametrize("argv", [[], ["n_steps=10"], ["gpu"]])
def test_no_area_prints_the_usage(argv):
    with pytest.raises(SystemExit, match="usage"):
        _entry.bench_overrides(argv, usage="usage: bench.py sim|kernels|bridge|sync")


def test_options_reach_the_typed_config_and_a_misspelt_one_fails_naming_it():
    run = OmegaConf.to_object(compose_entry("bench", _entry.bench_overrides(["kernels", "sizes=3000,5000"])))
    assert (run.area, run.kernels.sizes, run.kernels.device, run.out) == ("kernels", [3000, 5000], "cpu",
                                                                          "outputs/bench/kernels.json")
    with pytest.raises(Exception, match="n_step"):
        compose_entry("bench", _entry.bench_overrides(["sim", "n_step=10"]))
    with pytest.raises(Exception, match="time_scale"):  # an option of another area
        compose_entry("bench", _entry.bench_overrides(["sim", "time_scale=0.5"]))


def test_policy_options_reach_the_typed_config():
    run = OmegaConf.to_object(compose_entry("bench", _entry.bench_overrides(["policy", "preset=flow_matching"])))
    assert (run.area, run.policy.presets, run.policy.default_env, run.out) == (
        "policy", ["flow_matching"], "pusht", "outputs/bench/policy.json")
    assert run.policy.envs["vla_tiny"] == "pusht_targets"
    with pytest.raises(Exception, match="n_iters"):
        OmegaConf.to_object(compose_entry("bench", _entry.bench_overrides(["policy", "n_iters=0"])))


def test_reward_options_reach_the_typed_config():
    run = OmegaConf.to_object(compose_entry("bench", _entry.bench_overrides(["reward", "n_frames=40"])))
    assert (run.area, run.reward.n_frames, run.reward.k, run.reward.fps, run.reward.path, run.out) == (
        "reward", 40, 15, 10.0, "", "outputs/bench/reward.json")
    with pytest.raises(Exception, match="reward.k"):
        OmegaConf.to_object(compose_entry("bench", _entry.bench_overrides(["reward", "k=0"])))


def test_streaming_options_reach_the_typed_config():
    run = OmegaConf.to_object(compose_entry("bench", _entry.bench_overrides(["streaming", "full_frames=300"])))
    assert (run.area, run.streaming.n_frames, run.streaming.full_frames, run.streaming.n_threads, run.out) == (
        "streaming", 10_000, 300, 1, "outputs/bench/streaming.json")
    with pytest.raises(Exception, match="streaming.n_frames"):
        OmegaConf.to_object(compose_entry("bench", _entry.bench_overrides(["streaming", "n_frames=0"])))


def test_perception_options_reach_the_typed_config_and_presets_build_their_schema():
    run = OmegaConf.to_object(compose_entry("bench", _entry.bench_overrides(["perception", "view_counts=8,32"])))
    assert (run.area, run.perception.preset, run.perception.view_counts, run.perception.chunk_views, run.out) == (
        "perception", "recon_tiny", [8, 32], 4, "outputs/bench/perception.json")
    with pytest.raises(Exception, match="perception.view_counts"):
        OmegaConf.to_object(compose_entry("bench", _entry.bench_overrides(["perception", "view_counts=0"])))
    assert _entry.recon_preset("recon_base").d_model == 512 and _entry.recon_preset("recon_tiny").d_model == 64
    with pytest.raises(FileNotFoundError, match="no reconstruction preset"):
        _entry.recon_preset("recon_huge")


def test_env_features_are_the_envs_observations():
    features = _entry.env_features("pusht_image")
    assert features["observation.images.overhead"]["shape"] == [96, 96, 3]
    assert features["action"]["shape"] == [2] and "observation.environment_state" not in features
    assert "observation.environment_state" in _entry.env_features("pusht")
    with pytest.raises(FileNotFoundError, match="no_such_env"):
        _entry.env_features("no_such_env")


def test_bench_policy_measures_every_preset_of_conf_policy(tmp_path):
    out = tmp_path / "policy.json"
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "bench.py"), "policy", "n_iters=3",
                           "n_warmup=1", "control_steps=8", f"out={out}"], cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    figures = json.loads(out.read_text())
    presets = sorted(p.stem for p in (REPO_ROOT / "conf" / "policy").glob("*.yaml"))
    measured = sorted({k.rsplit("_p50_ms", 1)[0] for k in figures if k.endswith("_p50_ms")})
    assert "flow_matching" in measured and set(measured) <= set(presets)  # every buildable preset, automatically
    for preset in measured:
        for figure in ("p50_ms", "p99_ms", "p99_ms_1thread", "hz", "params_m"):
            assert figures[f"{preset}_{figure}"] > 0
        assert figures[f"{preset}_peak_mb"] >= 0
    lines = proc.stdout.strip().splitlines()
    assert f"flow_matching_p99_ms: {figures['flow_matching_p99_ms']:.4f}" in lines


def test_bench_without_an_area_exits_with_the_usage():
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "bench.py")], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "Usage: `python scripts/bench.py sim" in proc.stderr


@pytest.mark.slow
def test_bench_sim_prints_and_writes_its_ratios(tmp_path):
    out = tmp_path / "sim.json"
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "bench.py"), "sim", "n_steps=20", "n_envs=1",
                           f"out={out}"], cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    figures = json.loads(out.read_text())
    assert figures["state_1env_ratio_vs_gym_pusht"] > 0
    assert figures["state_batched_ratio_vs_gym_pusht"] > 0 and figures["pixels96_batched_ratio_vs_gym_pusht"] > 0
    # The floor (bare mj_step x substeps) bounds a full env step: the ratio is positive and, up to timing noise, <= 1.
    assert figures["mj_step_floor_steps_per_s"] > 0 and 0 < figures["env_step_vs_floor"] < 1.5
    lines = proc.stdout.strip().splitlines()
    assert f"figures written to {out}" in lines
    assert f"state_1env_ratio_vs_gym_pusht: {figures['state_1env_ratio_vs_gym_pusht']:.4f}" in lines
    assert not (tmp_path / ".hydra").exists() and list(tmp_path.iterdir()) == [out]  # nothing but the figures
