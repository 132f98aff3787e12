"""TOPReward's method core (policies/rewards/topreward.py) with a stand-in scorer: no model needed."""

from __future__ import annotations

import numpy as np
import pytest

from policies.rewards.protocol import PROMPT, TrueScorer, score_batch_by_loop
from policies.rewards.topreward import (
    SuccessDetector,
    TOPReward,
    gvl_prompt,
    interpolate,
    minmax,
    parse_gvl,
    prefix_lengths,
    resample,
    voc,
)


class MeanBrightness:
    """A scorer whose log p(True) is the mean brightness of the prefix's last frame (records its calls)."""

    def __init__(self) -> None:
        self.calls = []

    def true_log_probs(self, frames, instruction, prefix_lengths):
        self.calls.append((len(frames), instruction, list(prefix_lengths)))
        return np.array([frames[n - 1].mean() / 255.0 - 5.0 for n in prefix_lengths])

    def true_log_probs_batch(self, videos, instructions, prefix_lengths):
        return score_batch_by_loop(self, videos, instructions, prefix_lengths)


def _ramp(n: int, size: int = 8) -> np.ndarray:
    """A video whose brightness rises linearly frame by frame."""
    return np.stack([np.full((size, size, 3), int(255 * i / max(n - 1, 1)), np.uint8) for i in range(n)])


def test_prompt_is_the_papers_text_ending_in_true():
    text = PROMPT.format(instruction="open the drawer")
    assert text.startswith("The above video shows a robot manipulation trajectory that completes the following "
                           "task: open the drawer Decide whether")
    assert text.endswith("The answer is: True")


def test_resample_takes_the_nearest_frames_at_2_fps_keeping_first_and_last():
    frames = _ramp(300)
    sampled, idx = resample(frames, fps=10.0)
    assert idx[0] == 0 and idx[-1] == 299
    assert list(idx[:4]) == [0, 5, 10, 15] and len(idx) == 61  # 0..295 every 0.5 s, then the last frame
    assert np.array_equal(sampled, frames[idx])
    _, slow = resample(_ramp(5), fps=1.0)  # slower than 2 fps: every frame kept
    assert list(slow) == [0, 1, 2, 3, 4]


def test_prefix_lengths_are_a_unique_increasing_linspace_ending_at_the_length():
    assert prefix_lengths(60, 15) == list(range(4, 61, 4))
    assert prefix_lengths(3, 15) == [1, 2, 3]
    lengths = prefix_lengths(61, 15)
    assert len(lengths) == 15 and lengths[-1] == 61 and lengths[0] >= 1 and np.all(np.diff(lengths) > 0)
    with pytest.raises(ValueError, match="k must be >= 1"):
        prefix_lengths(10, 0)


def test_minmax_interpolate_and_voc():
    assert np.array_equal(minmax(np.array([-3.0, -3.0, -3.0])), np.zeros(3))
    assert np.allclose(minmax(np.array([-4.0, -2.0, -3.0])), [0.0, 1.0, 0.5])
    assert np.allclose(interpolate([0, 4], [0.0, 1.0], 5), [0.0, 0.25, 0.5, 0.75, 1.0])
    assert np.allclose(interpolate([2, 4], [0.5, 1.0], 5), [0.5, 0.5, 0.5, 0.75, 1.0])
    true = np.linspace(0, 1, 20)
    assert voc(true ** 2, true) == pytest.approx(1.0)
    assert voc(-true, true) == pytest.approx(-1.0)
    assert voc(np.ones(20), true) == 0.0 and voc(true, np.zeros(20)) == 0.0
    with pytest.raises(ValueError, match="differ in shape"):
        voc(true, true[:5])


def test_score_resamples_scores_prefixes_and_interpolates_to_every_frame():
    scorer = MeanBrightness()
    assert isinstance(scorer, TrueScorer)
    result = TOPReward(scorer, k=15).score(_ramp(300), "push the T", fps=10.0)
    assert scorer.calls == [(61, "push the T", prefix_lengths(61, 15))]
    assert result.progress.shape == (300,) and result.log_probs.shape == (15,)
    assert result.prefix_ends[-1] == 299 and result.progress[-1] == pytest.approx(1.0)
    assert result.final_log_prob == pytest.approx(result.log_probs[-1])
    assert voc(result.progress, np.linspace(0, 1, 300)) > 0.99


