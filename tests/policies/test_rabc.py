"""Reward-aligned BC: weights from progress deltas, the weighted flow loss, the progress cache, a short run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import sim
from policies.common.flow import flow_matching_loss
from policies.datasets import LeRobotDatasetReader
from policies.rewards.backends import build_topreward
from policies.rewards.config import RewardConfig
from policies.rewards.native import NativeVLM, NativeVLMConfig, build_tokenizer, save_native
from policies.rewards.rabc import RABCConfig, chunk_deltas, dataset_progress, progress_cache_path, rabc_weights
from policies.rewards.topreward import TOPReward
from policies.train_config import DatasetConfig, DegradedExpertConfig, register_configs
from policies.trainer import EnvFactories, MixedAgent, Trainer
from tests.conftest import CONF_DIR

sim.register_configs()
register_configs()
TINY = NativeVLMConfig(image_size=32, channels=(8, 16), num_keypoints=4, d_model=32, n_layers=2, n_heads=2)
INSTRUCTION_WORDS = ["push the T onto the red green blue yellow target pad goal block"]


# --------------------------------------------------------------------------------------------------------- weights
def test_weights_zero_for_no_progress_and_scaled_into_unit_range():
    progress = np.array([0.0, 0.1, 0.3, 0.2, 0.2, 0.9, 1.0])
    last = np.full(4, 6)
    delta = chunk_deltas(progress, np.array([0, 2, 3, 5]), horizon=2, last=last)
    np.testing.assert_allclose(delta, [0.3, -0.1, 0.7, 0.1])  # t=5: min(5 + 2, 6) = 6
    weights = rabc_weights(delta)
    np.testing.assert_allclose(weights, [0.3 / 0.7, 0.0, 1.0, 0.1 / 0.7], rtol=1e-6)
    assert weights.min() >= 0 and weights.max() <= 1
    np.testing.assert_allclose(rabc_weights(np.array([0.5, 2.0, -1.0]), "clip"), [0.5, 1.0, 0.0])
    np.testing.assert_array_equal(rabc_weights(np.array([-0.2, 0.0, np.nan])), [0.0, 0.0, 0.0])  # guarded
    with pytest.raises(ValueError, match="rabc.scale"):
        rabc_weights(delta, "softmax")


# ------------------------------------------------------------------------------------------------------ the loss
def _loss(actions, pad, weights, net):
    torch.manual_seed(0)  # the loss draws its noise and times from the global generator
    return flow_matching_loss(lambda x, t: net(x) + t[:, None, None], actions, "uniform", pad, weights)


def test_weighted_loss_is_the_plain_loss_with_uniform_weights_and_ignores_zero_weights():
    torch.manual_seed(1)
    net = torch.nn.Linear(2, 2)
    actions = torch.randn(4, 3, 2)
    pad = torch.tensor([[0, 0, 0], [0, 0, 1], [0, 1, 1], [0, 0, 0]], dtype=torch.bool)
    plain = _loss(actions, pad, None, net)
    torch.testing.assert_close(_loss(actions, pad, torch.full((4,), 0.3), net), plain)
    # zero-weight samples change nothing: replacing their actions leaves the loss as it was
    weights = torch.tensor([1.0, 0.0, 0.5, 0.0])
    changed = actions.clone()
    changed[[1, 3]] = 100.0
    torch.testing.assert_close(_loss(changed, pad, weights, net), _loss(actions, pad, weights, net))
    zero = _loss(actions, pad, torch.zeros(4), net)
    assert zero.item() == 0.0 and torch.isfinite(zero)


# -------------------------------------------------------------------------------------- data, model, the trainer
def _compose(tmp_path, extra: list[str]):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=[
            "env=pusht_targets", f"output_dir={tmp_path / 'run'}", f"dataset.root={tmp_path / 'demos'}",
            "dataset.n_episodes=2", "dataset.degraded_fraction=0.5", "dataset.keep_failed=true", "optim.steps=3",
            "optim.batch_size=8", "optim.warmup_steps=1", "policy.mlp_hidden_dim=32", "policy.mlp_num_blocks=1",
            "logger.mode=disabled", "log_every=1", "env.kwargs.max_episode_steps=30", *extra])


def _trainer(tmp_path, extra: list[str]) -> Trainer:
    cfg = _compose(tmp_path, extra)
    run = OmegaConf.to_object(cfg)
    env_cfg = run.env
    envs = EnvFactories(
        make_env=lambda: sim.make_env(env_cfg, render_mode=None),
        make_vector_env=lambda n: sim.make_vector_env(env_cfg, n),
        make_expert=lambda env: sim.make_expert(env, env_cfg),
        fps=10, max_episode_steps=30, metric_keys=tuple(env_cfg.metric_keys),
        make_noisy_expert=lambda env, noise, prob: sim.make_expert(env, OmegaConf.to_object(OmegaConf.merge(
            OmegaConf.structured(env_cfg), {"expert": {"noise_std": noise, "random_contact_prob": prob}}))),
    )
    return Trainer(run, OmegaConf.to_container(cfg, resolve=True), envs)


def _tiny_native(path, seed: int = 0):
    torch.manual_seed(seed)
    tokenizer = build_tokenizer(INSTRUCTION_WORDS)
    return save_native(NativeVLM(TINY, len(tokenizer)), tokenizer, path)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A 2-episode mixed dataset of the targets env (30 steps each) and two tiny random native reward models."""
    root = tmp_path_factory.mktemp("rabc")
    trainer = _trainer(root, [])
    trainer.prepare_dataset()
    return root, _tiny_native(root / "model_a", 0), _tiny_native(root / "model_b", 1)


