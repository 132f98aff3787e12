"""TOPReward evaluation (policies/rewards/evaluate.py): metrics on hand-made series, the pipeline on tiny rollouts with
an untrained native model (figures present, finite, in range; progress.png; W&B), GVL with a tiny hf model, errors."""

from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np
import pytest

from policies.datasets.atomic import atomic_symlink
from policies.rewards.backends import make_scorer
from policies.rewards.config import RewardConfig
from policies.rewards.evaluate import (
    RewardEvalConfig,
    RolloutScore,
    evaluate_reward,
    iter_rollouts,
    mean_voc,
    pick_for_plot,
    plot_progress,
    roc_auc,
    split_figures,
)
from policies.rewards.native import NativeScorer
from policies.rewards.protocol import score_batch_by_loop
from policies.rewards.topreward import SuccessDetector, TOPReward
from policies.tracking import Tracker
from tests.policies.reward_data import save_tiny_native, write_rollouts
from tests.policies.test_tracking import history, read_records

SMALL = RewardEvalConfig(n_rollouts=4, n_fit=4, batch_size=3, n_plot=4)


# ------------------------------------------------------------------------------------------------------ metrics
def test_voc_of_a_constant_prediction_is_zero_and_of_a_perfect_one_is_one():
    true = np.linspace(0, 1, 10)
    assert mean_voc([np.full(10, 0.3)], [true]) == 0.0
    assert mean_voc([true ** 2], [true]) == pytest.approx(1.0)  # any increasing map: same order
    assert mean_voc([true, true[::-1]], [true, true]) == pytest.approx(0.0)  # +1 and -1 average to 0


def test_roc_auc_on_a_hand_example():
    # sklearn's roc_auc_score example: of the 4 (positive, negative) pairs, 3 are ordered right
    assert roc_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    assert roc_auc([1.0, 1.0, 2.0], [True, False, True]) == pytest.approx(0.75)  # a tie counts half
    assert roc_auc([3.0, 2.0, 1.0], [True, False, False]) == 1.0
    with pytest.raises(ValueError, match="both positive and negative"):
        roc_auc([0.1, 0.2], [1, 1])


def _score(seed: int, success: bool, pred: np.ndarray, final: float, true: np.ndarray | None = None) -> RolloutScore:
    """Scores at every frame (K = the frame count): prefix ends 0..T-1, log-probs = ``pred``."""
    true = np.linspace(0, 1, len(pred)) if true is None else true
    n = len(pred)
    return RolloutScore(seed, "expert", success, true, pred, np.zeros(n), final, None, np.arange(n), pred, np.zeros(n))


def test_split_figures_are_named_with_the_suffix_and_computed_per_rollout():
    ramp = np.linspace(0, 1, 6)
    scores = [_score(0, True, ramp, -0.1), _score(1, False, ramp[::-1], -2.0), _score(2, True, ramp, -1.5)]
    figures = split_figures(scores, SuccessDetector(threshold=-1.0), "_x")
    assert figures["voc_x"] == pytest.approx(1 / 3) and figures["static_voc_x"] == 0.0
    assert figures["voc_frames_x"] == pytest.approx(1 / 3) and figures["voc_frames_ceiling_x"] == pytest.approx(1.0)
    assert figures["success_auc_x"] == 1.0 and figures["success_accuracy_x"] == pytest.approx(2 / 3)
    assert (figures["n_rollouts_x"], figures["n_successes_x"]) == (3, 2) and "gvl_voc_x" not in figures


def test_voc_leaves_out_rollouts_whose_truth_does_not_move_and_voc_all_counts_them_zero():
    ramp = np.linspace(0, 1, 6)
    flat = _score(1, False, ramp, -2.0, true=np.full(6, 0.02))  # any prediction: no order to recover
    nudged = _score(2, False, ramp, -2.0, true=np.array([0, 0, 0.01, 0.01, 0.03, 0.03]))  # spans 0.03 < 0.05
    figures = split_figures([_score(0, True, ramp, -0.1), flat, nudged], SuccessDetector(threshold=-1.0))
    assert figures["n_voc_rollouts"] == 1 and figures["voc"] == pytest.approx(1.0)
    assert figures["voc_all"] == pytest.approx(1 / 3)
    counted = split_figures([_score(0, True, ramp, -0.1), nudged], SuccessDetector(threshold=-1.0), "", 0.0)
    assert counted["n_voc_rollouts"] == 2 and counted["voc"] < 1.0
    with pytest.warns(UserWarning, match="no rollout's true progress spans"):
        none = split_figures([flat], SuccessDetector(threshold=-1.0))
    assert math.isnan(none["voc"]) and none["voc_all"] == 0.0


def test_plot_picks_successes_and_failures_alternately():
    ramp = np.linspace(0, 1, 6)
    scores = [_score(i, i in (0, 1, 2), ramp, 0.0) for i in range(5)]  # successes 0, 1, 2; failures 3, 4
    assert [s.seed for s in pick_for_plot(scores, 4)] == [0, 3, 1, 4]
    with pytest.raises(ValueError, match="at least one rollout"):
        plot_progress([], "unused.png")


# ------------------------------------------------------------------------------------------------- pipeline
@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("reward_eval")
    return write_rollouts(root / "rollouts"), save_tiny_native(root / "model")


