"""Evaluation ablations, instructions reaching the policy, the per-instruction table and captioned videos, on a tiny
language-conditioned env (tests/policies/language_env.py) whose success depends on the instruction and the image."""

from __future__ import annotations

import json

import av
import gymnasium as gym
import numpy as np
import pytest
import torch

from policies.ablations import (
    ablation_dir,
    ablation_figures,
    ablation_options,
    blank_images,
    check_ablations,
    eval_info,
    run_ablations,
    shuffled_instructions,
)
from policies.eval_report import format_instruction_table, overlay_text, per_instruction_table
from policies.evaluation import EvalEnvs, Evaluator, save_eval_info
from policies.stats_utils import wilson_interval
from policies.train_config import EvalRunConfig
from tests.policies.language_env import FRAME, HELDOUT_TEMPLATES, MARKS, ColourPolicy, make_colour_envs

N_EPISODES = 16


def evaluate(ablation: str = "none", n_envs: int = 4, n_episodes: int = N_EPISODES, policy=None, **env_kwargs):
    """Run ``policy`` (a fresh ColourPolicy by default) under ``ablation``; returns (result, policy)."""
    policy = policy or ColourPolicy()
    evaluator = Evaluator(make_colour_envs(n_envs, **env_kwargs), n_episodes=n_episodes, start_seed=300,
                          metric_keys=["proximity"], progress=False, **ablation_options(ablation))
    return evaluator.run(policy), policy


@pytest.mark.parametrize(("asynchronous", "n_envs"), [(False, 1), (False, 3), (True, 3)])
def test_the_policy_gets_each_episodes_instruction_as_a_task_list(asynchronous, n_envs):
    result, policy = evaluate(n_envs=n_envs, asynchronous=asynchronous)
    assert result["success_rate"] == 1.0  # the policy follows the instruction it is given
    assert all(len(tasks) == n_envs and all(isinstance(t, str) for t in tasks) for tasks in policy.tasks)
    first_batch = [e["task"] for e in result["episodes"][:n_envs]]
    assert policy.tasks[0] == first_batch  # sub-env j's policy reads episode j's instruction
    assert {e["target"] for e in result["episodes"]} == set(MARKS)  # every colour is asked for
    assert all(e["target"] in e["task"] for e in result["episodes"])
    assert "policy_task" not in result["episodes"][0]


def test_instruction_from_info_survives_gymnasiums_shared_memory_text_bug():
    """AsyncVectorEnv(shared_memory=True) never updates a Text observation (Gymnasium#1164): info's task is used."""
    envs = make_colour_envs(2, asynchronous=True, shared_memory=True)()
    try:
        obs, info = envs.reset(seed=[1, 2])
        assert obs["task"][0].strip() == "" and info["task"][0] != ""  # the bug the evaluator works around
    finally:
        envs.close()
    result, policy = evaluate(n_envs=2, n_episodes=4, asynchronous=True, shared_memory=True)
    assert result["success_rate"] == 1.0 and policy.tasks[0] == [e["task"] for e in result["episodes"][:2]]
    with pytest.raises(ValueError, match="shared_memory=False"):  # only in obs: refused, not silently blank
        evaluate(n_envs=2, n_episodes=2, asynchronous=True, shared_memory=True, task_in_info=False)
    only_obs, policy = evaluate(n_envs=2, n_episodes=4, task_in_info=False)  # a sync env's obs['task'] is fine
    assert only_obs["success_rate"] == 1.0 and policy.tasks[0] == [e["task"] for e in only_obs["episodes"][:2]]


def test_shuffled_instructions_name_another_target_and_success_collapses():
    reference, _ = evaluate()
    shuffled, policy = evaluate("shuffled_instructions")
    assert [e["seed"] for e in shuffled["episodes"]] == [e["seed"] for e in reference["episodes"]]
    assert [e["task"] for e in shuffled["episodes"]] == [e["task"] for e in reference["episodes"]]  # same episodes
    for episode in shuffled["episodes"]:
        told = episode["policy_task"]
        assert episode["target"] not in told and any(c in told for c in MARKS)  # another colour, told instead
    assert policy.tasks[0] == [e["policy_task"] for e in shuffled["episodes"][:4]]
    assert reference["success_rate"] == 1.0 and shuffled["success_rate"] == 0.0  # the env judges its own target
    again, _ = evaluate("shuffled_instructions", n_envs=3)  # the assignment does not depend on batching
    assert [e["policy_task"] for e in again["episodes"]] == [e["policy_task"] for e in shuffled["episodes"]]