class _Counting:
    """make_reward that counts how often the backend is built."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, cfg: RewardConfig) -> TOPReward:
        self.calls += 1
        return build_topreward(cfg)


def test_progress_is_cached_and_recomputed_when_the_backend_changes(workspace):
    root, model_a, model_b = workspace
    dataset = LeRobotDatasetReader(root / "demos")
    reward_a = RewardConfig(backend="native", path=str(model_a))
    counting = _Counting()
    first = dataset_progress(dataset, reward_a, RABCConfig(), counting)
    assert counting.calls == 1 and first.shape == (dataset.num_frames,)
    assert first.min() >= 0 and first.max() <= 1
    assert progress_cache_path(dataset, reward_a, "observation.images.overhead").is_file()
    np.testing.assert_array_equal(dataset_progress(dataset, reward_a, RABCConfig(), counting), first)
    assert counting.calls == 1  # read back from the cache
    dataset_progress(dataset, RewardConfig(backend="native", path=str(model_b)), RABCConfig(), counting)
    dataset_progress(dataset, RewardConfig(backend="native", path=str(model_a), k=5), RABCConfig(), counting)
    assert counting.calls == 3  # another model, another k: scored anew
    with pytest.raises(ValueError, match="rabc.image_key 'observation.images.wrist'"):
        dataset_progress(dataset, reward_a, RABCConfig(image_key="observation.images.wrist"), counting)


def test_a_short_reward_aligned_run_logs_its_weights(workspace):
    root, model_a, _ = workspace
    trainer = _trainer(root, ["reward=topreward", f"reward.path={model_a}", f"output_dir={root / 'rabc_run'}"])
    trainer.run_dir.mkdir(parents=True, exist_ok=True)
    trainer.build(trainer.prepare_dataset())
    batch = trainer.sample_batch(0)
    assert batch["sample_weights"].shape == (8,) and 0 <= batch["sample_weights"].min() <= batch["sample_weights"].max() <= 1
    trainer._train_loop()
    trainer.tracker.finish()
    rows = [json.loads(line) for line in (root / "rabc_run" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    for row in rows:
        assert 0 <= row["train/rabc_weight_mean"] <= 1 and 0 <= row["train/rabc_zero_fraction"] <= 1
        assert np.isfinite(row["train/loss"])
    plain = _trainer(root, [f"output_dir={root / 'bc_run'}"])
    plain.build(plain.prepare_dataset())
    assert "sample_weights" not in plain.sample_batch(0)  # no reward group: plain BC, as before


def test_mixed_agent_draws_the_degraded_demonstrator_per_seed():
    class Named:
        def __init__(self) -> None:
            self.seeds = []

        def reset(self, seed=None):
            self.seeds.append(seed)

        def act(self, obs):
            return np.zeros(2)

    expert, degraded = Named(), Named()
    agent = MixedAgent(expert, degraded, 0.5)
    drawn = []
    for seed in range(200):
        agent.reset(seed=seed)
        drawn.append(agent.last_degraded)
    assert 0.4 < np.mean(drawn) < 0.6 and len(degraded.seeds) == sum(drawn)
    again = MixedAgent(Named(), Named(), 0.5)
    assert [again.reset(seed=s) or again.last_degraded for s in range(200)] == drawn  # reproducible


def test_config_errors_name_the_key(tmp_path):
    with pytest.raises(ValueError, match="rabc.scale"):
        RABCConfig(scale="softmax")
    with pytest.raises(ValueError, match="rabc.score_batch"):
        RABCConfig(score_batch=0)
    with pytest.raises(ValueError, match="dataset.degraded_fraction"):
        DatasetConfig(degraded_fraction=1.5)
    with pytest.raises(ValueError, match="dataset.degraded.detour_steps"):
        DegradedExpertConfig(detour_steps=0)
    with pytest.raises(FileNotFoundError, match="reward.path=.*nowhere.* holds no native reward model"):
        build_topreward(RewardConfig(backend="native", path=str(tmp_path / "nowhere")))
    with pytest.raises(ValueError, match="reward.backend"):
        OmegaConf.to_object(_compose(tmp_path, ["reward=topreward", "reward.path=x", "reward.backend=gpt"]))


def test_the_comparison_trains_bc_then_rabc_on_the_same_config(tmp_path, monkeypatch):
    from policies.rewards import rabc_compare

    runs = []

    def fake_run(self):
        runs.append((self.cfg.reward, self.cfg.dataset.root, self.cfg.seed, self.cfg.optim.steps, self.run_dir.name))
        rate = 0.7 if self.cfg.reward is not None else 0.5
        return {"success_rate": rate, "success_ci_low": rate - 0.1, "success_ci_high": rate + 0.1, "n_episodes": 10}

    monkeypatch.setattr(rabc_compare.Trainer, "run", fake_run)
    cfg = _compose(tmp_path, ["reward=topreward", "reward.path=somewhere"])
    run = OmegaConf.to_object(cfg)
    figures = rabc_compare.compare_rabc(run, OmegaConf.to_container(cfg), envs=None)
    assert [r[0] is None for r in runs] == [True, False] and [r[4] for r in runs] == ["bc", "rabc"]
    assert runs[0][1:4] == runs[1][1:4]  # same data, seed, budget
    assert figures["success_rate_bc"] == 0.5 and figures["success_rate_rabc"] == 0.7
    assert figures["success_gain_points"] == pytest.approx(20.0)
    with pytest.raises(ValueError, match="reward is null"):
        rabc_compare.compare_rabc(OmegaConf.to_object(_compose(tmp_path, [])), {}, envs=None)
