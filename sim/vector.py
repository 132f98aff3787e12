"""Batched PushT worlds on CPU: N twin worlds stepped in one call on a thread pool, behind gymnasium's VectorEnv API.

Each world is a full :class:`~sim.pusht_env.PushTEnv` (its own ``MjModel`` for domain randomisation, ``MjData`` and IK
scratch data). For ``pusher_xy`` actions ``BatchedVectorEnv.step`` runs the single env's control for all worlds at
once: one vectorised IK solve per waypoint (``sim.batched_ik``, where a step spent most of its time), then the
physics of the worlds on a thread pool, one contiguous chunk per thread (MuJoCo releases the GIL inside ``mj_step``).
Otherwise each thread runs its worlds' own ``step``. (Measured on the 2-core machine: ``mujoco.rollout`` over the
worlds' substeps was no faster than the threads and needs a full-state copy in and out per IK substep.) Camera
observations are rendered after the physics, for all worlds, by MuJoCo's renderer world by world (``renderer="mujoco"``,
the same images as the single env) or by ``kernels.render.BatchRenderer`` in one Warp launch (``renderer="batch"``: a
ray-caster whose shading differs from MuJoCo's OpenGL images; depth and geometry agree).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from copy import deepcopy
from dataclasses import replace
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, SyncVectorEnv
from gymnasium.vector.utils import batch_space, concatenate, create_empty_array, iterate

from sim.batched_ik import BatchedIK
from sim.pusht_env import ARM_JOINTS, PUSHER_DOWN, PushTEnv

RENDERERS = ("mujoco", "batch")


def strip_cameras(config: Any) -> Any:
    """``config`` (a PushTConfig or subclass) without camera observations: the worlds' own steps then render nothing.
    A camera-only config keeps the pusher state so the world observes something (the vector env drops that key)."""
    keep_state = config.state or not (config.environment_state or config.joints)
    return replace(config, cameras=(), depth=False, state=keep_state)


class BatchedVectorEnv(SyncVectorEnv):
    """``num_envs`` PushT worlds stepped together on ``n_threads`` threads (gymnasium NEXT_STEP autoreset).

    Observations, rewards, terminations, truncations and infos are those of :class:`gymnasium.vector.SyncVectorEnv`
    over the same envs (same seeds and actions give the same values with ``renderer="mujoco"``: bit for bit without
    ``vectorised_ik``, to float rounding with it): the step after the one that ended a world's episode resets it and
    ignores its action.

    Args:
        make_world: builds one world; it must observe no camera (see :func:`strip_cameras`).
        num_envs: number of worlds.
        full_config: the env config as the user gave it; its ``cameras`` / ``depth`` / ``image_size`` are rendered
            here after each step, for all worlds at once.
        n_threads: worker threads; 0 = one per CPU core (capped at ``num_envs``).
        renderer: ``mujoco`` (MuJoCo's renderer per world, as the single env) or ``batch`` (Warp BatchRenderer,
            one launch for all worlds and cameras; images differ from MuJoCo's shading).
        vectorised_ik: for ``pusher_xy`` actions, solve every world's IK in one batched call per waypoint
            (:class:`~sim.batched_ik.BatchedIK`: the same solution to float rounding) and run only the physics on the
            threads; False: each thread runs its worlds' own ``step`` (bit-identical to the single env).

    Raises:
        ValueError: on ``num_envs < 1``, ``n_threads < 0`` or an unknown ``renderer``.
    """

    def __init__(self, make_world: Callable[[], gym.Env], num_envs: int, full_config: Any, n_threads: int = 0,
                 renderer: str = "mujoco", vectorised_ik: bool = True):
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        if n_threads < 0:
            raise ValueError(f"env.vector_threads must be >= 0 (0: one per core), got {n_threads}")
        if renderer not in RENDERERS:
            raise ValueError(f"env.vector_renderer must be one of {RENDERERS}, got {renderer!r}")
        super().__init__([make_world] * num_envs, autoreset_mode=AutoresetMode.NEXT_STEP)
        self.worlds = [env.unwrapped for env in self.envs]
        self.cameras = tuple(full_config.cameras)
        self.depth = bool(full_config.depth)
        self.image_size = tuple(int(s) for s in full_config.image_size)
        self.renderer = renderer
        self._batch_renderer = None
        if self.cameras:
            self.single_observation_space = self._full_observation_space(full_config)
            self.observation_space = batch_space(self.single_observation_space, self.num_envs)
            self._observations = create_empty_array(self.single_observation_space, n=self.num_envs)
        n_threads = n_threads or os.cpu_count() or 1
        self.n_threads = min(n_threads, self.num_envs)
        chunks = np.array_split(np.arange(self.num_envs), self.n_threads)
        self._chunks = [c.tolist() for c in chunks if len(c)]
        self._pool = ThreadPoolExecutor(self.n_threads, thread_name_prefix="pusht-world") if self.n_threads > 1 else None
        self._ik = None
        # (only for envs that keep PushTEnv's step, whose control _move_pushers reproduces)
        if vectorised_ik and full_config.action_mode == "pusher_xy" and type(self.worlds[0]).step is PushTEnv.step:
            ik = self.worlds[0].ik
            self._ik = BatchedIK(self.worlds[0].model, "pusher_tip", ARM_JOINTS, damping=ik.damping,
                                 posture=ik.posture, posture_gain=ik.posture_gain)

    def _full_observation_space(self, full_config: Any) -> gym.spaces.Dict:
        """The single env's observation space with the cameras (built from the world's, keys in the env's order)."""
        world = self.worlds[0]
        stripped = world.config
        world.config = full_config
        try:
            return world._make_observation_space()
        finally:
            world.config = stripped

    # ------------------------------------------------------------------------------------------------- reset
    def reset(self, *, seed: int | list[int | None] | None = None, options: dict[str, Any] | None = None):
        """Resets every world, or those of ``options["reset_mask"]`` (seeds as SyncVectorEnv: an int ``s`` seeds world
        ``i`` with ``s + i``). Raises ValueError on a seed list of the wrong length."""
        if seed is None or isinstance(seed, int):
            seed = [None if seed is None else seed + i for i in range(self.num_envs)]
        if len(seed) != self.num_envs:
            raise ValueError(f"seed must list num_envs={self.num_envs} seeds, got {len(seed)}")
        options = dict(options or {})
        mask = np.asarray(options.pop("reset_mask", np.ones(self.num_envs, bool)), dtype=bool)
        if mask.shape != (self.num_envs,) or not mask.any():
            raise ValueError(f"options['reset_mask'] must be a bool array of shape ({self.num_envs},) with a True")
        infos: dict[str, Any] = {}
        for i in np.flatnonzero(mask):
            self._env_obs[i], info = self.envs[i].reset(seed=seed[i], options=options or None)
            infos = self._add_info(infos, info, i)
        self._terminations[mask] = self._truncations[mask] = self._autoreset_envs[mask] = False
        self._add_images(np.flatnonzero(mask))
        return self._batched_observations(), infos

    # -------------------------------------------------------------------------------------------------- step
    def step(self, actions: Any):
        """Steps all worlds in one call (the threads step their chunks); returns gymnasium's batched results.

        Raises:
            ValueError: from a world, on a wrong-shaped or non-finite action.
        """
        actions = list(iterate(self.action_space, actions))
        if self._ik is not None:
            results = self._step_vectorised(actions)
        elif self._pool is None:
            results = self._step_chunk(list(range(self.num_envs)), actions)
        else:
            parts = self._pool.map(self._step_chunk, self._chunks, [actions] * len(self._chunks))
            results = [r for part in parts for r in part]
        infos: dict[str, Any] = {}
        for i, (obs, reward, terminated, truncated, info) in enumerate(results):
            self._env_obs[i] = obs
            self._rewards[i], self._terminations[i], self._truncations[i] = reward, terminated, truncated
            infos = self._add_info(infos, info, i)
        self._add_images(range(self.num_envs))
        self._autoreset_envs = np.logical_or(self._terminations, self._truncations)
        return (self._batched_observations(), np.copy(self._rewards), np.copy(self._terminations),
                np.copy(self._truncations), infos)

    def _step_vectorised(self, actions: Sequence[Any]) -> list[tuple]:
        """``PushTEnv.step`` (pusher_xy) for all worlds at once: one batched IK solve per waypoint for every world
        (``BatchedIK``), the physics of each IK substep on the threads, then each world's outcome and observation."""
        out: list[tuple | None] = [None] * self.num_envs
        live = []
        for i, world in enumerate(self.worlds):
            if self._autoreset_envs[i]:
                obs, info = self.envs[i].reset()
                out[i] = (obs, 0.0, False, False, info)
                continue
            action = np.asarray(actions[i], dtype=float)
            if action.shape != world.action_space.shape or not np.all(np.isfinite(action)):
                raise ValueError(f"action {i} must be finite with shape {world.action_space.shape}, got {action}")
            live.append(i)
        if live:
            self._move_pushers([self.worlds[i] for i in live], np.stack([actions[i] for i in live]).astype(float))
        for i in live:
            world = self.worlds[i]
            world._steps += 1
            reward, success, info = world._outcome()
            truncated = world._steps >= world.config.max_episode_steps
            out[i] = (world._observation(), reward, success, truncated, info)
        return out

    def _move_pushers(self, worlds: list, actions: np.ndarray) -> None:
        """The pusher_xy control of ``PushTEnv.step`` for ``worlds``: clip and rate-limit the targets, then per IK
        substep one batched solve, each world's joint-motion limit and the worlds' physics on the threads."""
        cfg = worlds[0].config
        start = np.stack([w._pusher_target for w in worlds])
        target = np.clip(actions, cfg.workspace_low, cfg.workspace_high)
        delta = target - start
        norm = np.linalg.norm(delta, axis=1, keepdims=True)
        target = np.where(norm > cfg.max_pusher_step, start + delta * (cfg.max_pusher_step / np.maximum(norm, 1e-300)),
                          target)
        n_ik = cfg.ik_substeps
        physics = worlds[0]._n_substeps // n_ik
        dt = physics * worlds[0].model.opt.timestep
        chunks = [c.tolist() for c in np.array_split(np.arange(len(worlds)), self.n_threads) if len(c)]
        for k in range(1, n_ik + 1):
            waypoint = start + (target - start) * (k / n_ik)
            tips = np.column_stack([waypoint, np.full(len(worlds), cfg.pusher_height)])
            solution = self._ik.solve(np.stack([w._joint_targets for w in worlds]), tips, PUSHER_DOWN)
            for w, q in zip(worlds, solution):
                w._joint_targets = w._limit_joint_motion(q, dt)
                w.data.ctrl[:] = w._joint_targets
            if self._pool is None or len(chunks) == 1:
                for w in worlds:
                    w._advance(physics)
            else:
                list(self._pool.map(lambda chunk: [worlds[j]._advance(physics) for j in chunk], chunks))
        for w, t in zip(worlds, target):
            w._pusher_target = t

    def _step_chunk(self, indices: Sequence[int], actions: Sequence[Any]) -> list[tuple]:
        """Steps (or, after an episode's end, resets) the worlds ``indices``; runs on a worker thread."""
        out = []
        for i in indices:
            if self._autoreset_envs[i]:
                obs, info = self.envs[i].reset()
                out.append((obs, 0.0, False, False, info))
            else:
                out.append(self.envs[i].step(actions[i]))
        return out

    # ---------------------------------------------------------------------------------------------- images
    def _add_images(self, indices: Sequence[int]) -> None:
        """Adds ``observation.images.<cam>`` (and depth) to the observations of worlds ``indices``, keys in order."""
        if not self.cameras:
            return
        indices = list(indices)
        if self.renderer == "batch":
            images = self._render_batch()
        else:
            images = {i: self._render_mujoco(i) for i in indices}
        keys = list(self.single_observation_space.spaces)
        for i in indices:
            obs = {**self._env_obs[i], **images[i]}
            self._env_obs[i] = {k: obs[k] for k in keys}

    def _render_mujoco(self, i: int) -> dict[str, np.ndarray]:
        world, out = self.worlds[i], {}
        for cam in self.cameras:
            out[f"observation.images.{cam}"] = world.render_camera(cam, self.image_size)
            if self.depth:
                out[f"observation.depth.{cam}"] = world.render_camera(cam, self.image_size, depth=True)
        return out

    def _render_batch(self) -> list[dict[str, np.ndarray]]:
        """All worlds' camera images in one BatchRenderer launch (Warp; MuJoCo's depth convention, 0 = no hit)."""
        if self._batch_renderer is None:
            from kernels.render import BatchRenderer

            height, width = self.image_size
            self._batch_renderer = BatchRenderer(self.worlds[0].model, list(self.cameras), height, width,
                                                 num_worlds=self.num_envs)
        self._batch_renderer.update([w.data for w in self.worlds])
        result = self._batch_renderer.render()
        out = []
        for i in range(self.num_envs):
            images = {}
            for c, cam in enumerate(self.cameras):
                images[f"observation.images.{cam}"] = result.rgb[i, c]
                if self.depth:
                    images[f"observation.depth.{cam}"] = result.depth[i, c]
            out.append(images)
        return out

    def _batched_observations(self) -> Any:
        self._observations = concatenate(self.single_observation_space, self._env_obs, self._observations)
        return deepcopy(self._observations)

    def close_extras(self, **kwargs: Any) -> None:
        """Stops the thread pool and closes the worlds."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        super().close_extras(**kwargs)
