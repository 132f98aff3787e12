"""Every registered env and every registered policy, through one parametrised contract each.

Envs: the gymnasium ids ``import sim`` registers under ``realsim/``: reset and step stay in the declared spaces, and
an episode is a function of its seed and actions. Policies: every ``policies/<name>/`` the registry resolves, built
tiny: its loss is finite and a few optimiser steps lower it, and a checkpoint round trip through
:mod:`policies.checkpoint` gives back the exact same actions. A new env or policy is covered by registering it.
"""

from __future__ import annotations

import math
import pkgutil

import gymnasium as gym
import numpy as np
import pytest
import torch

import policies
import sim
from policies.base import Policy
from policies.checkpoint import load_policy, save_checkpoint
from policies.datasets.features import features_from_spaces
from policies.registry import make_policy, policy_class

ENV_IDS = sorted(env_id for env_id in gym.registry if env_id.startswith("realsim/"))


def _policy_names() -> list[str]:
    """The sub-packages of ``policies`` that register a policy under their own name (``policies/datasets`` does not)."""
    names = []
    for module in pkgutil.iter_modules(policies.__path__):
        try:
            if module.ispkg and policy_class(module.name).name == module.name:
                names.append(module.name)
        except KeyError:
            continue
    return sorted(names)


POLICY_NAMES = _policy_names()
# Small enough to build and train a few steps in well under a second; a policy not listed is built with its defaults.
TINY_CONFIGS = {
    "flow_matching": {"mlp_hidden_dim": 32, "mlp_num_blocks": 1, "time_embed_dim": 16, "num_inference_steps": 2},
    "vla": {"dim": 32, "num_heads": 2, "trunk_layers": 1, "expert_dim": 32, "expert_heads": 2, "expert_layers": 1,
            "mlp_ratio": 2, "max_length": 8, "num_inference_steps": 2},
}
TASK = "push the T onto the target"  # every batch carries an instruction (LeRobot's `task`); a policy may ignore it


def test_the_registries_hold_what_the_project_ships():
    assert sim.ENV_ID in ENV_IDS
    assert {"flow_matching", "vla"} <= set(POLICY_NAMES) and not {"datasets", "common"} & set(POLICY_NAMES)


# ------------------------------------------------------------------------------------------------------------ envs
def _rollout(env_id: str, seed: int, n_steps: int = 8) -> list[dict[str, np.ndarray]]:
    """Observations of one episode from ``seed``, with actions drawn from the action space seeded by ``seed``; each
    observation and step result is checked against the env's declared spaces and types on the way."""
    env = gym.make(env_id, render_mode=None)
    try:
        obs, info = env.reset(seed=seed)
        assert env.observation_space.contains(obs), f"{env_id}: reset observation outside observation_space"
        assert isinstance(info, dict)
        env.action_space.seed(seed)
        observations = [obs]
        for _ in range(n_steps):
            action = env.action_space.sample()
            obs, reward, terminated, truncated, info = env.step(action)
            assert env.observation_space.contains(obs), f"{env_id}: step observation outside observation_space"
            assert isinstance(reward, float) and math.isfinite(reward), reward
            assert isinstance(terminated, bool) and isinstance(truncated, bool), (terminated, truncated)
            observations.append(obs)
            if terminated or truncated:
                break
        return observations
    finally:
        env.close()


def _same_observations(a: list[dict[str, np.ndarray]], b: list[dict[str, np.ndarray]]) -> bool:
    return len(a) == len(b) and all(x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x) for x, y in zip(a, b))


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_registered_env_steps_in_its_spaces_and_is_a_function_of_its_seed(env_id):
    first, again, other = _rollout(env_id, seed=3), _rollout(env_id, seed=3), _rollout(env_id, seed=4)
    assert len(first) > 1
    assert _same_observations(first, again), f"{env_id}: the same seed and actions gave another episode"
    assert not _same_observations(first, other), f"{env_id}: seeds 3 and 4 gave the same episode"


# -------------------------------------------------------------------------------------------------------- policies
def _features_and_stats() -> tuple[dict, dict]:
    """The default PushT env's features, and statistics of a short random rollout of it (every key a policy may
    normalise: min, max, mean, std)."""
    env = sim.make_env(sim.EnvConfig(), render_mode=None)
    features = features_from_spaces(env.observation_space, env.action_space)
    obs, _ = env.reset(seed=0)
    env.action_space.seed(0)
    samples: dict[str, list[np.ndarray]] = {key: [] for key in features}
    for _ in range(30):
        action = env.action_space.sample()
        for key in features:
            samples[key].append(np.asarray(action if key == "action" else obs[key], dtype=np.float64))
        obs, *_ = env.step(action)
    env.close()
    stats = {}
    for key, values in samples.items():
        v = np.stack(values)
        low, high = v.min(axis=0) - 1e-3, v.max(axis=0) + 1e-3
        stats[key] = {"min": low.tolist(), "max": high.tolist(), "mean": v.mean(axis=0).tolist(),
                      "std": np.maximum(v.std(axis=0), 1e-3).tolist()}
    return features, stats


def _batch(policy: Policy, stats: dict, size: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    """A training batch inside the statistics' ranges: ``(B, n_obs_steps, ...)`` inputs, ``(B, horizon, A)`` actions,
    and the instruction of each sample (``task``, list[str])."""
    gen = torch.Generator().manual_seed(seed)

    def draw(key: str, steps: int) -> torch.Tensor:
        low, high = torch.tensor(stats[key]["min"]), torch.tensor(stats[key]["max"])
        return (low + (high - low) * torch.rand(size, steps, *low.shape, generator=gen)).float()

    batch = {key: draw(key, policy.config.n_obs_steps) for key in policy.input_keys}
    batch["action"] = draw("action", policy.config.horizon)
    batch["task"] = [TASK] * size
    return batch


@pytest.mark.parametrize("name", POLICY_NAMES)
def test_registered_policy_trains_and_round_trips_through_a_checkpoint(name, tmp_path):
    features, stats = _features_and_stats()
    torch.manual_seed(0)
    policy = make_policy(name, features, stats, TINY_CONFIGS.get(name))
    batch = _batch(policy, stats)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=3e-3)
    losses = []
    policy.train()
    for _ in range(20):
        torch.manual_seed(1)  # the same noise every step: the loss of one fixed objective
        loss, logs = policy(batch)
        assert loss.ndim == 0 and math.isfinite(loss.item()) and logs["loss"] == pytest.approx(loss.item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0], f"{name}: 20 steps on one batch did not lower the loss: {losses}"

    checkpoint = save_checkpoint(tmp_path, 20, policy, optimizer)
    loaded = load_policy(checkpoint)
    assert type(loaded) is type(policy) and loaded.config == policy.config
    policy.eval()
    obs = {key: value for key, value in batch.items() if key != "action"}
    expected = policy.predict_action_chunk(obs, generator=torch.Generator().manual_seed(7))
    actual = loaded.predict_action_chunk(obs, generator=torch.Generator().manual_seed(7))
    assert expected.shape == (4, policy.config.horizon, policy.action_dim)
    assert torch.equal(actual, expected), f"{name}: the reloaded policy acts differently"