def test_static_control_repeats_the_first_frame_and_gives_a_flat_zero_curve():
    result = TOPReward(MeanBrightness(), k=15).static_control(_ramp(40), "push the T", fps=10.0)
    assert np.array_equal(result.progress, np.zeros(40))
    assert voc(result.progress, np.linspace(0, 1, 40)) == 0.0


def test_score_batch_matches_score_per_video():
    reward = TOPReward(MeanBrightness(), k=5)
    videos = [_ramp(30), _ramp(50)[::-1].copy()]
    batch = reward.score_batch(videos, ["a", "b"], fps=10.0)
    for video, instruction, got in zip(videos, ["a", "b"], batch, strict=True):
        assert np.allclose(got.progress, reward.score(video, instruction, fps=10.0).progress)
    assert voc(batch[1].progress, np.linspace(0, 1, 50)) < -0.99


@pytest.mark.parametrize(("frames", "instruction", "match"), [
    (np.zeros((0, 8, 8, 3), np.uint8), "push", "empty video"),
    ([], "push", "empty video"),
    (_ramp(4), "", "missing instruction"),
    (_ramp(4), None, "missing instruction"),
    ([np.zeros((8, 8, 3), np.uint8), np.zeros((9, 8, 3), np.uint8)], "push", "mixed sizes"),
    (_ramp(4).astype(np.float32), "push", "uint8"),
    (np.zeros((4, 8, 8), np.uint8), "push", r"\(T, H, W, 3\)"),
])
def test_bad_input_is_named(frames, instruction, match):
    with pytest.raises(ValueError, match=match):
        TOPReward(MeanBrightness()).score(frames, instruction, fps=10.0)


def test_bad_construction_is_named():
    with pytest.raises(ValueError, match="k must be >= 1"):
        TOPReward(MeanBrightness(), k=0)
    with pytest.raises(TypeError, match="TrueScorer"):
        TOPReward(object())


def test_success_detector_fits_the_balanced_accuracy_threshold():
    final = np.array([-9.0, -8.0, -7.5, -3.0, -2.0, -1.0, -7.0])
    success = np.array([False, False, False, True, True, True, False])
    detector = SuccessDetector().fit(final, success)
    assert -7.0 < detector.threshold < -3.0
    assert np.array_equal(detector.predict(final), success)
    # imbalanced: 1 failure among successes; balanced accuracy still separates it
    detector = SuccessDetector().fit([-5.0, -1.0, -1.5, -2.0, -0.5], [False, True, True, True, True])
    assert detector.predict([-5.0, -2.0]).tolist() == [False, True]
    with pytest.raises(ValueError, match="both successes and failures"):
        SuccessDetector().fit([-1.0, -2.0], [True, True])


def test_gvl_prompt_shuffles_with_a_seed_and_parse_restores_the_order():
    frames = _ramp(6)
    shuffled, prompt, perm = gvl_prompt(frames, "open the drawer", seed=3)
    assert "open the drawer" in prompt and "6 frames" in prompt
    assert np.array_equal(shuffled, frames[perm]) and not np.array_equal(perm, np.arange(6))
    assert np.array_equal(gvl_prompt(frames, "open the drawer", seed=3)[2], perm)
    truth = np.linspace(0, 100, 6)
    answer = "\n".join(f"Frame {i + 1}: {truth[p]:.0f}%" for i, p in enumerate(perm) if i != 2)
    progress = parse_gvl("Sure.\n" + answer, perm)
    missing = perm[2]
    assert np.isnan(progress[missing])
    keep = np.arange(6) != missing
    assert np.allclose(progress[keep], truth[keep] / 100)
    with pytest.raises(ValueError, match="no 'Frame i: p%' line"):
        parse_gvl("I cannot tell.", perm)
