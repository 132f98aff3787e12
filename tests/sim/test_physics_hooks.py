"""PushTEnv's extension points: physics wrappers (composed in order, removable) and read-only state accessors."""

from __future__ import annotations

import numpy as np
import pytest

import sim  # noqa: F401  (head-less rendering default)
from sim.pusht_env import PushTEnv


def test_physics_wrappers_compose_last_outermost_and_unwrap():
    env = PushTEnv()
    env.reset(seed=0)
    calls = []

    def tagged(tag):
        def wrapper(inner, n_steps):
            calls.append((tag, n_steps))
            inner(n_steps)
        return wrapper

    unwrap_inner = env.wrap_physics(tagged("inner"))
    env.wrap_physics(tagged("outer"))
    t0 = env.data.time
    env.advance_physics(3)
    assert calls == [("outer", 3), ("inner", 3)]
    assert env.data.time == pytest.approx(t0 + 3 * env.model.opt.timestep)
    unwrap_inner()
    calls.clear()
    env.step(env.pusher_xy)
    assert {tag for tag, _ in calls} == {"outer"}
    assert sum(n for _, n in calls) == round(1 / (env.config.control_hz * env.model.opt.timestep))


def test_a_wrapper_that_skips_the_physics_stops_the_simulation():
    env = PushTEnv()
    env.reset(seed=0)
    env.wrap_physics(lambda inner, n_steps: None)
    t0, q0 = env.data.time, env.data.qpos.copy()
    env.advance_physics(10)
    assert env.data.time == t0
    np.testing.assert_array_equal(env.data.qpos, q0)


def test_observe_reads_the_state_without_stepping_and_arm_addresses_are_read_only():
    env = PushTEnv()
    obs, info = env.reset(seed=3)
    t0 = env.data.time
    again, again_info = env.observe()
    assert env.data.time == t0
    for key, value in obs.items():
        np.testing.assert_array_equal(again[key], value)
    np.testing.assert_array_equal(again_info["block_pose"], info["block_pose"])
    assert len(env.arm_qpos_adr) == len(env.arm_dof_adr) == 7
    with pytest.raises(ValueError, match="read-only"):
        env.arm_qpos_adr[0] = 0