def test_shuffling_needs_two_targets_and_an_instruction():
    with pytest.raises(ValueError, match="at least two different targets"):
        evaluate("shuffled_instructions", n_episodes=3, colours=("red",))
    told = shuffled_instructions(["a", "b", "c"], ["x", "y", "y"], seed=0)
    assert told[0] in ("b", "c") and told[1:] == ["a", "a"]  # only episode 0 has another target for 1 and 2
    assert told == shuffled_instructions(["a", "b", "c"], ["x", "y", "y"], seed=0)  # seeded
    with pytest.raises(ValueError, match="3 tasks but 2 targets"):
        shuffled_instructions(["a", "b", "c"], ["x", "y"], seed=0)
    from tests.policies.test_evaluation import HalfPlanePolicy, make_envs

    with pytest.raises(ValueError, match="no instruction"):  # an env without any task
        Evaluator(make_envs(2), n_episodes=2, start_seed=0, max_steps=3, progress=False,
                  shuffle_instructions=True).run(HalfPlanePolicy())


def test_blank_images_reach_the_policy_as_zeros_and_vision_matters():
    reference, seen = evaluate(n_episodes=8)
    blank, blind = evaluate("blank_images", n_episodes=8)
    assert max(seen.image_max) > 0.5 and max(blind.image_max) == 0.0  # every image the policy got was zeros
    assert reference["success_rate"] == 1.0 and blank["success_rate"] == 0.0
    batch = {"observation.images.cam": torch.ones(2, 3, 4, 4), "observation.state": torch.ones(2, 2), "task": ["a"]}
    zeroed = blank_images(batch)
    assert torch.equal(zeroed["observation.images.cam"], torch.zeros(2, 3, 4, 4))
    assert torch.equal(zeroed["observation.state"], torch.ones(2, 2)) and zeroed["task"] == ["a"]
    assert torch.equal(batch["observation.images.cam"], torch.ones(2, 3, 4, 4))  # the input is not changed


def test_per_instruction_table_groups_by_target_and_counts_every_episode():
    shuffled, _ = evaluate("shuffled_instructions")
    reference, _ = evaluate()
    table = reference["per_instruction"]
    assert list(table) == sorted(MARKS)
    assert sum(row["n_episodes"] for row in table.values()) == N_EPISODES
    for colour, row in table.items():
        episodes = [e for e in reference["episodes"] if e["target"] == colour]
        n_success = sum(e["success"] for e in episodes)
        assert (row["n_episodes"], row["n_success"]) == (len(episodes), n_success)
        assert (row["ci_low"], row["ci_high"]) == wilson_interval(n_success, len(episodes))
    assert all(row["success_rate"] == 0.0 for row in shuffled["per_instruction"].values())
    text = format_instruction_table(table, "none")
    assert text.splitlines()[0] == "per-instruction success (none)"
    red = next(line for line in text.splitlines() if line.strip().startswith("red"))
    assert f"{table['red']['n_episodes']}" in red and "1.000" in red and ": " not in red
    # without a target, the task string is the group; episodes without an instruction are left out
    by_task = per_instruction_table([{"task": "a", "success": True}, {"task": "a", "success": False},
                                     {"success": True}])
    assert list(by_task) == ["a"] and by_task["a"]["n_episodes"] == 2 and by_task["a"]["success_rate"] == 0.5


def test_overlay_writes_the_instruction_on_the_frame():
    frame = np.full((*FRAME, 3), 90, np.uint8)
    out = overlay_text(frame, ["go to the red mark"])
    assert out.shape == frame.shape and out.dtype == np.uint8 and np.array_equal(frame, np.full_like(frame, 90))
    changed = np.any(out != frame, axis=2)
    assert changed[:16].mean() > 0.5 and not changed[-10:].any()  # a caption band on top, the rest untouched
    assert out[:16].max() > 200  # bright text on the darkened band
    assert np.array_equal(overlay_text(frame, []), frame)
    two = np.any(overlay_text(frame, ["env: go to the red mark", "policy: go to the blue mark"]) != frame, axis=2)
    assert two.any(axis=1).sum() > changed.any(axis=1).sum()  # two lines take a taller band
    with pytest.raises(ValueError, match="uint8"):
        overlay_text(frame.astype(np.float32), ["x"])


