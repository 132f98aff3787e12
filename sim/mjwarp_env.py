"""PushT on MuJoCo Warp: N twin worlds behind gymnasium's VectorEnv API (``env.backend=mjwarp``).

The physics of all worlds runs on a Warp device (``sim.mjwarp.WarpWorlds``); the control around it is the single env's,
vectorised on the host: the action is clipped and rate-limited as ``PushTEnv.step`` does, the IK waypoints are solved
for all worlds at once (``sim.batched_ik.BatchedIK``), and reward, success and truncation are PushT's. Resets run the
MuJoCo C env's own reset (same seeds, same initial states) and copy its state into the world. Camera observations are
rendered for all worlds in one ``kernels.render.BatchRenderer`` launch from the Warp worlds' poses (a ray-caster:
its shading differs from MuJoCo's OpenGL images).

Not on this backend (``make_vector_env`` then falls back to MuJoCo C with a warning saying so): per-episode domain
randomisation of friction, mass and damping, the disturbance pushes, physics wrappers, and envs other than PushT.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

from sim.batched_ik import BatchedIK
from sim.ik import limit_joint_step
from sim.mjwarp import WarpUnavailable, WarpWorlds, state_of
from sim.pusht_config import PushTConfig
from sim.pusht_env import ARM_JOINTS, NOMINAL_POSTURE, PUSHER_DOWN, TASK, PushTEnv
from sim.pusht_geometry import quat_to_yaw


def check_supported(config: PushTConfig) -> None:
    """Raises WarpUnavailable naming the first setting of ``config`` the Warp backend does not implement."""
    if type(config) is not PushTConfig:
        raise WarpUnavailable(f"env.backend=mjwarp runs PushT only, not {type(config).__name__}")
    dr = config.randomization
    for name in ("friction_scale", "block_mass_scale", "joint_damping_scale"):
        if tuple(getattr(dr, name)) != (1.0, 1.0):
            raise WarpUnavailable(f"env.backend=mjwarp has no per-world domain randomisation yet "
                                  f"(env.kwargs.randomization.{name}={tuple(getattr(dr, name))})")
    for name in ("friction_scale_mean", "block_mass_scale_mean"):
        if getattr(dr, name) is not None:
            raise WarpUnavailable(f"env.backend=mjwarp has no per-world domain randomisation yet "
                                  f"(env.kwargs.randomization.{name}={getattr(dr, name)})")
    if dr.push_force > 0:
        raise WarpUnavailable("env.backend=mjwarp has no disturbance pushes yet (randomization.push_force > 0)")


class WarpVectorEnv(gym.vector.VectorEnv):
    """``num_envs`` PushT worlds on MuJoCo Warp (NEXT_STEP autoreset; observations and info keys of ``PushTEnv``).

    Args:
        config: the PushT config.
        num_envs: number of worlds.
        device: Warp device, ``auto`` (CUDA when present, else CPU), ``cpu`` or ``cuda[:N]``.

    Raises:
        WarpUnavailable: mujoco-warp missing, a setting not supported here (:func:`check_supported`), or a model
            feature MuJoCo Warp cannot run.
    """

    def __init__(self, config: PushTConfig, num_envs: int, device: str = "auto"):
        check_supported(config)
        self.config = config
        self.template = PushTEnv(replace(config, cameras=(), depth=False), render_mode=None)
        self.worlds = WarpWorlds(self.template.model, num_envs, device=device)
        self.ik = BatchedIK(self.template.model, "pusher_tip", ARM_JOINTS, posture=NOMINAL_POSTURE)
        self.num_envs = num_envs
        self.metadata = {**self.template.metadata, "autoreset_mode": AutoresetMode.NEXT_STEP}
        self.render_mode = None
        self.template.config = config
        self.single_observation_space = self.template._make_observation_space()
        self.template.config = replace(config, cameras=(), depth=False)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.single_action_space = self.template.action_space
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._n_ik = config.ik_substeps
        self._physics_per_ik = self.template._n_substeps // self._n_ik
        self._dt_ik = self._physics_per_ik * self.template.model.opt.timestep
        self._rngs: list[np.random.Generator | None] = [None] * num_envs
        self._joint_targets = np.zeros((num_envs, 7))
        self._joint_velocity = np.zeros((num_envs, 7))
        self._pusher_target = np.zeros((num_envs, 2))
        self._steps = np.zeros(num_envs, int)
        self._autoreset = np.zeros(num_envs, bool)
        self._renderer = None

    # ------------------------------------------------------------------------------------------------- reset
    def reset(self, *, seed: int | list[int | None] | None = None, options: dict[str, Any] | None = None):
        """Resets all worlds through the MuJoCo C env's reset (world ``i`` gets ``seed + i`` for an int seed)."""
        seeds = [None if seed is None else seed + i for i in range(self.num_envs)] if not isinstance(seed, list) \
            else seed
        if len(seeds) != self.num_envs:
            raise ValueError(f"seed must list num_envs={self.num_envs} seeds, got {len(seeds)}")
        infos = self._reset_worlds(np.arange(self.num_envs), seeds, options)
        obs, _ = self._observe()
        return obs, infos

    def _reset_worlds(self, indices: np.ndarray, seeds: list, options: dict | None) -> dict[str, Any]:
        """C-env resets of worlds ``indices``, their state copied to the Warp worlds; returns their infos batched."""
        env, rows, infos = self.template, [], {}
        for k, i in enumerate(indices):
            if seeds[k] is None:
                env._np_random = self._rngs[i]
            _, info = env.reset(seed=seeds[k], options=options)
            self._rngs[i] = env.np_random
            rows.append(state_of([env.data]))
            self._joint_targets[i] = env._joint_targets
            self._joint_velocity[i] = 0.0
            self._pusher_target[i] = env._pusher_target
            self._steps[i] = 0
            infos = self._add_info(infos, info, int(i))
        state = {name: np.concatenate([r[name] for r in rows]) for name in rows[0]}
        self.worlds.set_worlds(indices, state)
        self._autoreset[indices] = False
        return infos

    # -------------------------------------------------------------------------------------------------- step
    def step(self, actions: Any):
        """One control step of every world (worlds whose episode ended last step are reset instead)."""
        actions = np.asarray(actions, dtype=float).reshape(self.num_envs, -1)
        if not np.all(np.isfinite(actions)):
            raise ValueError("actions must be finite")
        cfg, resets = self.config, np.flatnonzero(self._autoreset)
        if cfg.action_mode == "pusher_xy":
            self._move_pusher(actions)
        else:
            self._joint_targets = np.clip(actions, self.single_action_space.low, self.single_action_space.high)
            self.worlds.set_ctrl(self._joint_targets)
            self.worlds.step(self.template._n_substeps)
        self._steps += 1
        obs, coverage = self._observe()
        if cfg.action_mode != "pusher_xy":
            self._pusher_target = obs["observation.state"].astype(float) if cfg.state else self._tip_xy()
        success = coverage >= cfg.success_threshold
        rewards = np.minimum(coverage / cfg.success_threshold, 1.0)
        truncated = self._steps >= cfg.max_episode_steps
        infos = self._infos(coverage)
        if len(resets):  # NEXT_STEP autoreset: these worlds start over; their step above is discarded
            reset_infos = self._reset_worlds(resets, [None] * len(resets), None)
            obs, _ = self._observe()
            success[resets], truncated[resets], rewards[resets] = False, False, 0.0
            for key, value in reset_infos.items():
                if not key.startswith("_"):
                    infos[key][resets] = value[resets]
        self._autoreset = success | truncated
        return obs, rewards, success, truncated, infos

    def _move_pusher(self, actions: np.ndarray) -> None:
        """The pusher_xy control of ``PushTEnv.step`` for all worlds: clip, rate-limit, IK waypoints, physics."""
        cfg = self.config
        start = self._pusher_target
        target = np.clip(actions, cfg.workspace_low, cfg.workspace_high)
        delta = target - start
        norm = np.linalg.norm(delta, axis=1, keepdims=True)
        scale = np.where(norm > cfg.max_pusher_step, cfg.max_pusher_step / np.maximum(norm, 1e-12), 1.0)
        target = start + delta * scale
        for k in range(1, self._n_ik + 1):
            waypoint = start + (target - start) * (k / self._n_ik)
            tip = np.column_stack([waypoint, np.full(self.num_envs, cfg.pusher_height)])
            solution = self.ik.solve(self._joint_targets, tip, PUSHER_DOWN)
            self._joint_targets = self._limit_joint_motion(solution)
            self.worlds.set_ctrl(self._joint_targets)
            self.worlds.step(self._physics_per_ik)
        self._pusher_target = target

    def _limit_joint_motion(self, desired: np.ndarray) -> np.ndarray:
        """``PushTEnv._limit_joint_motion`` for all worlds."""
        cfg = self.config
        targets, self._joint_velocity = limit_joint_step(
            desired, self._joint_targets, self._joint_velocity, self._dt_ik, cfg.joint_velocity_limit,
            cfg.joint_acceleration_limit)
        return targets

    # ------------------------------------------------------------------------------------------ observation
    def _tip_xy(self) -> np.ndarray:
        return self.worlds.field("site_xpos")[:, self.template._tip_site, :2].astype(float)

    def _block_poses(self) -> np.ndarray:
        adr = self.template._block_qpos
        qpos = self.worlds.field("qpos").astype(float)
        yaw = np.array([quat_to_yaw(q) for q in qpos[:, adr + 3 : adr + 7]])
        self._qpos = qpos
        return np.column_stack([qpos[:, adr], qpos[:, adr + 1], yaw])

    def _observe(self) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Batched observations of the worlds now, and each world's goal coverage."""
        cfg, env = self.config, self.template
        poses = self._block_poses()
        self._poses, self._tips = poses, self._tip_xy()
        coverage = np.array([env.shape.coverage(p, env._goal) for p in poses])
        obs: dict[str, np.ndarray] = {}
        if cfg.state:
            obs["observation.state"] = self._tips.astype(np.float32)
        if cfg.environment_state:
            obs["observation.environment_state"] = np.column_stack(
                [poses[:, :2], np.cos(poses[:, 2]), np.sin(poses[:, 2])]).astype(np.float32)
        if cfg.joints:
            obs["observation.joint_position"] = self._qpos[:, env.arm_qpos_adr].astype(np.float32)
            obs["observation.joint_velocity"] = self.worlds.field("qvel")[:, env.arm_dof_adr].astype(np.float32)
        if cfg.cameras:
            obs.update(self._render())
        return {k: obs[k] for k in self.single_observation_space.spaces}, coverage

    def _render(self) -> dict[str, np.ndarray]:
        """Camera images of all worlds in one BatchRenderer launch, from the Warp worlds' geom and camera poses."""
        cfg, w = self.config, self.worlds
        if self._renderer is None:
            from kernels.render import BatchRenderer

            self._renderer = BatchRenderer(self.template.model, list(cfg.cameras), *cfg.image_size,
                                           num_worlds=self.num_envs, device=w.device)
        n = self.num_envs
        self._renderer.update_from_arrays(w.field("geom_xpos"), w.field("geom_xmat").reshape(n, -1, 9),
                                          w.field("cam_xpos"), w.field("cam_xmat").reshape(n, -1, 9))
        result, out = self._renderer.render(), {}
        for c, cam in enumerate(cfg.cameras):
            out[f"observation.images.{cam}"] = result.rgb[:, c]
            if cfg.depth:
                out[f"observation.depth.{cam}"] = result.depth[:, c]
        return out

    def _infos(self, coverage: np.ndarray) -> dict[str, Any]:
        """PushTEnv's info keys, batched as gymnasium's vector infos (each with its ``_key`` mask)."""
        n, env = self.num_envs, self.template
        values = {
            "coverage": coverage,
            "is_success": coverage >= self.config.success_threshold,
            "block_pose": self._poses,
            "goal_pose": np.tile(env._goal, (n, 1)),
            "pusher_xy": self._tips,
            "joint_targets": self._joint_targets.copy(),
            "task": np.array([TASK] * n, dtype=object),
        }
        infos: dict[str, Any] = {}
        for key, value in values.items():
            infos[key], infos[f"_{key}"] = value, np.ones(n, bool)
        return infos

    def close_extras(self, **kwargs: Any) -> None:
        """Closes the template env."""
        self.template.close()
