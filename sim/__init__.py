"""realsim simulation: the MuJoCo PushT digital twin, its gymnasium registration, experts and vector envs."""

import gymnasium as gym

from sim.pusht_config import DomainRandomizationConfig, PushTConfig

__all__ = ["DomainRandomizationConfig", "PushTConfig", "ENV_ID"]

ENV_ID = "realsim/PushT-v0"

if ENV_ID not in gym.registry:
    gym.register(id=ENV_ID, entry_point="sim.pusht_env:PushTEnv", max_episode_steps=None)
