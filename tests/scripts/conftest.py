"""Fixtures of the script tests: a tiny policy checkpoint (untrained: its quality is irrelevant to them)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint dir of an untrained, small flow-matching policy for the PushT state env, saved like a training
    run's (``load_policy`` and ``load_train_config`` read it); built in well under a second."""
    import torch
    from omegaconf import OmegaConf

    import sim
    from policies.checkpoint import save_checkpoint
    from policies.datasets.features import features_from_spaces
    from policies.registry import make_policy
    from sim.pusht_env import PushTEnv

    env_cfg = sim.EnvConfig()
    env = PushTEnv(env_cfg.kwargs, render_mode=None)
    features = features_from_spaces(env.observation_space, env.action_space)
    env.close()
    low, high = list(env_cfg.kwargs.workspace_low), list(env_cfg.kwargs.workspace_high)
    stats = {"observation.state": {"min": low, "max": high}, "action": {"min": low, "max": high},
             "observation.environment_state": {"min": [*low, -1.0, -1.0], "max": [*high, 1.0, 1.0]}}
    policy_cfg = {"mlp_hidden_dim": 32, "mlp_num_blocks": 1, "time_embed_dim": 16, "num_inference_steps": 2}
    torch.manual_seed(0)
    policy = make_policy("flow_matching", features, stats, policy_cfg)
    train_config = {"env": OmegaConf.to_container(OmegaConf.structured(env_cfg)),
                    "policy": {"name": "flow_matching", **policy_cfg}}
    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-3)
    return save_checkpoint(tmp_path_factory.mktemp("tiny_run"), 0, policy, optimizer, train_config=train_config)

