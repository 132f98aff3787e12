"""env.backend=mjwarp on Warp's CPU device: agreement with MuJoCo C and the expert's success (needs mujoco-warp)."""

from __future__ import annotations

import numpy as np
import pytest

import sim
from sim.factory import EnvConfig, make_expert, make_vector_env

pytest.importorskip("mujoco_warp")

from sim.mjwarp_env import WarpVectorEnv  # noqa: E402

# First use compiles MuJoCo Warp's kernels for the CPU (minutes; then cached at WARP_CACHE_PATH).
CFG = EnvConfig(backend="mjwarp", mjwarp_device="cpu")


def test_a_short_rollout_agrees_with_mujoco_c():
    """Two worlds, 30 expert control steps (the pusher reaches the block at step ~24 for seed 1) from the C env's own
    resets, the same actions in both engines.

    Tolerances: before contact both follow the same joint targets to ~1e-7 m (Warp runs float32); the pusher tip stays
    within 0.1 mm. At impact, MuJoCo Warp's float32 contact solve differs slightly from C's float64 one, and the block
    ends up to ~1.2 mm / 0.015 rad apart after the push (measured); we allow 3 mm and 0.03 rad (1.7 deg), well inside
    the twin's own sync budget (5 mm / 3 deg).
    """
    envs = make_vector_env(CFG, 2)
    assert isinstance(envs, WarpVectorEnv) and envs.worlds.device == "cpu"
    singles = [sim.make_env(CFG, render_mode=None) for _ in range(2)]
    obs_w, _ = envs.reset(seed=1)
    obs_c = [env.reset(seed=1 + i)[0] for i, env in enumerate(singles)]
    np.testing.assert_allclose(obs_w["observation.environment_state"],
                               np.stack([o["observation.environment_state"] for o in obs_c]), atol=1e-6)
    experts = [make_expert(env, CFG) for env in singles]
    start = np.stack([env.unwrapped.block_pose for env in singles])
    for _ in range(30):
        actions = np.stack([expert.act(o) for expert, o in zip(experts, obs_c)])
        results = [env.step(a) for env, a in zip(singles, actions)]
        obs_c = [r[0] for r in results]
        _, rewards, terminated, _, info = envs.step(actions)
        poses = np.stack([r[4]["block_pose"] for r in results])
        np.testing.assert_allclose(info["block_pose"][:, :2], poses[:, :2], atol=3e-3)
        np.testing.assert_allclose(info["block_pose"][:, 2], poses[:, 2], atol=0.03)
        np.testing.assert_allclose(info["pusher_xy"], np.stack([r[4]["pusher_xy"] for r in results]), atol=1e-4)
        np.testing.assert_allclose(rewards, [r[1] for r in results], atol=0.05)
        assert terminated.tolist() == [r[2] for r in results]
    # the comparison covered contact: the expert pushed a block by more than 5 mm or 0.05 rad
    moved = np.abs(poses - start)
    assert (moved[:, :2].max() > 5e-3) or (moved[:, 2].max() > 0.05)
    envs.close()


@pytest.mark.slow
def test_the_expert_succeeds_on_mjwarp():
    envs = make_vector_env(CFG, 1)
    expert = make_expert(envs.template, CFG)
    obs, _ = envs.reset(seed=3)
    for _ in range(300):
        obs, _, terminated, truncated, info = envs.step(expert.act({k: v[0] for k, v in obs.items()})[None])
        if terminated[0] or truncated[0]:
            break
    assert terminated[0] and info["coverage"][0] >= CFG.kwargs.success_threshold
    envs.close()
