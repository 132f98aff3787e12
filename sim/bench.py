"""Throughput of the PushT twin against gym-pusht, measured in one process on the same machine."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable

import gymnasium as gym
import numpy as np

from sim.factory import EnvConfig, make_env, make_vector_env
from sim.pusht_config import PushTConfig


def steps_per_second(env: gym.Env | gym.vector.VectorEnv, n_steps: int, seed: int = 0) -> float:
    """Env steps per second (summed over sub-envs) under uniformly random actions, resetting when done."""
    env.action_space.seed(seed)
    env.reset(seed=seed)
    n_envs = getattr(env, "num_envs", 1)
    start = time.perf_counter()
    for _ in range(n_steps):
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if n_envs == 1 and (terminated or truncated):
            env.reset()
    return n_steps * n_envs / (time.perf_counter() - start)


def _gym_pusht(obs_type: str) -> gym.Env:
    import gym_pusht  # noqa: F401  (registers gym_pusht/PushT-v0)

    return gym.make("gym_pusht/PushT-v0", obs_type=obs_type, disable_env_checker=True)


def _gym_pusht_vector(obs_type: str, n: int) -> gym.vector.VectorEnv:
    return gym.vector.AsyncVectorEnv([functools.partial(_gym_pusht, obs_type)] * n, context="spawn")


def run_sim_benchmarks(n_steps: int = 1000, n_envs: int = 2, log: Callable[[str], None] = print) -> dict[str, float]:
    """Steps/s of ``realsim/PushT-v0`` and gym-pusht, state and 96x96 pixels, one env and ``n_envs`` in parallel.

    Returns the figures, including ``*_ratio_vs_gym_pusht`` = ours / gym-pusht (> 1: we are faster).
    Raises ImportError when gym-pusht is not installed (``pip install -e .[dev]``).
    """
    cases = {
        "state": (EnvConfig(kwargs=PushTConfig()), "state"),
        "pixels96": (EnvConfig(kwargs=PushTConfig(state=False, environment_state=False, cameras=("overhead",),
                                                  image_size=(96, 96))), "pixels"),
    }
    figures: dict[str, float] = {}
    for label, (env_cfg, pusht_obs) in cases.items():
        steps = n_steps if label == "state" else max(n_steps // 4, 50)
        runs = {
            "realsim_1env": lambda cfg=env_cfg: make_env(cfg, render_mode=None),
            f"realsim_{n_envs}env": lambda cfg=env_cfg: make_vector_env(cfg, n_envs),
            "gym_pusht_1env": lambda obs=pusht_obs: _gym_pusht(obs),
            f"gym_pusht_{n_envs}env": lambda obs=pusht_obs: _gym_pusht_vector(obs, n_envs),
        }
        for name, factory in runs.items():
            env = factory()
            try:
                rate = steps_per_second(env, steps if "1env" in name else steps // n_envs)
            finally:
                env.close()
            figures[f"{label}_{name}_steps_per_s"] = rate
            log(f"{label:9s} {name:16s} {rate:9.1f} steps/s")
        for suffix in ("1env", f"{n_envs}env"):
            ratio = figures[f"{label}_realsim_{suffix}_steps_per_s"] / figures[f"{label}_gym_pusht_{suffix}_steps_per_s"]
            figures[f"{label}_{suffix}_ratio_vs_gym_pusht"] = float(np.round(ratio, 4))
    return figures
