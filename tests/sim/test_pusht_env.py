"""The PushT twin: gymnasium API, IK tracking, coverage geometry, seeding, randomisation and the expert."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from shapely.geometry import Polygon
from shapely.ops import unary_union

import sim
from sim.expert import ExpertConfig
from sim.pusht_config import DomainRandomizationConfig, PushTConfig
from sim.pusht_env import PushTEnv
from sim.pusht_geometry import TShape


def test_registered_env_passes_gymnasium_check_env():
    env = gym.make(sim.ENV_ID, render_mode=None)
    check_env(env.unwrapped, skip_render_check=True)
    env.close()


def test_image_and_joint_observations_have_declared_spaces():
    env = PushTEnv(PushTConfig(cameras=("overhead", "wrist"), depth=True, joints=True, image_size=(32, 40)))
    obs, _ = env.reset(seed=3)
    assert env.observation_space.contains(obs)
    assert obs["observation.images.overhead"].shape == (32, 40, 3)
    assert obs["observation.images.overhead"].std() > 5  # a real picture, not a blank frame
    depth = obs["observation.depth.overhead"]
    # The overhead camera is 0.85 m above the table: most pixels see the table top at about that depth.
    assert np.median(depth) == pytest.approx(0.85, abs=0.05)
    env.close()


def test_reset_is_deterministic_in_the_seed():
    env = PushTEnv()
    a, _ = env.reset(seed=7)
    b, _ = env.reset(seed=8)
    c, _ = env.reset(seed=7)
    np.testing.assert_array_equal(a["observation.environment_state"], c["observation.environment_state"])
    assert not np.array_equal(a["observation.environment_state"], b["observation.environment_state"])


def test_ik_tracks_pusher_targets_within_millimetres():
    env = PushTEnv()
    env.reset(seed=0, options={"block_pose": (0.55, 0.25, 0.0), "pusher_xy": (0.45, -0.1)})
    errors = []
    for target in [(0.45, -0.1), (0.6, -0.15), (0.7, -0.05), (0.35, -0.2), (0.5, -0.1)]:
        for _ in range(12):  # at most 5 cm per step, then settle
            env.step(np.array(target))
        errors.append(np.linalg.norm(env.pusher_xy - np.array(target)))
        tip_z = env.data.site_xpos[env._tip_site, 2]
        assert tip_z == pytest.approx(env.config.pusher_height, abs=0.002)
    assert max(errors) < 0.002, errors


def test_action_is_clipped_to_workspace_and_step_limit():
    env = PushTEnv()
    env.reset(seed=1, options={"block_pose": (0.55, 0.25, 0.0), "pusher_xy": (0.5, -0.1)})
    start = env.pusher_xy
    env.step(np.array([5.0, -5.0]))
    assert np.linalg.norm(env._pusher_target - start) <= env.config.max_pusher_step + 1e-6
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(3))
    with pytest.raises(ValueError, match="finite"):
        env.step(np.array([np.nan, 0.0]))


def _shapely_t(shape: TShape, pose) -> Polygon:
    return unary_union([Polygon(p) for p in shape.polygons(np.asarray(pose))])


def test_coverage_matches_shapely_reference():
    env = PushTEnv()
    rng = np.random.default_rng(0)
    goal = np.array(env.config.goal_pose)
    goal_poly = _shapely_t(env.shape, goal)
    assert env.shape.area == pytest.approx(goal_poly.area, rel=1e-9)
    for _ in range(200):
        pose = goal + rng.normal(0, [0.04, 0.04, 0.6])
        expected = _shapely_t(env.shape, pose).intersection(goal_poly).area / goal_poly.area
        assert env.shape.coverage(pose, goal) == pytest.approx(expected, abs=1e-9)
    assert env.shape.coverage(goal, goal) == pytest.approx(1.0)


def test_success_terminates_with_full_reward():
    env = PushTEnv()
    env.reset(seed=0, options={"block_pose": env.config.goal_pose, "pusher_xy": (0.35, 0.2)})
    _, reward, terminated, truncated, info = env.step(np.array([0.35, 0.2]))
    assert terminated and not truncated and info["is_success"] and reward == pytest.approx(1.0)


def test_domain_randomization_scales_physics_within_ranges_and_restores():
    dr = DomainRandomizationConfig(friction_scale=(0.5, 0.6), block_mass_scale=(2.0, 3.0), joint_damping_scale=(4, 5))
    env = PushTEnv(PushTConfig(randomization=dr))
    nominal = PushTEnv()
    block = env.model.body("block").id
    for seed in range(3):
        env.reset(seed=seed)
        p = env.physics_params
        assert 0.5 <= p["friction_scale"] <= 0.6 and 2.0 <= p["block_mass_scale"] <= 3.0
        assert env.model.body_mass[block] == pytest.approx(nominal.model.body_mass[block] * p["block_mass_scale"])
        table = env.model.geom("table").id
        assert env.model.geom_friction[table, 0] == pytest.approx(
            nominal.model.geom_friction[table, 0] * p["friction_scale"]
        )
    with pytest.raises(ValueError, match="randomization.friction_scale"):
        DomainRandomizationConfig(friction_scale=(1.0, 0.5))


def test_normal_draws_follow_their_mean_and_std_clipped_to_the_range():
    dr = DomainRandomizationConfig(friction_scale=(0.5, 0.9), friction_scale_mean=0.7, friction_scale_std=0.05,
                                   block_mass_scale=(1.0, 1.2), block_mass_scale_mean=1.1, block_mass_scale_std=0.5)
    rng = np.random.default_rng(0)
    friction = np.array([dr.draw_scale("friction_scale", rng) for _ in range(4000)])
    mass = np.array([dr.draw_scale("block_mass_scale", rng) for _ in range(4000)])
    assert friction.mean() == pytest.approx(0.7, abs=0.005) and friction.std() == pytest.approx(0.05, rel=0.05)
    assert mass.min() == 1.0 and mass.max() == 1.2  # a wide normal, clipped to its range
    assert np.mean(mass == 1.2) == pytest.approx(0.42, abs=0.03)  # P(N(1.1, 0.5) > 1.2) = 0.42
    env = PushTEnv(PushTConfig(randomization=dr), render_mode=None)
    drawn = []
    for seed in range(20):
        env.reset(seed=seed)
        drawn.append(env.physics_params["friction_scale"])
    assert 0.6 < np.mean(drawn) < 0.8 and np.std(drawn) > 0.02
    uniform = DomainRandomizationConfig(friction_scale=(0.5, 0.9))  # without a mean: uniform, as before
    assert uniform.draw_scale("friction_scale", np.random.default_rng(3)) == np.random.default_rng(3).uniform(0.5, 0.9)
    with pytest.raises(ValueError, match=r"randomization.friction_scale_mean \(1.5\) must lie in"):
        DomainRandomizationConfig(friction_scale=(0.5, 0.9), friction_scale_mean=1.5)
    with pytest.raises(ValueError, match="randomization.block_mass_scale_std"):
        DomainRandomizationConfig(block_mass_scale_std=-0.1)


def test_push_force_std_draws_each_episode_its_push_size():
    dr = DomainRandomizationConfig(push_force=1.5, push_force_std=0.3)
    env = PushTEnv(PushTConfig(randomization=dr), render_mode=None)
    forces = []
    for seed in range(30):
        env.reset(seed=seed)
        forces.append(env._pushes.force)
    assert np.mean(forces) == pytest.approx(1.5, abs=0.2) and np.std(forces) == pytest.approx(0.3, rel=0.35)
    env = PushTEnv(PushTConfig(randomization=DomainRandomizationConfig(push_force=1.5)), render_mode=None)
    env.reset(seed=0)
    assert env._pushes.force == 1.5


def test_pushes_move_the_block_without_changing_the_initial_state():
    pushed = PushTEnv(PushTConfig(randomization=DomainRandomizationConfig(push_force=1.5, push_interval=(0.5, 0.5))),
                      render_mode=None)
    calm = PushTEnv(render_mode=None)
    obs_pushed, _ = pushed.reset(seed=3)
    obs_calm, _ = calm.reset(seed=3)
    np.testing.assert_array_equal(obs_pushed["observation.environment_state"], obs_calm["observation.environment_state"])
    hold = calm.pusher_xy  # the pusher stays put: only a push can move the block
    for _ in range(12):  # 1.2 s: pushes at 0.5 s and 1.0 s
        pushed.step(hold)
        calm.step(hold)
    assert pushed.n_pushes == 2 and calm.n_pushes == 0
    moved = np.linalg.norm(pushed.block_pose[:2] - calm.block_pose[:2])
    assert 0.005 < moved < 0.2  # 1.5 N for 0.1 s on a 0.2 kg block slides it centimetres, not off the table
    with pytest.raises(ValueError, match="randomization.push_force"):
        DomainRandomizationConfig(push_force=-1.0)


def test_bad_config_names_the_field():
    with pytest.raises(ValueError, match="env.action_mode"):
        PushTConfig(action_mode="torque")
    with pytest.raises(ValueError, match="unknown camera"):
        PushTConfig(cameras=("top",))
    with pytest.raises(KeyError, match="nope"):
        PushTEnv().render_camera("nope", (8, 8))


def _expert_success(env_cfg: sim.EnvConfig, seeds) -> float:
    env = sim.make_env(env_cfg, render_mode=None)
    expert = sim.make_expert(env, env_cfg)
    wins = 0
    for seed in seeds:
        obs, info = env.reset(seed=seed)
        expert.reset(seed=seed)
        done = False
        while not done:
            obs, _, terminated, truncated, info = env.step(expert.act(obs))
            done = terminated or truncated
        wins += info["is_success"]
    return wins / len(seeds)


def test_expert_succeeds_on_listed_evaluation_seeds():
    assert _expert_success(sim.EnvConfig(), range(100000, 100010)) >= 0.8


def test_expert_path_check_matches_dense_sampling_and_stays_bounded_for_a_block_far_away(monkeypatch):
    env = sim.make_env(sim.EnvConfig(), render_mode=None)
    expert = sim.make_expert(env, sim.EnvConfig())
    shape = expert.shape

    def dense(a, b, margin):  # every 1 mm along the whole segment
        pts = a + (b - a) * np.linspace(0, 1, max(2, int(np.linalg.norm(b - a) / 0.001) + 1))[:, None]
        return not np.any(shape.contains(pts, margin=margin))

    rng = np.random.default_rng(0)
    cases = [(rng.uniform(-0.3, 0.3, 2), rng.uniform(-0.3, 0.3, 2), rng.uniform(0, 0.03)) for _ in range(2000)]
    cases += [(a, a, m) for a, _, m in cases[:200]]  # a pusher standing still
    far = [rng.uniform(3, 10) * np.array([np.cos(t), np.sin(t)]) for t in rng.uniform(-np.pi, np.pi, 200)]
    cases += [(f, b, m) for f, (_, b, m) in zip(far, cases)]  # from metres away: the clipped path
    agree = np.mean([expert._segment_clear(a, b, m) == dense(a, b, m) for a, b, m in cases])
    assert agree >= 0.99, agree  # both sample; they differ only on segments grazing a corner between samples
    # A block shoved off the table ends up metres away (or, falling, kilometres): the check samples only near the T.
    sampled = []
    contains = TShape.contains
    monkeypatch.setattr(TShape, "contains", lambda self, pts, margin=0.0: sampled.append(len(np.atleast_2d(pts)))
                        or contains(self, pts, margin))
    assert expert._segment_clear(np.array([0.2, 0.0]), np.array([4e5, 3e5]))
    assert not expert._segment_clear(np.array([-1e4, 0.0]), np.array([1e4, 0.0]), margin=0.01)  # through the T
    assert max(sampled) < 200, sampled


def test_noisy_expert_is_worse_but_not_useless():
    noisy = sim.EnvConfig(expert=ExpertConfig(noise_std=0.02, random_contact_prob=0.3))
    rate = _expert_success(noisy, range(100000, 100030))
    # Worse than the clean expert's >= 0.8, yet it still finishes some: a pusher that never reached the goal would
    # score 0. Measured 0.17 over these 30 seeds (MuJoCo 4.0.1; its random contacts make single episodes chaotic: the
    # first 10 seeds alone gave 0.3 with an earlier package set and 0.1 now), so 30 seeds and a bound of 0.1.
    assert 0.1 <= rate < 0.8, rate


def test_joint_action_mode_holds_commanded_joints():
    env = PushTEnv(PushTConfig(action_mode="joint_pos", joints=True))
    obs, info = env.reset(seed=0)
    target = info["joint_targets"] + np.array([0.05, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    for _ in range(5):
        obs, *_ = env.step(target.astype(np.float32))
    np.testing.assert_allclose(obs["observation.joint_position"], target, atol=2e-3)


def test_vector_env_worlds_match_single_envs_with_the_same_seeds_and_actions():
    cfg = sim.EnvConfig()
    seeds = [5, 6]
    envs = sim.make_vector_env(cfg, len(seeds))
    singles = [sim.make_env(cfg, render_mode=None) for _ in seeds]
    try:
        obs, _ = envs.reset(seed=seeds)
        single_obs = [env.reset(seed=seed)[0] for env, seed in zip(singles, seeds)]
        assert not np.array_equal(*(o["observation.environment_state"] for o in single_obs))  # two different worlds
        rng = np.random.default_rng(0)
        for _ in range(5):
            actions = obs["observation.state"] + rng.uniform(-0.03, 0.03, obs["observation.state"].shape)
            obs, reward, terminated, truncated, _ = envs.step(actions.astype(np.float32))
            steps = [env.step(a) for env, a in zip(singles, actions.astype(np.float32))]
            for i, (o, r, term, trunc, _) in enumerate(steps):
                for key in o:
                    np.testing.assert_array_equal(obs[key][i], o[key], err_msg=f"world {i}, {key}")
                assert (reward[i], terminated[i], truncated[i]) == (r, term, trunc)
    finally:
        envs.close()
        for env in singles:
            env.close()
