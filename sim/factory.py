"""Builds the twin's envs (PushT, coloured targets), vector envs and experts from the typed ``env`` config group."""

from __future__ import annotations

import dataclasses
import logging
import warnings
from dataclasses import dataclass, field

import gymnasium as gym
from hydra.core.config_store import ConfigStore

from sim.expert import ExpertConfig, PushTExpert
from sim.pusht_config import PushTConfig
from sim.pusht_targets_config import PushTTargetsConfig

log = logging.getLogger(__name__)

ENV_ID = "realsim/PushT-v0"
# make_vector_env's backends: worker processes, one process in turn, or batched worlds on a thread pool (sim.vector)
VECTOR_BACKENDS = ("async", "sync", "batched")
# physics engines: MuJoCo C (the gymnasium envs) or MuJoCo Warp (sim.mjwarp: N worlds on a GPU or Warp's CPU device)
PHYSICS_BACKENDS = ("mujoco", "mjwarp")
TARGETS_ENV_ID = "realsim/PushTTargets-v0"


@dataclass
class EnvConfig:
    """The ``env`` config group: which registered env, its settings, and the expert that demonstrates it."""

    id: str = ENV_ID  # gymnasium id
    kwargs: PushTConfig = field(default_factory=PushTConfig)  # the env's own typed config
    expert: ExpertConfig = field(default_factory=ExpertConfig)  # scripted demonstrator
    # info keys evaluation reports per episode (last value as mean_<key>, best as max_<key>); success itself is
    # info["is_success"] (coverage >= kwargs.success_threshold)
    metric_keys: list[str] = field(default_factory=lambda: ["coverage"])
    # make_vector_env's default backend: async (a process per env), sync (one process) or batched (N worlds stepped
    # in one call on a thread pool, sim.vector.BatchedVectorEnv)
    vector: str = "async"
    vector_threads: int = 0  # batched: worker threads; 0 = one per CPU core
    # batched: camera observations by MuJoCo's renderer per world (the single env's images) or by
    # kernels.render.BatchRenderer in one launch for all worlds (Warp ray-caster: other shading than MuJoCo's)
    vector_renderer: str = "mujoco"
    # physics engine of make_vector_env: mujoco (C) | mjwarp (MuJoCo Warp worlds, sim.mjwarp_env; where it cannot
    # run, make_vector_env warns why and falls back to MuJoCo C). make_env is always MuJoCo C.
    backend: str = "mujoco"
    mjwarp_device: str = "auto"  # Warp device of backend=mjwarp: auto (CUDA when present, else cpu) | cpu | cuda[:N]

    def __post_init__(self) -> None:
        if self.vector not in VECTOR_BACKENDS:
            raise ValueError(f"env.vector must be one of {VECTOR_BACKENDS}, got {self.vector!r}")
        if self.vector_threads < 0:
            raise ValueError(f"env.vector_threads must be >= 0 (0: one per core), got {self.vector_threads}")
        if self.vector_renderer not in ("mujoco", "batch"):
            raise ValueError(f"env.vector_renderer must be mujoco or batch, got {self.vector_renderer!r}")
        if self.backend not in PHYSICS_BACKENDS:
            raise ValueError(f"env.backend must be one of {PHYSICS_BACKENDS}, got {self.backend!r}")


@dataclass
class TargetsEnvConfig(EnvConfig):
    """The ``env`` group for ``realsim/PushTTargets-v0`` (conf/env/pusht_targets.yaml): coloured pads, instructions."""

    id: str = TARGETS_ENV_ID
    kwargs: PushTTargetsConfig = field(default_factory=PushTTargetsConfig)
    # proximity = 1 - (T centroid to instructed pad) / (start to pad), clipped to [0, 1]: 1 on the pad, 0 at the start
    metric_keys: list[str] = field(default_factory=lambda: ["proximity"])


# gymnasium id -> (its env group schema, its kwargs dataclass)
ENV_SCHEMAS: dict[str, tuple[type[EnvConfig], type[PushTConfig]]] = {
    ENV_ID: (EnvConfig, PushTConfig),
    TARGETS_ENV_ID: (TargetsEnvConfig, PushTTargetsConfig),
}


def make_env(cfg: EnvConfig, render_mode: str | None = "rgb_array") -> gym.Env:
    """One environment for ``cfg`` (no time-limit wrapper: the env truncates itself)."""
    return gym.make(cfg.id, config=_env_kwargs(cfg), render_mode=render_mode, disable_env_checker=True)


