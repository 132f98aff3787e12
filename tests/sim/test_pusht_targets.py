"""The coloured-targets task: instruction sets, per-episode draws and splits, success geometry, the overhead image,
the expert on every instruction, and the env config through the factory."""

from __future__ import annotations

import re
from collections import Counter

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import sim
from sim.instructions import (
    COLOR_RGBA,
    COLORS,
    HELDOUT_COMBOS,
    HELDOUT_TEMPLATES,
    TRAIN_TEMPLATES,
    color_of,
    instructions,
)
from sim.pusht_targets import PushTTargetsEnv
from sim.pusht_targets_config import PushTTargetsConfig

STATE_ONLY = {"cameras": ()}  # no rendering: the tests that do not look at images run faster
FUNCTION_WORDS = {"the", "to", "on", "onto", "it", "is", "where", "should", "until", "over", "up", "{color}"}


def _env(**kwargs) -> PushTTargetsEnv:
    return PushTTargetsEnv(PushTTargetsConfig(**{**STATE_ONLY, **kwargs}), render_mode=None)


def _draws(env: PushTTargetsEnv, seeds) -> list[tuple[str, int, str, tuple[str, ...]]]:
    draws = []
    for seed in seeds:
        _, info = env.reset(seed=seed)
        draws.append((info["target_color"], info["target_slot"], info["task"], env.slot_colors))
    return draws


# ---------------------------------------------------------------------------------------------------- instructions
def test_instruction_sets_have_enough_paraphrases_and_held_out_ones_use_other_words():
    assert len(TRAIN_TEMPLATES) >= 6 and len(HELDOUT_TEMPLATES) >= 3

    def content(templates):
        return {w for t in templates for w in re.split(r"[\s-]+", t.lower())} - FUNCTION_WORDS

    assert content(TRAIN_TEMPLATES) & content(HELDOUT_TEMPLATES) == set()
    for color in COLORS:
        for split in ("train", "heldout"):
            assert all(color_of(text) == color for text in instructions(color, split))
    assert len({colour for colour, _ in HELDOUT_COMBOS}) == 4 and len({slot for _, slot in HELDOUT_COMBOS}) == 4
    with pytest.raises(ValueError, match="unknown colour 'purple'"):
        instructions("purple")


def test_registered_env_passes_gymnasium_check_env_and_observes_the_instruction():
    env = gym.make(sim.TARGETS_ENV_ID, render_mode=None)
    check_env(env.unwrapped, skip_render_check=True)
    obs, info = env.reset(seed=0)
    assert obs["task"] == info["task"] and color_of(obs["task"]) == info["target_color"]
    assert obs["observation.images.overhead"].shape == (64, 64, 3)
    state = obs["observation.environment_state"]
    assert state.shape == (6,)
    np.testing.assert_allclose(state[4:], env.unwrapped.slots[info["target_slot"]], atol=1e-6)
    env.close()


# ---------------------------------------------------------------------------------------------------- draws, splits
def test_training_episodes_draw_colours_uniformly_and_never_a_held_out_pair():
    draws = _draws(_env(), range(240))
    pairs = Counter((color, slot) for color, slot, _, _ in draws)
    assert not set(pairs) & set(HELDOUT_COMBOS)
    assert len(pairs) == 12  # every one of the 16 - 4 training pairs occurs
    colors = Counter(color for color, *_ in draws)
    assert set(colors) == set(COLORS) and min(colors.values()) >= 40  # 60 expected each
    assert {task for _, _, task, _ in draws} <= {t for c in COLORS for t in instructions(c, "train")}
    assert all(sorted(slots) == sorted(COLORS) and slots[slot] == color for color, slot, _, slots in draws)
    assert len({slots for *_, slots in draws}) > 12  # colours are permuted over the slots, not fixed


def test_held_out_splits_give_held_out_pairs_and_paraphrases():
    draws = _draws(_env(combos="heldout", instructions="heldout"), range(40))
    assert {(color, slot) for color, slot, _, _ in draws} <= set(HELDOUT_COMBOS)
    assert {color for color, *_ in draws} == set(COLORS)
    assert all(task in instructions(color, "heldout") for color, _, task, _ in draws)
    all_pairs = {(color, slot) for color, slot, _, _ in _draws(_env(combos="all"), range(200))}
    assert len(all_pairs) == 16