def test_native_pipeline_prints_finite_figures_in_range_and_writes_the_plot(data, tmp_path):
    rollouts, model = data
    scorer = make_scorer(RewardConfig(backend="native", path=str(model)))
    assert isinstance(scorer, NativeScorer)
    reward = TOPReward(scorer, k=15, sample_fps=2.0)
    with Tracker("realsim-test", mode="offline", run_dir=tmp_path) as tracker:
        figures = evaluate_reward(reward, rollouts, SMALL, tmp_path, tracker)
        run_dir = tracker.run_dir
    for suffix in ("", "_heldout_instructions"):
        for name in ("voc", "static_voc"):
            assert -1.0 <= figures[name + suffix] <= 1.0
        for name in ("success_auc", "success_accuracy"):
            assert 0.0 <= figures[name + suffix] <= 1.0
        assert (figures["n_rollouts" + suffix], figures["n_successes" + suffix]) == (4, 2)
        assert "gvl_voc" + suffix not in figures  # native cannot generate text
    assert all(math.isfinite(v) for v in figures.values())
    png = cv2.imread(str(tmp_path / "progress.png"))
    assert png is not None and png.shape == (600, 840, 3)  # 2 x 2 panels of 300 x 420
    rows = history(read_records(next(run_dir.glob("run-*.wandb"))))
    logged = {k: v for row in rows for k, v in row.items()}
    assert {"eval/voc", "eval/success_auc_heldout_instructions"} <= set(logged)
    assert logged["eval/progress/_type"] in ("image-file", "html-file")  # html: the PNG embedded (no Pillow here)


class SquareOracle:
    """A TrueScorer that reads the frames right: the score of a prefix is the x position of its last frame's square."""

    def true_log_probs(self, frames, instruction, prefix_lengths):
        return np.array([np.flatnonzero(frames[n - 1, 16, :, 0] == 255).mean() / 32 - 1 for n in prefix_lengths])

    def true_log_probs_batch(self, videos, instructions, prefix_lengths):
        return score_batch_by_loop(self, videos, instructions, prefix_lengths)


def test_a_reward_that_reads_the_frames_scores_voc_one_static_zero_and_auc_one(data, tmp_path):
    rollouts, _ = data
    figures = evaluate_reward(TOPReward(SquareOracle()), rollouts, SMALL, tmp_path)
    for suffix in ("", "_heldout_instructions"):
        assert figures["voc" + suffix] > 0.99  # the true progress is x; only pixel rounding makes ties
        assert figures["static_voc" + suffix] == 0.0  # the first frame repeated: one score, a constant series
        assert figures["success_auc" + suffix] == 1.0 and figures["success_accuracy" + suffix] == 1.0


def test_missing_model_path_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"reward\.path=.*scripts/train_reward\.py"):
        make_scorer(RewardConfig(backend="native", path=str(tmp_path / "nothing")))


def test_missing_rollouts_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no rollouts in .*heldout.*data_root"):
        next(iter_rollouts(tmp_path, "heldout"))


@pytest.mark.parametrize(("field", "value", "match"), [
    ("splits", [], "eval.splits"), ("n_rollouts", -1, "eval.n_rollouts"), ("batch_size", 0, "eval.batch_size"),
    ("min_progress_range", 1.0, "eval.min_progress_range"),
])
def test_bad_eval_settings_are_named(field, value, match):
    with pytest.raises(ValueError, match=match):
        dataclasses.replace(RewardEvalConfig(), **{field: value})


def test_hf_backend_adds_the_gvl_baseline(data, tmp_path):
    from policies.rewards.tiny import build_tiny_qwen2_5_vl

    rollouts, _ = data
    path = build_tiny_qwen2_5_vl(tmp_path / "qwen", layers=1)
    reward = TOPReward(make_scorer(RewardConfig(backend="hf", path=str(path))))
    cfg = dataclasses.replace(SMALL, splits=["heldout"], n_rollouts=2, n_fit=2, gvl_max_new_tokens=8)
    figures = evaluate_reward(reward, rollouts, cfg, tmp_path)
    assert -1.0 <= figures["gvl_voc"] <= 1.0 and -1.0 <= figures["voc"] <= 1.0  # random model: its value is noise
    assert (tmp_path / "progress.png").is_file()


# ------------------------------------------------------------------------------------------- helpers it relies on
def test_latest_link_is_replaced_and_a_real_directory_is_refused(tmp_path):
    first, second = tmp_path / "run1", tmp_path / "run2"
    first.mkdir(), second.mkdir()
    link = atomic_symlink(first, tmp_path / "outputs" / "latest")
    assert link.resolve() == first.resolve()
    atomic_symlink(second, link)
    assert link.resolve() == second.resolve() and [p.name for p in link.parent.iterdir()] == ["latest"]
    with pytest.raises(IsADirectoryError, match="not a symlink"):
        atomic_symlink(second, first)


def test_log_image_checks_its_input(tmp_path):
    tracker = Tracker("realsim-test", mode="disabled")
    (tmp_path / "plot.bmp").write_bytes(b"x")
    with pytest.raises(FileNotFoundError, match="log_image.*no file"):
        tracker.log_image("eval/progress", tmp_path / "missing.png", step=0)
    with pytest.raises(ValueError, match="png"):
        tracker.log_image("eval/progress", tmp_path / "plot.bmp", step=0)