def make_vector_env(cfg: EnvConfig, num_envs: int, asynchronous: bool = True,
                    backend: str | None = None) -> gym.vector.VectorEnv:
    """``num_envs`` copies of the env behind gymnasium's VectorEnv API.

    ``backend`` (default ``cfg.vector``): ``async`` runs each env in a worker process (one per core is the sweet
    spot), ``sync`` all in this process, ``batched`` steps all worlds in one call on a thread pool
    (:class:`sim.vector.BatchedVectorEnv`, ``cfg.vector_threads`` threads). ``asynchronous=False`` turns ``async``
    into ``sync`` (as before). All use gymnasium's NEXT_STEP autoreset: the step after the one that ended a
    sub-env's episode resets it (its action is ignored), so the last frame of an episode can still be rendered.

    Raises:
        ValueError: on ``num_envs < 1`` or an unknown backend.
    """
    if num_envs < 1:
        raise ValueError(f"num_envs must be >= 1, got {num_envs}")
    backend = backend or getattr(cfg, "vector", "async")
    if backend not in VECTOR_BACKENDS:
        raise ValueError(f"backend must be one of {VECTOR_BACKENDS}, got {backend!r}")
    kwargs = _env_kwargs(cfg)
    mode = gym.vector.AutoresetMode.NEXT_STEP
    if getattr(cfg, "backend", "mujoco") == "mjwarp":
        from sim.mjwarp import WarpUnavailable
        from sim.mjwarp_env import WarpVectorEnv

        try:
            return WarpVectorEnv(kwargs, num_envs, device=cfg.mjwarp_device)
        except WarpUnavailable as err:
            message = f"{err}; running the {num_envs} envs on MuJoCo C instead (env.vector={backend})"
            log.warning(message)
            warnings.warn(message, RuntimeWarning, stacklevel=2)
    if backend == "batched":
        from sim.vector import BatchedVectorEnv, strip_cameras

        return BatchedVectorEnv(_EnvMaker(cfg.id, strip_cameras(kwargs)), num_envs, kwargs,
                                n_threads=cfg.vector_threads, renderer=cfg.vector_renderer)
    fns = [_EnvMaker(cfg.id, kwargs)] * num_envs
    if backend == "async" and asynchronous and num_envs > 1:
        # spawn, not fork: a parent that already rendered holds an EGL context that a forked child cannot use.
        # An env that observes text (the instruction) sends observations through the pipes: gymnasium 1.x reads a
        # Text space's shared memory once, at construction, so every later instruction would come back stale.
        shared_memory = not isinstance(kwargs, PushTTargetsConfig)
        return gym.vector.AsyncVectorEnv(fns, autoreset_mode=mode, context="spawn", shared_memory=shared_memory)
    return gym.vector.SyncVectorEnv(fns, autoreset_mode=mode)


@dataclass
class _EnvMaker:
    """A picklable env constructor for worker processes (importing ``sim`` registers the env id there)."""

    env_id: str
    kwargs: PushTConfig

    def __call__(self) -> gym.Env:
        import sim  # noqa: F401

        return gym.make(self.env_id, config=self.kwargs, render_mode="rgb_array", disable_env_checker=True)


def make_expert(env: gym.Env, cfg: EnvConfig, seed: int | None = None) -> PushTExpert:
    """The scripted expert for ``env`` with the config's gains and noise."""
    return PushTExpert.for_env(env, config=_to_object(cfg.expert, ExpertConfig), seed=seed)


def _to_object(node, cls):
    """A dataclass instance from either the dataclass itself or an OmegaConf node / dict of its fields."""
    if isinstance(node, cls):
        return node
    from omegaconf import OmegaConf

    if OmegaConf.is_config(node):
        node = OmegaConf.to_container(node, resolve=True)
    return cls(**node)


def env_config_from_dict(values: dict) -> EnvConfig:
    """A validated :class:`EnvConfig` from a plain dict (e.g. the ``env`` node of a saved training config).

    Raises:
        omegaconf.errors.ConfigKeyError: an unknown key, naming it; ValueError: a bad value, naming the field.
    """
    from omegaconf import OmegaConf

    schema = ENV_SCHEMAS.get(values.get("id", ENV_ID), (EnvConfig,))[0]
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), values))


# the env kwargs that decide a policy's observation and action features: an env whose physics replaces another's
# must keep them
FEATURE_KEYS = ("action_mode", "state", "environment_state", "joints", "cameras", "depth", "image_size")


def with_physics_of(env_cfg: EnvConfig, source: EnvConfig | dict) -> EnvConfig:
    """``env_cfg`` with the physics of ``source``: its domain randomisation (friction, mass, damping, disturbances,
    initial-pose noise: ``kwargs.randomization``) replaces ``env_cfg``'s; everything else is ``env_cfg``'s.

    Raises:
        ValueError: ``source`` is another env (``id``) or would change an observation or action feature
            (:data:`FEATURE_KEYS`); the message names the key and both values.
    """
    source = source if isinstance(source, EnvConfig) else env_config_from_dict(dict(source))
    if source.id != env_cfg.id:
        raise ValueError(f"env.id: the override is {source.id!r}, the checkpoint's env is {env_cfg.id!r}")
    own, other = _env_kwargs(env_cfg), _env_kwargs(source)
    for key in FEATURE_KEYS:
        if tuple(_listed(getattr(own, key))) != tuple(_listed(getattr(other, key))):
            raise ValueError(f"env.kwargs.{key}: the override has {getattr(other, key)!r}, the checkpoint's env "
                             f"{getattr(own, key)!r}; an env override may change physics, not the policy's features")
    return dataclasses.replace(env_cfg, kwargs=dataclasses.replace(own, randomization=other.randomization))


def _listed(value: object) -> list:
    """A scalar as a one-item list, a sequence as a list (to compare tuples with OmegaConf's lists)."""
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _env_kwargs(cfg: EnvConfig) -> PushTConfig:
    return _to_object(cfg.kwargs, ENV_SCHEMAS.get(cfg.id, (EnvConfig, PushTConfig))[1])


def register_configs() -> None:
    """Registers the typed env schemas in Hydra's ConfigStore: ``env/pusht_schema`` and ``env/pusht_targets_schema``."""
    ConfigStore.instance().store(group="env", name="pusht_schema", node=EnvConfig)
    ConfigStore.instance().store(group="env", name="pusht_targets_schema", node=TargetsEnvConfig)
