"""Batched PushT worlds (sim.vector.BatchedVectorEnv) against N sequential single envs, and the vector config seam."""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium.vector import SyncVectorEnv

import sim
from sim.factory import EnvConfig, make_vector_env
from sim.pusht_config import DomainRandomizationConfig, PushTConfig
from sim.vector import BatchedVectorEnv


def _rollout(envs, actions: np.ndarray, seed: int) -> list:
    out = [envs.reset(seed=seed)]
    out += [envs.step(a) for a in actions]
    envs.close()
    return out


def _assert_same(a, b, atol: float) -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            _assert_same(a[key], b[key], 0.0 if "images" in key else atol)
    elif isinstance(a, (tuple, list)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _assert_same(x, y, atol)
    elif np.asarray(a).dtype.kind in "fc":
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=atol)
    else:
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize(("cameras", "vectorised_ik"), [((), True), ((), False), (("overhead",), True)])
def test_batched_worlds_give_the_results_of_n_sequential_single_envs(cameras, vectorised_ik):
    # Each world is a full PushTEnv with its own MjModel (randomised), MjData and IK data; the threads only decide
    # which core steps it, and MuJoCo is deterministic. Without vectorised IK the results must be bit-identical
    # (tolerance 0). With it, the batched solve sums in another order (~1e-15 rad in the joint targets, see
    # test_batched_ik), which the physics carries over 8 steps to far below the float32 observations' resolution:
    # 1e-6 (m, and reward units) is ~10 float32 ulps at these magnitudes; images must still be identical. Through
    # terminations, truncations and NEXT_STEP autoresets (max_episode_steps=3 forces two of them in 8 steps).
    kwargs = PushTConfig(max_episode_steps=3, cameras=cameras, image_size=(24, 24), joints=True,
                         randomization=DomainRandomizationConfig(friction_scale=(0.6, 1.0), push_force=1.5))
    cfg = EnvConfig(kwargs=kwargs, vector_threads=2)
    rng = np.random.default_rng(0)
    actions = rng.uniform(kwargs.workspace_low, kwargs.workspace_high, (8, 3, 2)).astype(np.float32)
    batched = make_vector_env(cfg, 3, backend="batched")
    if not vectorised_ik:
        batched = BatchedVectorEnv(batched.env_fns[0], 3, kwargs, n_threads=2, vectorised_ik=False)
    assert isinstance(batched, BatchedVectorEnv) and batched.n_threads == 2
    got = _rollout(batched, actions, seed=5)
    want = _rollout(make_vector_env(cfg, 3, backend="sync"), actions, seed=5)
    _assert_same(got, want, 0.0 if not vectorised_ik else 1e-6)
    truncations = np.array([step[3] for step in got[1:]])
    assert truncations[:, 0].tolist() == [False, False, True, False, False, False, True, False]


def test_the_targets_task_goes_through_the_batched_path():
    # the language task observes its instruction (a Text space) and has its own outcome; same tolerance as above
    cfg = sim.env_config_from_dict({"id": sim.TARGETS_ENV_ID, "kwargs": {"max_episode_steps": 3, "image_size": [16, 16]}})
    rng = np.random.default_rng(1)
    actions = rng.uniform(cfg.kwargs.workspace_low, cfg.kwargs.workspace_high, (5, 2, 2)).astype(np.float32)
    got = _rollout(make_vector_env(cfg, 2, backend="batched"), actions, seed=2)
    want = _rollout(make_vector_env(cfg, 2, backend="sync"), actions, seed=2)
    _assert_same(got, want, 1e-6)
    assert len(set(got[0][0]["task"])) >= 1 and all(isinstance(s, str) for s in got[-1][0]["task"])


def test_batch_renderer_images_come_through_the_batched_path():
    kwargs = PushTConfig(state=False, environment_state=False, cameras=("overhead",), image_size=(32, 32), depth=True)
    envs = make_vector_env(EnvConfig(kwargs=kwargs, vector_renderer="batch"), 4, backend="batched")
    obs, _ = envs.reset(seed=0)
    envs.close()
    assert set(obs) == {"observation.images.overhead", "observation.depth.overhead"}
    assert obs["observation.images.overhead"].shape == (4, 32, 32, 3)
    assert obs["observation.images.overhead"].dtype == np.uint8
    depth = obs["observation.depth.overhead"]
    assert depth.shape == (4, 32, 32)
    # the overhead camera looks down at the table: every pixel hits something within a metre or two
    assert 0.1 < float(depth.min()) and float(depth.max()) < 3.0
    # worlds start from different block poses, so their images differ
    assert np.abs(obs["observation.images.overhead"][0].astype(int) - obs["observation.images.overhead"][1]).sum() > 0


def test_the_env_config_picks_the_vector_backend():
    envs = make_vector_env(EnvConfig(vector="batched"), 2)
    assert isinstance(envs, BatchedVectorEnv)
    envs.close()
    envs = make_vector_env(EnvConfig(), 2, asynchronous=False)
    assert isinstance(envs, SyncVectorEnv) and not isinstance(envs, BatchedVectorEnv)
    envs.close()
    with pytest.raises(ValueError, match="env.vector must be one of"):
        EnvConfig(vector="threads")
    with pytest.raises(ValueError, match="env.backend must be one of"):
        EnvConfig(backend="mjx")
    with pytest.raises(ValueError, match="backend must be one of"):
        make_vector_env(EnvConfig(), 2, backend="ray")
    assert sim.env_config_from_dict({"vector": "batched", "vector_threads": 2}).vector == "batched"


def test_mjwarp_falls_back_to_mujoco_c_with_a_message_when_it_cannot_run():
    kwargs = PushTConfig(randomization=DomainRandomizationConfig(push_force=1.5))
    with pytest.warns(RuntimeWarning, match="no disturbance pushes yet.*MuJoCo C instead"):
        envs = make_vector_env(EnvConfig(kwargs=kwargs, backend="mjwarp"), 2, backend="sync")
    assert isinstance(envs, SyncVectorEnv)
    envs.close()
