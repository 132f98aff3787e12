"""conf/reward/*.yaml typed by RewardConfig (policies/rewards/config.py)."""

from __future__ import annotations

import dataclasses

import pytest
from omegaconf import OmegaConf

from policies.rewards.config import RewardConfig
from tests.conftest import CONF_DIR


def _load(name: str) -> RewardConfig:
    node = OmegaConf.load(CONF_DIR / "reward" / f"{name}.yaml")
    node.pop("defaults", None)
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(RewardConfig), node))


def test_topreward_is_the_schema_defaults():
    config = _load("topreward")
    assert config == RewardConfig()
    assert (config.backend, config.path, config.k, config.sample_fps) == ("native", "outputs/train_reward/latest", 15, 2.0)


def test_topreward_hf_names_the_papers_model():
    config = _load("topreward_hf")
    assert (config.backend, config.path, config.k, config.sample_fps) == ("hf", "Qwen/Qwen3-VL-8B-Instruct", 15, 2.0)


@pytest.mark.parametrize(("field", "value", "match"), [
    ("backend", "openai", "reward.backend"), ("path", "", "reward.path"), ("k", 0, "reward.k"),
    ("sample_fps", 0.0, "reward.sample_fps"), ("dtype", "float16", "reward.dtype"), ("device", "", "reward.device"),
])
def test_bad_values_are_named(field, value, match):
    with pytest.raises(ValueError, match=match):
        dataclasses.replace(RewardConfig(), **{field: value})