def test_pad_colours_follow_the_episode_permutation():
    env = _env()
    env.reset(seed=5)
    for geom, color in zip(env._pad_geoms, env.slot_colors):
        np.testing.assert_allclose(env.model.geom_rgba[geom], COLOR_RGBA[color])


def test_reset_is_a_function_of_the_seed_and_options_change_only_what_they_fix():
    env = _env()
    a, info_a = env.reset(seed=11)
    again, _ = env.reset(seed=11)
    assert a["task"] == again["task"]
    np.testing.assert_array_equal(a["observation.environment_state"], again["observation.environment_state"])
    options = {"color": "blue", "slot_colors": ("yellow", "blue", "red", "green"), "instruction": "go to red"}
    b, info_b = env.reset(seed=11, options=options)
    assert (b["task"], info_b["target_color"], info_b["target_slot"]) == ("go to red", "blue", 1)
    np.testing.assert_allclose(b["observation.environment_state"][4:], env.slots[1], atol=1e-6)
    np.testing.assert_array_equal(a["observation.environment_state"][:4], b["observation.environment_state"][:4])
    np.testing.assert_array_equal(a["observation.state"], b["observation.state"])
    c, info_c = env.reset(seed=11, options={"color": "green"})  # colour fixed, its slot drawn within the split
    assert info_c["target_color"] == "green" and ("green", info_c["target_slot"]) not in HELDOUT_COMBOS
    assert color_of(c["task"]) == "green"


def test_bad_reset_options_and_config_name_the_problem():
    env = _env()
    with pytest.raises(ValueError, match="color must be one of"):
        env.reset(seed=0, options={"color": "purple"})
    with pytest.raises(ValueError, match="slot_colors must be a permutation"):
        env.reset(seed=0, options={"slot_colors": ("red", "red", "blue", "green")})
    with pytest.raises(ValueError, match="longer than 96"):
        env.reset(seed=0, options={"instruction": "x" * 97})
    with pytest.raises(ValueError, match="env.instructions"):
        PushTTargetsConfig(instructions="test")
    with pytest.raises(ValueError, match="env.combos"):
        PushTTargetsConfig(combos="some")
    with pytest.raises(ValueError, match="env.slots"):
        PushTTargetsConfig(slots=[[0.5, 0.0], [0.52, 0.0], [0.6, 0.1], [0.6, -0.1]])


# ------------------------------------------------------------------------------------------------- success geometry
def _put_centroid(env: PushTTargetsEnv, xy, angle: float = 0.7) -> dict:
    c, s = np.cos(angle), np.sin(angle)
    cx, cy = env.shape.centroid
    env.set_block_pose(np.array([xy[0] - (c * cx - s * cy), xy[1] - (s * cx + c * cy), angle]))
    import mujoco

    mujoco.mj_forward(env.model, env.data)
    return env.observe()[1]


def test_success_is_the_t_centroid_within_the_radius_of_the_instructed_pad_at_any_angle():
    env = _env()
    _, info = env.reset(seed=2)
    assert not info["is_success"] and info["proximity"] == 0.0 and info["distance"] > 0.11
    target, other = env.slots[info["target_slot"]], env.slots[(info["target_slot"] + 1) % 4]
    on = _put_centroid(env, target, angle=2.5)
    assert on["is_success"] and on["distance"] == pytest.approx(0.0, abs=1e-9) and on["proximity"] == 1.0
    edge = _put_centroid(env, target + [0.0, 0.029])
    assert edge["is_success"] and edge["distance"] == pytest.approx(0.029, abs=1e-9)
    assert not _put_centroid(env, target + [0.031, 0.0])["is_success"]
    at_other = _put_centroid(env, other)
    assert not at_other["is_success"] and at_other["proximity"] == 0.0


def test_a_success_step_terminates_with_reward_one():
    env = _env()
    _, info = env.reset(seed=4)
    _put_centroid(env, env.slots[info["target_slot"]])
    _, reward, terminated, truncated, info = env.step(info["pusher_xy"])
    assert terminated and not truncated and info["is_success"] and reward == pytest.approx(1.0, abs=0.05)


