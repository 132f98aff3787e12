"""TOPReward's hf backend on a tiny randomly initialised Qwen2.5-VL built in a temp dir (no hub access)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from policies.rewards.hf import HFScorer, VisionSpec
from policies.rewards.protocol import PROMPT
from policies.rewards.tiny import PREPROCESSOR, build_tiny_qwen2_5_vl, build_tiny_qwen3_vl
from policies.rewards.topreward import TOPReward

INSTRUCTION = "push the T-shaped block onto the goal"


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return build_tiny_qwen2_5_vl(tmp_path_factory.mktemp("tiny_qwen"))


@pytest.fixture(scope="module")
def scorer(tiny_dir):
    torch.set_num_threads(1)
    return HFScorer(str(tiny_dir))


def _frames(n: int, seed: int = 0, size: int = 56) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def _reference_pixels(frames: np.ndarray) -> np.ndarray:
    """Qwen2VLImageProcessor's layout written out in numpy (frames already at a multiple of 28 px)."""
    mean, std = np.array(PREPROCESSOR["image_mean"]), np.array(PREPROCESSOR["image_std"])
    out = []
    for frame in frames:
        image = ((frame / 255.0 - mean) / std).transpose(2, 0, 1).astype(np.float32)  # (C, H, W)
        c, h, w = image.shape
        p = image.reshape(c, h // 28, 2, 14, w // 28, 2, 14).transpose(1, 4, 2, 5, 0, 3, 6)
        p = np.broadcast_to(p[:, :, :, :, :, None], (*p.shape[:5], 2, 14, 14))
        out.append(p.reshape((h // 14) * (w // 14), c * 2 * 14 * 14))
    return np.concatenate(out)


def _reference_log_probs(directory, frames: np.ndarray, instruction: str, lengths) -> np.ndarray:
    """Direct reference: the model's standard call on the tokenised text of each prefix, log-softmax before True."""
    from transformers import AutoModelForImageTextToText, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(directory)
    model = AutoModelForImageTextToText.from_pretrained(directory, use_kernels=False).eval()
    true_id = tokenizer.convert_tokens_to_ids("ĠTrue")
    pixels = torch.from_numpy(_reference_pixels(frames))
    tokens_per_frame = (frames.shape[1] // 28) * (frames.shape[2] // 28)
    out = []
    for n in lengths:
        text = ("<|vision_start|>" + "<|image_pad|>" * tokens_per_frame + "<|vision_end|>") * n
        ids = tokenizer(text + PROMPT.format(instruction=instruction), return_tensors="pt")["input_ids"]
        assert ids[0, -1] == true_id
        grid = torch.tensor([[1, frames.shape[1] // 14, frames.shape[2] // 14]] * n)
        with torch.no_grad():
            logits = model(input_ids=ids, pixel_values=pixels[: n * 4 * tokens_per_frame], image_grid_thw=grid,
                           mm_token_type_ids=(ids == model.config.image_token_id).int()).logits
        out.append(torch.log_softmax(logits[0, -2].double(), -1)[true_id].item())
    return np.array(out)


def test_cached_path_equals_naive_path(scorer):
    frames, lengths = _frames(12), [1, 2, 4, 7, 9, 12]
    naive = scorer.naive_log_probs(frames, INSTRUCTION, lengths)
    cached = scorer.cached_log_probs(frames, INSTRUCTION, lengths)
    assert cached.shape == (6,) and cached.dtype == np.float64
    np.testing.assert_allclose(cached, naive, atol=1e-4, rtol=0)
    assert np.ptp(naive) > 1e-3  # the frames matter: a model that ignored them would pass trivially


def test_reward_equals_a_direct_reference_forward_per_prefix(scorer, tiny_dir):
    frames = _frames(20, seed=1)  # 20 frames at 2 fps: no resampling, K = 5 prefixes of 4, 8, ... 20 frames
    result = TOPReward(scorer, k=5).score(frames, INSTRUCTION, fps=2.0)
    reference = _reference_log_probs(tiny_dir, frames, INSTRUCTION, [4, 8, 12, 16, 20])
    np.testing.assert_allclose(result.log_probs, reference, atol=1e-4, rtol=0)
    assert list(result.prefix_ends) == [3, 7, 11, 15, 19] and result.progress.shape == (20,)


def test_scores_are_prefix_stable_when_frames_are_appended(scorer):
    frames = _frames(10, seed=2)
    short = scorer.cached_log_probs(frames[:4], INSTRUCTION, [1, 2, 4])
    long = scorer.cached_log_probs(frames, INSTRUCTION, [1, 2, 4, 7, 10])
    np.testing.assert_allclose(long[:3], short, atol=1e-5, rtol=0)


def test_qwen3_vl_cached_equals_naive_and_is_prefix_stable(tmp_path):
    scorer = HFScorer(str(build_tiny_qwen3_vl(tmp_path / "qwen3")))  # deepstack, interleaved M-RoPE, 16-px patches
    frames = _frames(10, seed=6, size=64)
    naive = scorer.naive_log_probs(frames, INSTRUCTION, [1, 3, 6, 10])
    np.testing.assert_allclose(scorer.cached_log_probs(frames, INSTRUCTION, [1, 3, 6, 10]), naive, atol=1e-4, rtol=0)
    np.testing.assert_allclose(scorer.cached_log_probs(frames[:6], INSTRUCTION, [1, 3, 6]), naive[:3], atol=1e-4,
                               rtol=0)
    assert np.ptp(naive) > 1e-3


def test_frames_of_another_size_are_resized_into_the_pixel_budget(scorer):
    spec = VisionSpec.from_dict(PREPROCESSOR)
    assert spec.resized(56, 56) == (56, 56) and spec.resized(100, 100) == (56, 56) and spec.resized(10, 10) == (28, 28)
    frames = _frames(5, seed=3, size=40)
    np.testing.assert_allclose(scorer.cached_log_probs(frames, INSTRUCTION, [2, 5]),
                               scorer.naive_log_probs(frames, INSTRUCTION, [2, 5]), atol=1e-4, rtol=0)


def test_batch_scores_each_video(scorer):
    videos, lengths = [_frames(4, seed=4), _frames(6, seed=5)], [[2, 4], [3, 6]]
    batch = scorer.true_log_probs_batch(videos, ["open the drawer", INSTRUCTION], lengths)
    np.testing.assert_allclose(batch[1], scorer.true_log_probs(videos[1], INSTRUCTION, [3, 6]), atol=1e-6)


@pytest.mark.parametrize(("frames", "instruction", "lengths", "match"), [
    (np.zeros((0, 56, 56, 3), np.uint8), INSTRUCTION, [1], "empty video"),
    (_frames(3), "  ", [1, 3], "missing instruction"),
    ([np.zeros((56, 56, 3), np.uint8), np.zeros((28, 56, 3), np.uint8)], INSTRUCTION, [1, 2], "mixed sizes"),
    (_frames(3).astype(np.float32), INSTRUCTION, [1, 3], "uint8"),
    (_frames(3), INSTRUCTION, [2, 1], "prefix_lengths must be increasing"),
    (_frames(3), INSTRUCTION, [1, 4], "prefix_lengths must be increasing"),
])
def test_bad_input_is_named(scorer, frames, instruction, lengths, match):
    with pytest.raises(ValueError, match=match):
        scorer.true_log_probs(frames, instruction, lengths)


def test_missing_model_path_is_named(tmp_path):
    with pytest.raises(ValueError, match="nowhere.*does not exist"):
        HFScorer(str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="cannot load"):
        HFScorer(str(tmp_path))  # exists, holds no model


def test_a_vocabulary_without_a_single_true_token_is_refused(tmp_path):
    directory = build_tiny_qwen2_5_vl(tmp_path / "no_true", with_true=False, layers=1)
    with pytest.raises(ValueError, match=r"no_true.*no single token for ' True'"):
        HFScorer(str(directory))


def _edit_tokenizer(source, target, edit):
    from tokenizers import Tokenizer

    shutil.copytree(source, target)
    tok = Tokenizer.from_file(str(target / "tokenizer.json"))
    edit(tok)
    tok.save(str(target / "tokenizer.json"))
    return target


def test_a_tokenizer_that_changes_the_prompt_is_refused(tiny_dir, tmp_path):
    from tokenizers import normalizers

    directory = _edit_tokenizer(tiny_dir, tmp_path / "lower", lambda t: setattr(t, "normalizer",
                                                                               normalizers.Lowercase()))
    with pytest.raises(ValueError, match="changes the prompt on a round trip"):
        HFScorer(str(directory))


def test_a_tokenizer_that_wraps_the_prompt_in_a_chat_template_is_refused(tiny_dir, tmp_path):
    from tokenizers import processors

    def wrap(tok):
        ids = [("<|im_start|>", tok.token_to_id("<|im_start|>")), ("<|im_end|>", tok.token_to_id("<|im_end|>"))]
        tok.post_processor = processors.TemplateProcessing(single="<|im_start|> $A <|im_end|>", special_tokens=ids)

    directory = _edit_tokenizer(tiny_dir, tmp_path / "templated", wrap)
    with pytest.raises(ValueError, match="adds template/special tokens around the prompt"):
        HFScorer(str(directory))


def test_bench_times_both_paths_on_the_same_frames_and_they_agree(tiny_dir):
    from policies.rewards.bench import run_reward_benchmarks

    figures = run_reward_benchmarks(n_frames=60, fps=10.0, k=5, path=str(tiny_dir), n_repeats=1)
    assert figures["n_sampled_frames"] == 13 and figures["n_prefixes"] == 5
    assert figures["max_abs_diff"] < 1e-4 and figures["kv_speedup"] > 1.0
    assert figures["frames_per_s"] == pytest.approx(60 / figures["cached_s"])


def test_preprocessor_config_is_read(tiny_dir):
    spec = VisionSpec.from_dict(json.loads((tiny_dir / "preprocessor_config.json").read_text()))
    assert (spec.min_pixels, spec.max_pixels, spec.patch_size, spec.merge_size) == (784, 3136, 14, 2)
