"""Throughput of the PushT twin against gym-pusht, measured in one process on the same machine."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import replace

import gymnasium as gym
import numpy as np

from sim.factory import EnvConfig, make_env, make_vector_env
from sim.pusht_config import PushTConfig


def steps_per_second(env: gym.Env | gym.vector.VectorEnv, n_steps: int, seed: int = 0, warmup: int = 0) -> float:
    """Env steps per second (summed over sub-envs) under uniformly random actions, resetting when done; ``warmup``
    untimed steps first (kernel compilation, CUDA graph capture)."""
    env.action_space.seed(seed)
    env.reset(seed=seed)
    n_envs = getattr(env, "num_envs", 1)
    for _ in range(warmup):
        env.step(env.action_space.sample())
    start = time.perf_counter()
    for _ in range(n_steps):
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if n_envs == 1 and (terminated or truncated):
            env.reset()
    return n_steps * n_envs / (time.perf_counter() - start)


def mj_step_floor_steps_per_s(cfg: EnvConfig, n_steps: int, seed: int = 0) -> float:
    """The floor of one env step: control steps per second of bare ``mujoco.mj_step`` x the env's physics substeps
    per control step, on the env's own model and data after a reset (controls held; no IK, reward or observation)."""
    import mujoco

    env = make_env(cfg, render_mode=None)
    try:
        env.reset(seed=seed)
        world = env.unwrapped
        model, data, substeps = world.model, world.data, world._n_substeps
        start = time.perf_counter()
        for _ in range(n_steps):
            mujoco.mj_step(model, data, nstep=substeps)
        return n_steps / (time.perf_counter() - start)
    finally:
        env.close()


def _gym_pusht(obs_type: str) -> gym.Env:
    import gym_pusht  # noqa: F401  (registers gym_pusht/PushT-v0)

    return gym.make("gym_pusht/PushT-v0", obs_type=obs_type, disable_env_checker=True)


def _gym_pusht_vector(obs_type: str, n: int, asynchronous: bool = True) -> gym.vector.VectorEnv:
    fns = [functools.partial(_gym_pusht, obs_type)] * n
    return gym.vector.AsyncVectorEnv(fns, context="spawn") if asynchronous else gym.vector.SyncVectorEnv(fns)