def test_videos_carry_the_instruction(tmp_path):
    evaluator = Evaluator(make_colour_envs(2), n_episodes=2, start_seed=300, n_videos=1,
                          video_dir=tmp_path / "videos", progress=False)
    result = evaluator.run(ColourPolicy())
    raw = Evaluator(make_colour_envs(2), n_episodes=2, start_seed=300, n_videos=1, video_dir=tmp_path / "raw",
                    progress=False, caption_videos=False).run(ColourPolicy())
    decoded = []
    for path in (result["video_paths"][0], raw["video_paths"][0]):
        with av.open(path) as container:
            decoded.append(np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)]))
    captioned, plain = (frames.astype(int) for frames in decoded)
    assert captioned.shape == plain.shape and len(captioned) == result["episodes"][0]["length"] + 1
    top, bottom = np.abs(captioned[:, :14] - plain[:, :14]).mean(), np.abs(captioned[:, -12:] - plain[:, -12:]).mean()
    assert top > 20 and bottom < 3  # the caption band differs; below it the frames are the same up to compression


def test_run_ablations_on_the_same_seeds_gives_the_named_figures(tmp_path):
    made = []

    def make_evaluator(ablation: str) -> Evaluator:
        instructions = "heldout" if ablation == "heldout_paraphrases" else "train"
        envs = EvalEnvs(lambda n: make_colour_envs(n, instructions=instructions)(), max_episode_steps=30,
                        metric_keys=("proximity",))
        cfg = EvalRunConfig(policy_path="p", n_episodes=8, start_seed=300, n_envs=4, n_videos=1, output_dir="o",
                            ablations=["none"])
        made.append(ablation)
        return Evaluator.from_config(cfg, envs, ablation_dir(tmp_path, ablation), progress=False, ablation=ablation)

    order = ["none", "shuffled_instructions", "heldout_paraphrases", "blank_images"]
    results = run_ablations(ColourPolicy(), order, make_evaluator)
    assert made == order and list(results) == order
    assert all(e["task"].startswith("head for") for e in results["heldout_paraphrases"]["episodes"])
    assert {t.format("")[:8] for t in HELDOUT_TEMPLATES} == {"head for"}
    figures = ablation_figures(results, ["proximity"])
    assert figures["success_rate"] == 1.0 and figures["success_rate_heldout_paraphrases"] == 1.0
    assert figures["success_rate_shuffled_instructions"] == 0.0 and figures["success_rate_blank_images"] == 0.0
    assert figures["heldout_paraphrases_success_ratio"] == 1.0
    assert (figures["success_rate_blank_images_ci_low"], figures["success_rate_blank_images_ci_high"]) == \
        wilson_interval(0, 8)
    assert (figures["success_ci_low"], figures["success_ci_high"]) == wilson_interval(8, 8)
    assert figures["mean_proximity"] == results["none"]["mean_proximity"] and figures["n_episodes"] == 8
    info = json.loads(save_eval_info(tmp_path / "eval_info.json", eval_info(results, ["proximity"])).read_text())
    assert info["episodes"] == results["none"]["episodes"] and info["success_rate_blank_images"] == 0.0
    assert set(info["ablations"]) == set(order[1:]) and info["per_instruction"] == results["none"]["per_instruction"]
    assert info["ablations"]["blank_images"]["video_paths"] == [str(tmp_path / "blank_images" / "videos" /
                                                                    "episode_300.mp4")]
    assert results["none"]["video_paths"] == [str(tmp_path / "videos" / "episode_300.mp4")]


def test_ablation_names_are_checked():
    assert check_ablations(["none", "blank_images"]) == ("none", "blank_images")
    with pytest.raises(ValueError, match="ablations must be a non-empty list"):
        check_ablations(["none", "blank"])
    with pytest.raises(ValueError, match="twice"):
        check_ablations(["none", "none"])
    with pytest.raises(ValueError, match="ablations"):
        EvalRunConfig(policy_path="p", output_dir="o", ablations=["shuffled"])
    with pytest.raises(ValueError, match="heldout_env_kwargs"):
        EvalRunConfig(policy_path="p", output_dir="o", ablations=["heldout_paraphrases"], heldout_env_kwargs={})
    with pytest.raises(ValueError, match="ablation must be"):
        Evaluator.from_config(EvalRunConfig(policy_path="p", output_dir="o", n_videos=0),
                              EvalEnvs(lambda n: None, max_episode_steps=3), ablation="shuffle")
    assert gym.spec("test/ColourLine-v0").max_episode_steps == 30
