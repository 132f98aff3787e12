"""The native TOPReward backend: shapes, prefix stability, a tiny overfit, checkpoints, errors, and real rollouts."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from policies.rewards.native import (
    PROMPT_HEAD,
    NativeScorer,
    NativeVLM,
    NativeVLMConfig,
    build_tokenizer,
    load_native,
    prompt_ids,
)
from policies.rewards.protocol import PROMPT, TrueScorer
from policies.rewards.rollouts import Rollout, RolloutConfig, build_agents, record_rollout
from policies.rewards.topreward import resample_indices
from policies.rewards.train_native import (
    CHECKPOINT,
    NativeRewardConfig,
    RewardTrainConfig,
    sample_batch,
    train_native_reward,
)

TASK = "push the T onto the red target"
TINY = NativeVLMConfig(image_size=32, channels=(8, 16), num_keypoints=4, d_model=32, n_layers=2, n_heads=2,
                       max_frames=16)


def _scorer(seed: int = 0, config: NativeVLMConfig = TINY) -> NativeScorer:
    """An untrained model whose FiLM (zero at initialisation) is random too, so the tests exercise it."""
    torch.manual_seed(seed)
    tokenizer = build_tokenizer([TASK, "move the block"])
    model = NativeVLM(config, len(tokenizer)).eval()
    if model.film is not None:
        torch.nn.init.normal_(model.film.weight, std=0.5)
    return NativeScorer(model, tokenizer)


def _video(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


def _square_rollout(progress: np.ndarray, seed: int) -> Rollout:
    """Frames of a white square whose x position is the progress (0: left, 1: right)."""
    images = np.full((len(progress), 32, 32, 3), 40, np.uint8)
    for t, p in enumerate(progress):
        x = int(round(2 + p * 22))
        images[t, 12:20, x:x + 8] = 255
    return Rollout(images, progress.astype(np.float32), progress >= 0.9, TASK, seed, "synthetic", 2.0)


def _square_rollouts(n: int) -> list[Rollout]:
    rng = np.random.default_rng(0)
    out = []
    for seed in range(n):
        final = rng.uniform(0, 1)
        out.append(_square_rollout(np.linspace(0, final, int(rng.integers(4, 9))), seed))
    return out


def _train_cfg(steps: int, **kw) -> NativeRewardConfig:
    train = RewardTrainConfig(steps=steps, batch_size=8, prefixes_per_video=3, lr=3e-3, warmup_steps=5,
                              log_every=5, eval_every=0, eval_prefixes=5, **kw)
    return NativeRewardConfig(model=TINY, train=train)


def test_scorer_is_a_true_scorer_with_one_float64_per_prefix():
    scorer = _scorer()
    assert isinstance(scorer, TrueScorer)
    out = scorer.true_log_probs(_video(7), TASK, [1, 4, 7])
    assert out.shape == (3,) and out.dtype == np.float64 and np.all(out < 0)
    batch = scorer.true_log_probs_batch([_video(7), _video(3, 1)], [TASK, "move the block"], [[2, 7], [1, 2, 3]])
    assert [b.shape for b in batch] == [(2,), (3,)]
    np.testing.assert_allclose(batch[0], scorer.true_log_probs(_video(7), TASK, [2, 7]), atol=1e-5)


def test_film_conditions_the_frame_tokens_on_the_instruction():
    images = torch.from_numpy(_video(3)).permute(0, 3, 1, 2).float() / 255
    for film, differ in ((True, True), (False, False)):
        scorer = _scorer(config=dataclasses.replace(TINY, film=film))
        model, tokenizer = scorer.model, scorer.tokenizer
        tokens = []
        for text in (TASK, "move the block"):
            params = model.instruction_film(torch.tensor([tokenizer.ids(text)]))
            per_frame = None if params is None else tuple(p.expand(3, -1) for p in params)
            tokens.append(model.encode_frames(images, per_frame))
        assert (not torch.allclose(*tokens, atol=1e-4)) == differ
        assert (model.film is None) != film


def test_prompt_is_the_topreward_text_without_its_final_true():
    tokenizer = build_tokenizer([TASK])
    ids = prompt_ids(tokenizer, TASK)
    full = tokenizer.ids(PROMPT.format(instruction=TASK))
    assert ids == full[:-1] and tokenizer.vocab[full[-1]] == "true"
    assert PROMPT_HEAD.endswith("The answer is: ")
    assert 1 in prompt_ids(tokenizer, "shove the tee over to the red disc")  # unseen words are <unk> (id 1)


def test_prefix_scores_do_not_change_when_frames_are_appended():
    scorer = _scorer()
    video = _video(12)
    full = scorer.true_log_probs(video, TASK, [1, 3, 6, 12])
    short = scorer.true_log_probs(video[:6], TASK, [1, 3, 6])
    one_by_one = [scorer.true_log_probs(video[:n], TASK, [n])[0] for n in (1, 3, 6, 12)]
    np.testing.assert_allclose(full[:3], short, atol=1e-5)
    np.testing.assert_allclose(full, one_by_one, atol=1e-5)


def test_errors_name_what_is_wrong():
    scorer = _scorer()
    with pytest.raises(ValueError, match="empty video"):
        scorer.true_log_probs(np.zeros((0, 32, 32, 3), np.uint8), TASK, [1])
    with pytest.raises(ValueError, match="mixed sizes"):
        scorer.true_log_probs([np.zeros((32, 32, 3), np.uint8), np.zeros((16, 16, 3), np.uint8)], TASK, [1, 2])
    with pytest.raises(ValueError, match="instruction is empty"):
        scorer.true_log_probs(_video(3), "  ", [1, 2])
    with pytest.raises(ValueError, match="prefix_lengths must be increasing"):
        scorer.true_log_probs(_video(3), TASK, [2, 2, 4])
    with pytest.raises(ValueError, match="max_frames"):
        scorer.true_log_probs(_video(17), TASK, [1])
    with pytest.raises(ValueError, match="reward_model.d_model"):
        NativeVLMConfig(d_model=30, n_heads=4)


def test_training_lowers_the_loss_and_ranks_progress(tmp_path):
    rollouts = _square_rollouts(24)
    short = train_native_reward(_train_cfg(5), rollouts, tmp_path / "short")
    figures = train_native_reward(_train_cfg(150), rollouts, tmp_path / "long", val_rollouts=rollouts[:6])
    assert figures["train/loss"] < short["train/loss"] - 0.05
    scorer = load_native(tmp_path / "long")
    video = _square_rollout(np.array([0.0, 0.1, 0.5, 1.0]), 99).images
    logp = scorer.true_log_probs(video, TASK, [1, 2, 3, 4])
    assert logp[3] > logp[2] > logp[0] + 0.5
    assert figures["val/voc"] > 0.8


def test_static_rows_repeat_one_frame_labelled_with_its_progress():
    rollouts = [_square_rollout(np.linspace(0, 1, n), seed) for seed, n in enumerate((4, 6, 8))]  # frames all differ
    rng = np.random.default_rng(0)
    videos, _, prefixes, progress, valid = sample_batch(rollouts, 200, 3, rng, {"static": 0.3})
    static = [i for i, v in enumerate(videos) if len(v) > 1 and (v == v[:1]).all()]
    assert 0.2 < len(static) / len(videos) < 0.4
    for i in static:
        labels = progress[i][valid[i]].numpy()
        assert np.all(labels == labels[0]) and len(videos[i]) == prefixes[i][-1]
    moving = next(i for i in range(len(videos)) if i not in static and len(prefixes[i]) == 3)
    assert np.all(np.diff(progress[moving].numpy()) > 0)  # a real prefix: its last frame's (increasing) progress
    with pytest.raises(ValueError, match="train.static_fraction, crop_fraction and reverse_fraction"):
        RewardTrainConfig(static_fraction=0.5, crop_fraction=0.6)


def test_checkpoint_round_trip_and_resume(tmp_path):
    rollouts = _square_rollouts(8)
    train_native_reward(_train_cfg(6), rollouts, tmp_path)
    assert (tmp_path / CHECKPOINT).is_file()
    scorer = load_native(tmp_path)
    again = load_native(tmp_path)
    video = rollouts[0].images
    np.testing.assert_array_equal(scorer.true_log_probs(video, TASK, [1, len(video)]),
                                  again.true_log_probs(video, TASK, [1, len(video)]))
    resumed = train_native_reward(_train_cfg(10), rollouts, tmp_path)  # continues from step 6
    assert torch.load(tmp_path / CHECKPOINT, weights_only=False)["step"] == 10 and "train/loss" in resumed
    with pytest.raises(ValueError, match="cannot resume"):
        train_native_reward(NativeRewardConfig(dataclasses.replace(TINY, d_model=64), _train_cfg(12).train),
                            rollouts, tmp_path)


def test_resample_keeps_2fps_and_the_last_frame():
    np.testing.assert_array_equal(resample_indices(12, fps=10.0), [0, 5, 10, 11])
    np.testing.assert_array_equal(resample_indices(1, fps=10.0), [0])


def test_rollouts_of_the_real_env_mix_success_and_failure():
    sim = pytest.importorskip("sim")
    env_cfg = sim.TargetsEnvConfig()
    env_cfg.kwargs.max_episode_steps = 60
    env = sim.make_env(env_cfg)
    cfg = RolloutConfig()
    agents = build_agents(env, lambda e: sim.make_expert(e, env_cfg), lambda e: sim.make_expert(e, env_cfg), cfg)
    try:
        good = record_rollout(env, agents["expert"], 0, cfg, "expert")
        bad = record_rollout(env, agents["random"], 1, cfg, "random")
    finally:
        env.close()
    for r in (good, bad):
        assert r.images.shape[1:] == (64, 64, 3) and len(r.progress) == len(r.images)
        assert 0.0 <= r.progress.min() and r.progress.max() <= 1.0 and r.progress[0] == 0.0
    assert good.succeeded and not bad.succeeded
    assert good.progress[-1] > 0.7 > bad.progress[-1]
    assert good.task.startswith("push the T") or "red" in good.task
