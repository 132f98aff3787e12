"""realsim simulation: the MuJoCo PushT digital twin, the coloured-targets task, their gymnasium registration, experts
and vector envs."""

import os

# Head-less by default: MuJoCo renders through EGL (Mesa's software rasteriser on a CPU machine). Set MUJOCO_GL
# yourself (e.g. glfw) before importing sim to use a display.
os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium as gym  # noqa: E402

from sim.expert import ExpertConfig, PushTExpert  # noqa: E402
from sim.factory import (  # noqa: E402
    ENV_ID,
    TARGETS_ENV_ID,
    EnvConfig,
    TargetsEnvConfig,
    env_config_from_dict,
    make_env,
    make_expert,
    make_vector_env,
    register_configs,
    with_physics_of,
)
from sim.pusht_config import DomainRandomizationConfig, PushTConfig  # noqa: E402
from sim.pusht_targets_config import PushTTargetsConfig  # noqa: E402

__all__ = [
    "ENV_ID",
    "DomainRandomizationConfig",
    "EnvConfig",
    "env_config_from_dict",
    "ExpertConfig",
    "PushTConfig",
    "PushTExpert",
    "PushTTargetsConfig",
    "TARGETS_ENV_ID",
    "TargetsEnvConfig",
    "make_env",
    "make_expert",
    "make_vector_env",
    "register_configs",
    "with_physics_of",
]

if ENV_ID not in gym.registry:
    gym.register(id=ENV_ID, entry_point="sim.pusht_env:PushTEnv", max_episode_steps=None)
if TARGETS_ENV_ID not in gym.registry:
    gym.register(id=TARGETS_ENV_ID, entry_point="sim.pusht_targets:PushTTargetsEnv", max_episode_steps=None)
