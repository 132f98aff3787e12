"""The on-policy improvement loop: rollouts, TOPReward scores, weights, update, checkpoints, resume, config errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import sim
from policies.checkpoint import CheckpointError, find_last_checkpoint, load_policy
from policies.common.flow import euler_sample, initial_noise_scale
from policies.evaluation import EvalEnvs
from policies.rewards import config as reward_config
from policies.rewards import improve_config
from policies.rewards.improve import Improver, RolloutWindows, score_rollouts, top_episodes
from policies.rewards.protocol import score_batch_by_loop
from policies.rewards.rabc import chunk_deltas, rabc_weights
from policies.rewards.topreward import TOPReward
from tests.conftest import CONF_DIR
from tests.policies.test_rabc import _trainer

sim.register_configs()
reward_config.register_configs()
improve_config.register_configs()
STEPS = 30  # env steps per episode


class Series:
    """A stub TOPReward backend: log p(True) of prefix k is ``sign * k`` (progress rises, or falls, linearly)."""

    def __init__(self, sign: float = 1.0) -> None:
        self.sign, self.calls = sign, 0

    def true_log_probs(self, frames, instruction, prefix_lengths):
        self.calls += 1
        return self.sign * np.arange(len(prefix_lengths), dtype=np.float64)

    def true_log_probs_batch(self, videos, instructions, prefix_lengths):
        return score_batch_by_loop(self, videos, instructions, prefix_lengths)


@pytest.fixture(scope="module")
def start(tmp_path_factory):
    """A tiny flow-matching policy trained for 3 steps on 2 demos of the targets twin (30-step episodes)."""
    root = tmp_path_factory.mktemp("improve")
    trainer = _trainer(root, ["eval.n_episodes=1", "eval.n_envs=1", "eval.n_videos=0", "eval.every=0",
                              f"output_dir={root / 'start'}"])
    trainer.run()
    env_cfg = trainer.cfg.env
    envs = EvalEnvs(lambda n: sim.make_vector_env(env_cfg, n, backend="sync"), STEPS, 10, ("proximity",))
    return root / "start", envs


def _config(tmp_path, policy_path, extra=()):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("improve", overrides=[
            f"policy_path={policy_path}", f"output_dir={tmp_path / 'run'}", "iterations=1", "n_rollouts=2",
            "n_envs=2", "steps=2", "batch_size=8", "eval.n_episodes=1", "eval.n_envs=1", "logger.mode=disabled",
            "reward.k=5", "device=cpu", *extra])
    return OmegaConf.to_object(cfg), OmegaConf.to_container(cfg, resolve=True)


def _improver(tmp_path, start, extra=(), scorer=None):
    path, envs = start
    run, resolved = _config(tmp_path, path, extra)
    scorer = scorer or Series()
    return Improver(run, resolved, load_policy(path), envs, lambda cfg: TOPReward(scorer, k=cfg.k))


def test_one_iteration_runs_end_to_end_and_checkpoints(tmp_path, start):
    improver = _improver(tmp_path, start)
    figures = improver.run()
    assert figures["reward_source"] == "topreward" and figures["iterations"] == 1
    for name in ("before", "after"):
        rate = figures[f"success_rate_{name}"]
        assert 0 <= figures[f"success_ci_low_{name}"] <= rate <= figures[f"success_ci_high_{name}"] <= 1
    rollouts = improver.rollouts(0)  # read back, not recorded again
    assert list(rollouts.seeds) == [50000, 50001] and rollouts.dataset.num_episodes == 2
    assert all(len(p) == n + 1 for p, n in zip(rollouts.progress, rollouts.lengths))
    assert rollouts.final_images.shape == (2, 64, 64, 3)
    last = find_last_checkpoint(tmp_path / "run")
    assert last is not None and last.name == "000001"
    reloaded = load_policy(last)  # a pretrained_model like any training run's, the twin's env beside it
    for key, value in improver.policy.state_dict().items():
        torch.testing.assert_close(reloaded.state_dict()[key], value.cpu())
    row = json.loads((tmp_path / "run" / "improve_log.jsonl").read_text())
    assert row["iteration"] == 1 and np.isfinite(row["loss"]) and 0 <= row["rollout_success_rate"] <= 1
    assert -1 <= row["voc"] <= 1 and row["kept_rollouts"] == 1.0  # top_fraction 0.5 of 2


def test_the_weights_come_from_topreward_progress(tmp_path, start):
    improver = _improver(tmp_path, start, ["weight_decay=0", "replay_fraction=0", "top_fraction=1"])
    improver.build()
    rollouts = improver.rollouts(0)
    topreward = TOPReward(Series(), k=5)
    scores = score_rollouts(rollouts, "topreward", topreward, "observation.images.overhead")
    dataset = rollouts.dataset
    for e, video in enumerate(rollouts.videos(dataset, "observation.images.overhead")):
        expected = topreward.score(video, "any instruction", 10.0).progress
        np.testing.assert_allclose(scores.progress[e], expected)  # T + 1 values: the final observation included
        assert expected[0] == 0.0 and expected[-1] == 1.0
    windows = RolloutWindows(dataset, scores.progress, np.arange(2), improver.policy.input_keys, 2, 16, "batch_max")
    (n0, n1), start_1 = (int(n) for n in rollouts.lengths), int(dataset.episode_starts[1])
    t = np.array([0, 5, start_1, start_1 + n1 - 1])
    p0, p1 = scores.progress
    delta = [p0[min(16, n0)] - p0[0], p0[min(21, n0)] - p0[5], p1[min(16, n1)] - p1[0], p1[n1] - p1[n1 - 1]]
    np.testing.assert_allclose(windows.weights(t), rabc_weights(np.array(delta)), rtol=1e-6)  # chunks reach T
    np.testing.assert_allclose(windows.weights(t), rabc_weights(chunk_deltas(
        np.concatenate(scores.progress), t + np.array([0, 0, 1, 1]), 16, np.array([n0, n0, n0 + n1 + 1, n0 + n1 + 1]))))
    # falling TOPReward progress: every weight 0, so the update leaves the policy exactly as it was
    before = {k: v.clone() for k, v in improver.policy.state_dict().items()}
    falling = score_rollouts(rollouts, "topreward", TOPReward(Series(-1.0), k=5), "observation.images.overhead")
    figures = improver.update(rollouts, falling, 0)
    assert figures["rabc_weight_mean"] == 0.0 and figures["loss"] == 0.0
    for key, value in improver.policy.state_dict().items():
        torch.testing.assert_close(value, before[key])
    rising = improver.update(rollouts, scores, 0)
    assert rising["rabc_weight_mean"] > 0 and rising["loss"] > 0
    assert any(not torch.equal(v, before[k]) for k, v in improver.policy.state_dict().items())


def test_coverage_uses_the_twins_progress_and_builds_no_reward_model(tmp_path, start):
    def no_reward(cfg):
        raise AssertionError("reward_source=coverage must not build a TOPReward backend")

    path, envs = start
    run, resolved = _config(tmp_path, path, ["reward_source=coverage"])
    improver = Improver(run, resolved, load_policy(path), envs, no_reward)
    improver.build()
    rollouts = improver.rollouts(0)
    scores = score_rollouts(rollouts, "coverage", None, "observation.images.overhead")
    for got, true in zip(scores.progress, rollouts.progress):
        np.testing.assert_allclose(got, true)
    np.testing.assert_allclose(scores.rank, [p[-1] for p in rollouts.progress])
    assert scores.figures["mean_final_true_progress"] == pytest.approx(np.mean(scores.rank))
    figures = improver.run()
    assert figures["reward_source"] == "coverage"
    with pytest.raises(ValueError, match="reward_source"):
        score_rollouts(rollouts, "topreward", None, "observation.images.overhead")


def test_resume_continues_after_the_last_iteration(tmp_path, start):
    _improver(tmp_path, start).run()
    first_rollouts = (tmp_path / "run" / "rollouts" / "iter_000" / "meta" / "twin.npz").stat().st_mtime_ns
    with pytest.raises(ValueError, match="resume=true"):
        _improver(tmp_path, start, ["iterations=2"]).run()
    with pytest.raises(CheckpointError, match="improve.reward_source"):
        _improver(tmp_path, start, ["iterations=2", "resume=true", "reward_source=coverage"]).run()
    scorer = Series()
    resumed = _improver(tmp_path, start, ["iterations=2", "resume=true"], scorer)
    figures = resumed.run()
    assert figures["iterations"] == 2 and find_last_checkpoint(tmp_path / "run").name == "000002"
    rows = [json.loads(line) for line in (tmp_path / "run" / "improve_log.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [1, 2]
    assert scorer.calls == 2  # only the second iteration's 2 rollouts were scored
    assert (tmp_path / "run" / "rollouts" / "iter_000" / "meta" / "twin.npz").stat().st_mtime_ns == first_rollouts
    assert list(resumed.rollouts(1).seeds) == [50002, 50003]


def test_top_episodes_and_the_initial_noise_scale():
    np.testing.assert_array_equal(top_episodes(np.array([0.1, 0.9, 0.5, 0.9]), 0.5), [1, 3])
    np.testing.assert_array_equal(top_episodes(np.array([0.3, 0.2]), 0.1), [0])  # at least one
    generator = torch.Generator().manual_seed(0)
    plain = euler_sample(lambda x, t: torch.zeros_like(x), (3, 4, 2), 2, generator, torch.device("cpu"), torch.float32)
    with initial_noise_scale(2.5):
        wide = euler_sample(lambda x, t: torch.zeros_like(x), (3, 4, 2), 2, torch.Generator().manual_seed(0),
                            torch.device("cpu"), torch.float32)
    torch.testing.assert_close(wide, 2.5 * plain)
    with pytest.raises(ValueError, match="noise scale"), initial_noise_scale(0.0):
        pass


@pytest.mark.parametrize("override, message", [
    ("reward_source=gvl", "reward_source must be one of"),
    ("top_fraction=0", "top_fraction"),
    ("replay_fraction=1.0", "replay_fraction"),
    ("n_rollouts=0", "n_rollouts"),
    ("scale=softmax", "scale must be one of"),
    ("eval.n_videos=5", "eval.n_videos"),
    ("reward.backend=gpt", "reward.backend"),
])
def test_config_errors_name_the_key(tmp_path, override, message):
    with pytest.raises(Exception, match=message):
        _config(tmp_path, "somewhere", [override])


def test_missing_demos_name_the_key(tmp_path, start):
    improver = _improver(tmp_path, start, [f"demo_root={tmp_path / 'none'}"])
    with pytest.raises(ValueError, match="demo_root"):
        improver.build()