def run_sim_benchmarks(n_steps: int = 1000, n_envs: int = 2, n_worlds: int = 0, backend: str = "mujoco",
                       device: str = "auto", log: Callable[[str], None] = print) -> dict[str, float]:
    """Steps/s of ``realsim/PushT-v0`` and gym-pusht, state and 96x96 pixels: one env, ``n_envs`` in parallel, and
    the best with all cores (realsim: its ``n_envs`` processes or ``n_worlds`` batched worlds on all cores; gym-pusht:
    its AsyncVectorEnv or SyncVectorEnv of ``n_envs``, whichever is faster).

    ``backend=mjwarp`` measures MuJoCo Warp instead: ``n_worlds`` worlds on ``device`` beside MuJoCo C's batched
    worlds (:func:`run_mjwarp_benchmarks`). Returns the figures, including ``*_ratio_vs_gym_pusht`` = ours /
    gym-pusht (> 1: we are faster), ``mj_step_floor_steps_per_s`` (bare physics, :func:`mj_step_floor_steps_per_s`) and
    ``env_step_vs_floor`` = one state env's steps/s / the floor (1.0: a step costs no more than its physics).
    Raises ImportError when gym-pusht is not installed (``pip install -e .[dev]``).
    """
    if backend == "mjwarp":
        return run_mjwarp_benchmarks(n_worlds or 4, n_steps, device, log)
    if backend != "mujoco":
        raise ValueError(f"sim.backend must be mujoco or mjwarp, got {backend!r}")
    n_worlds = n_worlds or 4 * n_envs
    pixels = PushTConfig(state=False, environment_state=False, cameras=("overhead",), image_size=(96, 96))
    cases = {"state": (EnvConfig(kwargs=PushTConfig()), "state"), "pixels96": (EnvConfig(kwargs=pixels), "pixels")}
    figures: dict[str, float] = {}
    for label, (env_cfg, pusht_obs) in cases.items():
        steps = n_steps if label == "state" else max(n_steps // 4, 50)
        runs = {
            "realsim_1env": (lambda cfg=env_cfg: make_env(cfg, render_mode=None), 1),
            f"realsim_{n_envs}env": (lambda cfg=env_cfg: make_vector_env(cfg, n_envs), n_envs),
            f"realsim_batched_{n_worlds}worlds": (lambda cfg=env_cfg: make_vector_env(cfg, n_worlds, backend="batched"),
                                                  n_worlds),
            "gym_pusht_1env": (lambda obs=pusht_obs: _gym_pusht(obs), 1),
            f"gym_pusht_{n_envs}env": (lambda obs=pusht_obs: _gym_pusht_vector(obs, n_envs), n_envs),
            f"gym_pusht_sync_{n_envs}env": (lambda obs=pusht_obs: _gym_pusht_vector(obs, n_envs, False), n_envs),
        }
        if label == "pixels96":  # images of all worlds in one Warp BatchRenderer launch
            runs[f"realsim_batched_{n_worlds}worlds_batchrender"] = (lambda cfg=env_cfg: make_vector_env(
                replace(cfg, vector_renderer="batch"), n_worlds, backend="batched"), n_worlds)
        for name, (factory, n) in runs.items():
            env = factory()
            try:
                rate = steps_per_second(env, max(steps // n, 5), warmup=1 if "batchrender" in name else 0)
            finally:
                env.close()
            figures[f"{label}_{name}_steps_per_s"] = rate
            log(f"{label:9s} {name:34s} {rate:9.1f} steps/s")
        for suffix in ("1env", f"{n_envs}env"):
            ratio = figures[f"{label}_realsim_{suffix}_steps_per_s"] / figures[f"{label}_gym_pusht_{suffix}_steps_per_s"]
            figures[f"{label}_{suffix}_ratio_vs_gym_pusht"] = float(np.round(ratio, 4))
        ours = max(figures[f"{label}_{name}_steps_per_s"] for name in runs
                   if name.startswith("realsim_") and name != "realsim_1env" or name == f"realsim_{n_envs}env")
        theirs = max(figures[f"{label}_gym_pusht_{name}_steps_per_s"] for name in (f"{n_envs}env", f"sync_{n_envs}env"))
        figures[f"{label}_batched_ratio_vs_gym_pusht"] = float(np.round(ours / theirs, 4))
    floor = mj_step_floor_steps_per_s(cases["state"][0], n_steps)
    figures["mj_step_floor_steps_per_s"] = floor
    # A full state-observation env step (IK, physics, reward, observation) against bare physics: 1.0 is the floor.
    figures["env_step_vs_floor"] = float(np.round(figures["state_realsim_1env_steps_per_s"] / floor, 4))
    log(f"{'floor':9s} {'bare mj_step x substeps':34s} {floor:9.1f} steps/s")
    return figures


def run_mjwarp_benchmarks(n_worlds: int, n_steps: int, device: str = "auto",
                          log: Callable[[str], None] = print) -> dict[str, float]:
    """Steps/s of PushT on MuJoCo Warp (``n_worlds`` worlds on ``device``) beside MuJoCo C's batched worlds on all
    CPU cores (at most 32 worlds: C's throughput no longer grows with more). ``mjwarp_ratio_vs_mujoco_c`` > 1: Warp is
    faster. Raises sim.mjwarp.WarpUnavailable when MuJoCo Warp cannot run here."""
    from sim.mjwarp_env import WarpVectorEnv

    warp_env = WarpVectorEnv(PushTConfig(), n_worlds, device=device)
    steps = max(n_steps // n_worlds, 3)
    try:
        warp_rate = steps_per_second(warp_env, steps, warmup=1)  # the warm-up step compiles / captures the graph
    finally:
        warp_env.close()
    log(f"mjwarp    {n_worlds} worlds on {warp_env.worlds.device:8s} {warp_rate:9.1f} steps/s")
    c_worlds = min(n_worlds, 32)
    c_env = make_vector_env(EnvConfig(), c_worlds, backend="batched")
    try:
        c_rate = steps_per_second(c_env, max(n_steps // c_worlds, 3))
    finally:
        c_env.close()
    log(f"mujoco C  {c_worlds} batched worlds on the CPU  {c_rate:9.1f} steps/s")
    return {f"mjwarp_{n_worlds}worlds_steps_per_s": warp_rate, f"mujoco_c_batched_{c_worlds}worlds_steps_per_s": c_rate,
            "mjwarp_ratio_vs_mujoco_c": float(np.round(warp_rate / c_rate, 4))}