# ------------------------------------------------------------------------------------------------------------- image
def _pixel(env: PushTTargetsEnv, xy, size: int) -> tuple[int, int]:
    """Row, column of the table point ``xy`` in the overhead image (pinhole model of the MuJoCo camera)."""
    cam = env.model.camera("overhead").id
    pos, rot = env.data.cam_xpos[cam], env.data.cam_xmat[cam].reshape(3, 3)
    local = rot.T @ (np.array([xy[0], xy[1], 0.001]) - pos)  # camera frame: x right, y up, looking along -z
    focal = size / 2 / np.tan(np.deg2rad(env.model.cam_fovy[cam]) / 2)
    return int(round(size / 2 - focal * local[1] / -local[2])), int(round(size / 2 + focal * local[0] / -local[2]))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pads_colours_are_told_apart_in_the_64x64_overhead_image(seed):
    env = PushTTargetsEnv(render_mode=None)
    obs, _ = env.reset(seed=seed)
    image = obs["observation.images.overhead"].astype(float)
    palette = np.array([COLOR_RGBA[c][:3] for c in COLORS])
    for slot, color in enumerate(env.slot_colors):
        row, col = _pixel(env, env.slots[slot], 64)
        rgb = image[row - 1:row + 2, col - 1:col + 2].reshape(-1, 3).mean(0) / 255
        rgb = rgb / np.linalg.norm(rgb)
        nearest = COLORS[int(np.argmax(palette @ rgb / np.linalg.norm(palette, axis=1)))]
        assert nearest == color, f"slot {slot}: pixel {rgb} looks {nearest}, pad is {color}"
        assert np.ptp(rgb) > 0.3  # saturated: not the grey table or the pale block
    env.close()


# ------------------------------------------------------------------------------------------------------------ expert
def test_expert_reaches_the_instructed_pad_for_every_colour():
    """Measured: 48/48 (1.00) over these seeds, 36 steps per episode on average."""
    env = _env()
    expert = sim.make_expert(env, sim.TargetsEnvConfig())
    wins: dict[str, list[bool]] = {c: [] for c in COLORS}
    for episode in range(48):
        color = COLORS[episode % 4]
        obs, info = env.reset(seed=1000 + episode, options={"color": color})
        expert.reset(seed=episode)
        done = False
        while not done:
            obs, _, terminated, truncated, info = env.step(expert.act(obs))
            done = terminated or truncated
        wins[color].append(info["is_success"])
    overall = np.mean([w for ws in wins.values() for w in ws])
    assert overall >= 0.9, wins
    assert all(np.mean(ws) >= 0.75 for ws in wins.values()), wins


# ----------------------------------------------------------------------------------------------------------- factory
def test_env_config_round_trips_through_a_saved_dict_and_builds_the_env():
    cfg = sim.TargetsEnvConfig(kwargs=PushTTargetsConfig(instructions="heldout", cameras=()))
    from dataclasses import asdict

    back = sim.env_config_from_dict(asdict(cfg))
    assert isinstance(back, sim.TargetsEnvConfig) and isinstance(back.kwargs, PushTTargetsConfig)
    assert back.kwargs.instructions == "heldout" and back.metric_keys == ["proximity"]
    env = sim.make_env(back, render_mode=None)
    _, info = env.reset(seed=0)
    assert info["task"] in instructions(info["target_color"], "heldout")
    assert set(back.metric_keys) <= set(info) and 0.0 <= info["proximity"] <= 1.0


def test_async_vector_env_returns_each_episodes_instruction():
    cfg = sim.TargetsEnvConfig(kwargs=PushTTargetsConfig(cameras=()))
    single = _env()
    expected = [single.reset(seed=seed)[0]["task"] for seed in (3, 4)]
    venv = sim.make_vector_env(cfg, 2, asynchronous=True)
    try:
        obs, info = venv.reset(seed=[3, 4])
        assert list(obs["task"]) == expected == list(info["task"])
        obs, *_ = venv.step(np.array([[0.35, 0.0], [0.35, 0.1]], np.float32))
        assert list(obs["task"]) == expected
    finally:
        venv.close()
