"""What every entry script shares: the process environment, the config schemas, the Hydra entry, the tracker.

Each script in this folder starts with ``import _entry`` and is then only its own wiring::

    import _entry

    @_entry.main("eval")                    # conf/eval.yaml, typed by its schema
    def main(run, config):                  # run: the typed config (dataclasses); config: the resolved plain dict
        ...
        _entry.print_figures(figures)       # `name: value` lines (DESIGN.md section 5)

Why here and not inside a package: only the scripts layer may import every package (DESIGN.md section 2), and
registering the schemas of ``sim/``, ``policies/`` and ``real/`` needs all three; and the environment below must be
set before torch's OpenMP runtime or MuJoCo's renderer is loaded, which a module inside a package cannot promise
(its package's ``__init__`` runs first). Scripts run as ``python scripts/<name>.py`` import it as ``_entry``; tests
reach it as ``scripts._entry``.
"""

from __future__ import annotations

import os

# Let torch's OpenMP threads spin only briefly before they sleep: on a 2-core machine shared with env worker processes,
# long-spinning threads make every step wait for a preempted peer. Measured per training step (2 threads): idle
# 23 ms default / 24 ms here; with one core busy elsewhere 469 ms default / 56 ms here (OMP_WAIT_POLICY=PASSIVE:
# 39 ms idle, 44 ms busy).
os.environ.setdefault("GOMP_SPINCOUNT", "2000")
# Head-less MuJoCo rendering (EGL; Mesa's software rasteriser on a CPU machine). Set MUJOCO_GL (e.g. glfw) to use a
# display.
os.environ.setdefault("MUJOCO_GL", "egl")

# ruff: noqa: E402  (everything below is imported after the environment above is set, on purpose)
import functools
import signal
import sys
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import hydra
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

import sim
from perception.recon.config import ReconConfig
from perception.streaming.monitor import MonitorConfig
from policies import train_config
from policies.checkpoint import load_policy, load_train_config
from policies.datasets.atomic import atomic_write_json
from policies.evaluation import EvalEnvs
from policies.recon import run_config as recon_run_config
from policies.resume import restore_run_config
from policies.rewards import config as reward_config
from policies.rewards import improve_config
from policies.rewards import run_config as reward_run_config
from policies.rewards.rollouts import RolloutConfig, build_agents
from policies.runtime import print_figures
from policies.streaming import run_config as streaming_run_config
from policies.streaming.data import StreamDataConfig
from policies.streaming.monitor_eval import MonitorObserver
from policies.tracking import Tracker
from policies.trainer import EnvFactories
from real.bridge import serve_run
from real.modes import collect_run, deploy_run, viewer
from real.sim2real import evaluation as sim2real
from real.sim2real import identified_env
from real.stop_request import StopRequest
from sim.recon_scenes import SceneConfig

__all__ = ["BENCH_AREAS", "CONF_DIR", "INTERRUPTED_EXIT", "BenchConfig", "ablation_env", "bench_overrides",
           "env_factories", "env_features", "eval_envs", "exit_on_interrupt", "load_checkpoint", "main", "monitor_observer",
           "print_figures", "recon_preset", "register_configs", "reward_rollout_factories", "run_perception_bench",
           "run_policy_bench", "stream_factories", "tracker", "write_figures"]

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
INTERRUPTED_EXIT = 130  # 128 + SIGINT, as a shell reports Ctrl-C


def register_configs() -> None:
    """Registers every config schema in Hydra's ConfigStore: each primary config's (``<name>_schema``, e.g.
    ``train_schema``) and each group's (``env/pusht_schema``, ``policy/flow_matching_schema``, ``robot/*_schema``,
    ``reward/reward_schema``, ``recon/recon_schema``, ``scenes/scenes_schema``)."""
    sim.register_configs()
    train_config.register_configs()
    deploy_run.register_configs()
    collect_run.register_configs()
    viewer.register_configs()
    serve_run.register_configs()
    sim2real.register_configs()
    identified_env.register_configs()
    reward_config.register_configs()
    improve_config.register_configs()
    reward_run_config.register_configs()
    streaming_run_config.register_configs()
    recon_run_config.register_configs()
    ConfigStore.instance().store(group="recon", name="recon_schema", node=ReconConfig)
    ConfigStore.instance().store(group="scenes", name="scenes_schema", node=SceneConfig)
    ConfigStore.instance().store(name="bench_schema", node=BenchConfig)


def main(config_name: str, restore_on_resume: bool = True) -> Callable[[Callable[[Any, dict], None]], Callable[[], None]]:
    """Decorator: ``task(run, config)`` becomes the Hydra app of ``conf/<config_name>.yaml``.

    ``run`` is the typed config (dataclasses: an unknown key or a wrong type fails at start-up naming it, and each
    ``__post_init__`` raises ValueError naming the field); ``config`` is the resolved config as a plain dict (what a
    tracker logs and a checkpoint saves). Hydra's output dir, job name and command line are the script's own. A
    config with ``resume: true`` (train) is first replaced by the run's saved config (:mod:`policies.resume`), unless
    ``restore_on_resume`` is false (a script that checks its resume itself, e.g. improve).
    """
    register_configs()

    def decorate(task: Callable[[Any, dict], None]) -> Callable[[], None]:
        @functools.wraps(task)  # Hydra names the job and its log after the wrapped script function
        def hydra_task(cfg: DictConfig) -> None:
            if restore_on_resume and cfg.get("resume") is True:  # the run's saved config; changes are refused
                cfg = restore_run_config(cfg, HydraConfig.get().overrides.task)
            run = OmegaConf.to_object(cfg)
            task(run, OmegaConf.to_container(cfg, resolve=True))

        return hydra.main(config_path=str(CONF_DIR), config_name=config_name, version_base="1.3")(hydra_task)

    return decorate


def write_figures(figures: dict, path: str | os.PathLike) -> None:
    """Writes ``figures`` to the JSON file ``path`` (atomically), says where, and prints them as ``name: value``."""
    atomic_write_json(Path(path), figures)
    print(f"figures written to {path}")
    print_figures(figures)


def tracker(run: Any, config: dict) -> Tracker:
    """The run's W&B tracker (``run.logger.project``/``mode``, under ``run.output_dir``, logging ``config``).

    Use it as ``with _entry.tracker(run, config) as tracker:``: the W&B run is finished on the way out, marked
    failed if an exception escaped.
    """
    return Tracker(project=run.logger.project, mode=run.logger.mode, run_dir=run.output_dir, config=config)


def load_checkpoint(policy_path: str, device: Any, physics_of: Any = None) -> tuple[Any, sim.EnvConfig]:
    """The policy saved at ``policy_path`` (run dir, checkpoint dir or its ``pretrained_model``), on ``device``, and
    the env config it was trained in; with ``physics_of`` (an env config, e.g. ``eval.py env=identified_<name>``)
    that env's physics replaces the trained env's (:func:`sim.with_physics_of`).

    Raises:
        policies.checkpoint.CheckpointError: nothing loadable at ``policy_path``.
        ValueError: ``physics_of`` would change the policy's observation features (naming the key).
    """
    policy = load_policy(policy_path, device=device)
    env_cfg = sim.env_config_from_dict(load_train_config(policy_path)["env"])
    return policy, env_cfg if physics_of is None else sim.with_physics_of(env_cfg, physics_of)


def eval_envs(env_cfg: sim.EnvConfig) -> EvalEnvs:
    """What :meth:`policies.evaluation.Evaluator.from_config` needs from the twin: vector envs of ``env_cfg``, its
    episode length, its control rate (video fps) and the info keys it reports."""
    return EvalEnvs(make_vector_env=functools.partial(sim.make_vector_env, env_cfg),
                    max_episode_steps=env_cfg.kwargs.max_episode_steps, fps=int(env_cfg.kwargs.control_hz),
                    metric_keys=tuple(env_cfg.metric_keys))


def monitor_observer(monitor: MonitorConfig, env_cfg: sim.EnvConfig) -> MonitorObserver | None:
    """``eval.py monitor=streaming``: the streaming monitor watching every evaluated episode of ``env_cfg`` through
    its ``monitor.camera`` (rendered by the env at the model's frame size); None for ``monitor=none``.

    Raises:
        FileNotFoundError: no saved model at ``monitor.path``.
    """
    if not monitor.enabled:
        return None
    from perception.streaming import load_streaming

    try:
        model = load_streaming(monitor.path)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"monitor.path: {err}") from err
    size = (model.config.image_size, model.config.image_size)

    def render(envs: Any, indices: list[int]) -> list:
        if isinstance(envs, gym.vector.SyncVectorEnv):
            return [envs.envs[j].get_wrapper_attr("render_camera")(monitor.camera, size) for j in indices]
        every = envs.call("render_camera", monitor.camera, size)
        return [every[j] for j in indices]

    return MonitorObserver(monitor, render, fps=float(env_cfg.kwargs.control_hz), model=model)


def ablation_env(env_cfg: sim.EnvConfig, ablation: str, heldout_env_kwargs: dict) -> sim.EnvConfig:
    """The env an evaluation ablation runs in: ``env_cfg`` with ``heldout_env_kwargs`` merged into its ``kwargs`` for
    ``heldout_paraphrases`` (e.g. ``instructions: heldout``), ``env_cfg`` itself for every other ablation.

    Raises:
        ValueError: the env's kwargs have no such key (the env has no held-out instructions) or a bad value; the
            message names the key and the env id.
    """
    if ablation != "heldout_paraphrases":
        return env_cfg
    try:
        merged = OmegaConf.merge(OmegaConf.structured(env_cfg), {"kwargs": dict(heldout_env_kwargs)})
        return OmegaConf.to_object(merged)
    except (OmegaConfBaseException, ValueError) as err:  # an unknown key / wrong type, or the kwargs' own check
        raise ValueError(f"ablation heldout_paraphrases: cannot set env.kwargs {dict(heldout_env_kwargs)} on "
                         f"{env_cfg.id}: {err}") from err


def env_factories(env_cfg: sim.EnvConfig) -> EnvFactories:
    """How the trainer reaches the twin of ``env_cfg`` through the gymnasium API (policies/ never imports sim)."""
    return EnvFactories(
        make_env=lambda: sim.make_env(env_cfg, render_mode=None),
        make_vector_env=functools.partial(sim.make_vector_env, env_cfg),
        make_expert=lambda env: sim.make_expert(env, env_cfg),
        fps=int(env_cfg.kwargs.control_hz),
        max_episode_steps=env_cfg.kwargs.max_episode_steps,
        metric_keys=tuple(env_cfg.metric_keys),
        make_noisy_expert=lambda env, noise_std, contact_prob: sim.make_expert(env, _noisy_env(
            env_cfg, noise_std, contact_prob)),
    )


def _noisy_env(env_cfg: sim.EnvConfig, noise_std: float, random_contact_prob: float) -> sim.EnvConfig:
    """``env_cfg`` whose expert has Gaussian action noise ``noise_std`` (m) and ``random_contact_prob``."""
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(env_cfg), {"expert": {
        "noise_std": noise_std, "random_contact_prob": random_contact_prob}}))


def reward_rollout_factories(env_cfg: sim.EnvConfig, rollouts: RolloutConfig) -> tuple[dict, Callable, float]:
    """What :func:`policies.rewards.rollouts.collect_rollouts` needs from the twin: an env factory per split
    (``heldout_instructions`` with the env's held-out paraphrases), the agent mix (its degraded expert with
    ``rollouts.noise_std`` / ``random_contact_prob``) and the control rate (fps)."""
    heldout = ablation_env(env_cfg, "heldout_paraphrases", {"instructions": "heldout"})
    noisy = _noisy_env(env_cfg, rollouts.noise_std, rollouts.random_contact_prob)
    make_envs = {"train": lambda: sim.make_env(env_cfg), "heldout": lambda: sim.make_env(env_cfg),
                 "heldout_instructions": lambda: sim.make_env(heldout)}

    def make_agents(env: Any) -> dict:
        return build_agents(env, lambda e: sim.make_expert(e, env_cfg), lambda e: sim.make_expert(e, noisy), rollouts)

    return make_envs, make_agents, float(env_cfg.kwargs.control_hz)


def stream_factories(env_cfg: sim.EnvConfig, data: StreamDataConfig) -> tuple[Callable, Callable, float]:
    """What :func:`policies.streaming.data.collect_streams` needs from the twin: ``make_env(shove)`` (``env_cfg``, or
    with its pushes at ``data.labels.shove_force`` N), the agent mix (its degraded expert with the rollouts'
    ``noise_std`` / ``random_contact_prob``) and the control rate (fps)."""
    shove = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(env_cfg), {"kwargs": {"randomization": {
        "push_force": data.labels.shove_force}}}))
    noisy = _noisy_env(env_cfg, data.rollouts.noise_std, data.rollouts.random_contact_prob)

    def make_env(shoved: bool) -> Any:
        return sim.make_env(shove if shoved else env_cfg)

    def make_agents(env: Any) -> dict:
        return build_agents(env, lambda e: sim.make_expert(e, env_cfg), lambda e: sim.make_expert(e, noisy),
                            data.rollouts)

    return make_env, make_agents, float(env_cfg.kwargs.control_hz)


def exit_on_interrupt(task: Callable[[Callable[[], bool]], None], message: str) -> None:
    """Runs ``task(stop_requested)``; on Ctrl-C prints ``message`` to stderr and exits with status 130.

    ``stop_requested()`` turns true at the first SIGINT, for loops that poll it: a native callback may swallow the
    ``KeyboardInterrupt`` that the signal also raises.
    """
    interrupted = StopRequest()  # lock-free (real.stop_request): a handler must not take the lock a wait() holds

    def on_sigint(signum: int, frame: object) -> None:
        interrupted.set()
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_sigint)
    try:
        task(interrupted.is_set)
    except KeyboardInterrupt:
        interrupted.set()
    if interrupted.is_set():
        print(message, file=sys.stderr)
        sys.exit(INTERRUPTED_EXIT)


def env_features(env_name: str) -> dict[str, dict]:
    """The features (LeRobot info.json style) of the env of ``conf/env/<env_name>.yaml``: what a policy trained
    there takes (its observation keys, image sizes) and the action.

    Raises:
        FileNotFoundError: no such env config.
    """
    from policies.datasets import features_from_spaces

    path = CONF_DIR / "env" / f"{env_name}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"no env config {path}")
    node = OmegaConf.load(path)
    node.pop("defaults", None)
    env = sim.make_env(sim.env_config_from_dict(OmegaConf.to_container(node, resolve=True)), render_mode=None)
    try:
        return features_from_spaces(env.observation_space, env.action_space)
    finally:
        env.close()


def run_policy_bench(envs: dict[str, str], default_env: str, policy_dir: str = "", **options: Any) -> dict:
    """``bench.py policy``: :func:`policies.bench.run_policy_benchmarks` over ``conf/policy`` (or ``policy_dir``),
    each preset fed the features of its env in ``envs`` (``conf/env/<name>.yaml``), else of ``default_env``."""
    from policies.bench import run_policy_benchmarks

    return run_policy_benchmarks(lambda preset: env_features(envs.get(preset, default_env)),
                                 policy_dir=policy_dir or CONF_DIR / "policy", **options)


def recon_preset(preset: str, recon_dir: str | os.PathLike = "") -> ReconConfig:
    """The :class:`ReconConfig` of ``conf/recon/<preset>.yaml`` (or of ``recon_dir``), built through its schema.

    Raises:
        FileNotFoundError: no such preset. ValueError: a bad value in it (naming the field).
    """
    path = Path(recon_dir or CONF_DIR / "recon") / f"{preset}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"no reconstruction preset {path}")
    node = OmegaConf.load(path)
    node.pop("defaults", None)
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ReconConfig), node))


def run_perception_bench(preset: str, recon_dir: str = "", **options: Any) -> dict:
    """``bench.py perception``: :func:`perception.recon.bench.run_recon_benchmarks` of ``conf/recon/<preset>.yaml``."""
    from perception.recon.bench import run_recon_benchmarks

    return run_recon_benchmarks(recon_preset(preset, recon_dir), **options)


# ------------------------------------------------------------------------------------------- scripts/bench.py's schema
BENCH_AREAS = ("sim", "kernels", "bridge", "sync", "policy", "reward", "streaming", "perception")


@dataclass
class SimBench:
    """``bench.py sim``: env steps/s against gym-pusht (sim.bench.run_sim_benchmarks)."""

    n_steps: int = 1000  # env steps timed per configuration
    n_envs: int = 2  # parallel envs of the vector-env measurement
    n_worlds: int = 0  # batched worlds (0: 4 * n_envs; mjwarp: 4)
    backend: str = "mujoco"  # mujoco: against gym-pusht | mjwarp: MuJoCo Warp worlds beside MuJoCo C's
    device: str = "auto"  # mjwarp's Warp device: auto (CUDA when present) | cpu | cuda

    def __post_init__(self) -> None:
        if self.backend not in ("mujoco", "mjwarp"):
            raise ValueError(f"sim.backend must be mujoco or mjwarp, got {self.backend!r}")
        if self.n_steps < 1 or self.n_envs < 1 or self.n_worlds < 0:
            raise ValueError(f"sim.n_steps and sim.n_envs must be >= 1 and sim.n_worlds >= 0, got {self.n_steps}, "
                             f"{self.n_envs}, {self.n_worlds}")


@dataclass
class KernelsBench:
    """``bench.py kernels``: Warp point-cloud kernels against Open3D, the batched renderer against MuJoCo's."""

    device: str = "cpu"  # Warp device: cpu | cuda
    sizes: list[int] = field(default_factory=lambda: [100_000, 1_000_000])  # point-cloud sizes


@dataclass
class BridgeBench:
    """``bench.py bridge``: command latency over the bridge and hold time after a commander dies."""

    rate_hz: float = 500.0  # command stream rate
    duration_s: float = 5.0  # s of streaming per latency measurement


@dataclass
class SyncBench:
    """``bench.py sync``: the twin's sync error against the emulated reality, per observation source."""

    n_episodes: int = 3  # deployed expert episodes per source
    max_steps: int = 100  # control steps per episode
    time_scale: float = 0.5  # the emulated world's speed (conf/robot/emulated.yaml: 2 cores cannot keep real time)
    sources: list[str] = field(default_factory=lambda: ["twin", "open_loop", "raw"])
    lookahead_s: float = 0.06  # s the twin's joint trajectory is computed ahead of the robot
    recon_model: str = ""  # the recon source's reconstruction model directory (sources=[twin,recon] recon_model=<dir>)


@dataclass
class PolicyBench:
    """``bench.py policy``: action-chunk latency p50/p99, control rate and peak memory of each policy preset on CPU,
    on all threads and on 1 (policies.bench.run_policy_benchmarks)."""

    presets: list[str] = field(default_factory=list)  # conf/policy/<preset>.yaml to measure; []: every one
    n_iters: int = 100  # timed chunk predictions per thread setting (p99 of 100: the second slowest)
    n_warmup: int = 10  # untimed predictions first (also the memory measurement)
    control_steps: int = 200  # select_action calls of the control-rate loop
    # the env whose features (observation keys, image size) each preset is fed: conf/env/<name>.yaml
    envs: dict[str, str] = field(default_factory=lambda: {"vla_tiny": "pusht_targets", "vla_hf": "pusht_targets"})
    default_env: str = "pusht"  # for presets not in envs (flow_matching: the default run's state env)
    instruction: str = "push the T onto the red target"  # the task every observation carries
    policy_dir: str = ""  # folder of the presets; "": conf/policy

    def __post_init__(self) -> None:
        if self.n_iters < 1 or self.n_warmup < 0 or self.control_steps < 1:
            raise ValueError(f"policy.n_iters and policy.control_steps must be >= 1, policy.n_warmup >= 0; got "
                             f"{self.n_iters}, {self.control_steps}, {self.n_warmup}")


@dataclass
class RewardBench:
    """``bench.py reward``: TOPReward's KV-cache path against per-prefix scoring from scratch, and frames/s
    (policies.rewards.bench.run_reward_benchmarks)."""

    n_frames: int = 300  # frames of the episode (random pixels)
    fps: float = 10.0  # its frame rate
    k: int = 15  # prefixes scored
    sample_fps: float = 2.0  # resampled to this rate first (300 frames at 10 fps: 61 frames)
    frame_size: int = 56  # square frames, px
    path: str = ""  # hub id or local dir of a Qwen-VL-class model; "": a tiny random Qwen2.5-VL built in a temp dir
    device: str = "cpu"
    dtype: str = "float32"  # float32 | bfloat16
    n_repeats: int = 2  # timings per path; the best is kept

    def __post_init__(self) -> None:
        if self.n_frames < 1 or self.k < 1 or self.n_repeats < 1 or self.frame_size < 1:
            raise ValueError(f"reward.n_frames, reward.k, reward.n_repeats and reward.frame_size must be >= 1; got "
                             f"{self.n_frames}, {self.k}, {self.n_repeats}, {self.frame_size}")
        if self.fps <= 0 or self.sample_fps <= 0:
            raise ValueError(f"reward.fps and reward.sample_fps must be > 0, got {self.fps}, {self.sample_fps}")


@dataclass
class StreamingBench:
    """``bench.py streaming``: per-frame latency and memory of one long stream through the streaming video model's
    default preset, and of the same model without eviction (perception.streaming.bench.run_streaming_benchmarks)."""

    n_frames: int = 10_000  # frames of the bounded-memory stream
    full_frames: int = 2_000  # frames of the memory=full stream (its cost grows with the stream)
    seed: int = 0
    n_threads: int = 1  # torch threads while measuring; 0: torch's default

    def __post_init__(self) -> None:
        if self.n_frames < 1 or self.full_frames < 1 or self.n_threads < 0:
            raise ValueError(f"streaming.n_frames and streaming.full_frames must be >= 1, streaming.n_threads >= 0; "
                             f"got {self.n_frames}, {self.full_frames}, {self.n_threads}")


@dataclass
class PerceptionBench:
    """``bench.py perception``: streaming reconstruction's peak memory and per-chunk latency as views arrive, and the
    memory of the all-at-once mode on the same views (perception.recon.bench.run_recon_benchmarks)."""

    preset: str = "recon_tiny"  # conf/recon/<preset>.yaml
    view_counts: list[int] = field(default_factory=lambda: [16, 64, 256])  # input views streamed per measurement
    chunk_views: int = 4  # views per fast-weight update
    seed: int = 0
    n_threads: int = 1  # torch threads while measuring; 0: torch's default
    recon_dir: str = ""  # folder of the presets; "": conf/recon

    def __post_init__(self) -> None:
        if not self.view_counts or min(self.view_counts) < 1 or self.chunk_views < 1 or self.n_threads < 0:
            raise ValueError(f"perception.view_counts must be >= 1 each, perception.chunk_views >= 1, "
                             f"perception.n_threads >= 0; got {self.view_counts}, {self.chunk_views}, {self.n_threads}")


@dataclass
class BenchConfig:
    """``scripts/bench.py <area> [key=value ...]``: one benchmark area and its options (``<area>.<key>``)."""

    area: str = MISSING  # sim | kernels | bridge | sync | policy | reward | streaming | perception
    out: str = ""  # JSON file of the figures; "": outputs/bench/<area>.json
    sim: SimBench = field(default_factory=SimBench)
    kernels: KernelsBench = field(default_factory=KernelsBench)
    bridge: BridgeBench = field(default_factory=BridgeBench)
    sync: SyncBench = field(default_factory=SyncBench)
    policy: PolicyBench = field(default_factory=PolicyBench)
    reward: RewardBench = field(default_factory=RewardBench)
    streaming: StreamingBench = field(default_factory=StreamingBench)
    perception: PerceptionBench = field(default_factory=PerceptionBench)

    def __post_init__(self) -> None:
        if self.area not in BENCH_AREAS:
            raise ValueError(f"area must be one of {BENCH_AREAS}, got {self.area!r}")
        if not self.out:
            self.out = f"outputs/bench/{self.area}.json"


def bench_overrides(argv: list[str], usage: str = "") -> list[str]:
    """``bench.py``'s command line as Hydra overrides: ``sim n_steps=10`` -> ``area=sim sim.n_steps=10``.

    The first word, when it is an area, selects it; a plain ``key=value`` then means that area's option (``area``,
    ``out`` and dotted or ``hydra`` keys pass as they are), and a comma list ``sizes=1000,2000`` is a list, as is a
    single value of a list option (``policy preset=vla_tiny``: ``preset`` is short for ``presets``).

    Raises:
        SystemExit: no area given (with ``usage`` as its message, printed as before).
    """
    args = list(argv)
    if args and args[0] in BENCH_AREAS:
        args[0] = f"area={args[0]}"
    area = next((a.partition("=")[2] for a in args if a.startswith("area=")), None)
    if area not in BENCH_AREAS:
        raise SystemExit(usage or f"usage: bench.py {{{'|'.join(BENCH_AREAS)}}} [key=value ...]")
    options = typing.get_type_hints(_AREA_OPTIONS[area])
    overrides = []
    for arg in args:
        key, sep, value = arg.partition("=")
        plain = sep and key.isidentifier() and key not in ("area", "out")
        key = _OPTION_ALIASES.get((area, key), key) if plain else key
        is_list = typing.get_origin(options.get(key)) is list
        if plain and ("," in value or is_list) and not value.startswith("["):
            value = f"[{value}]"
        overrides.append(f"{area}.{key}={value}" if plain else arg)
    return overrides


_AREA_OPTIONS = {"sim": SimBench, "kernels": KernelsBench, "bridge": BridgeBench, "sync": SyncBench,
                 "policy": PolicyBench, "reward": RewardBench, "streaming": StreamingBench,
                 "perception": PerceptionBench}
_OPTION_ALIASES = {("policy", "preset"): "presets"}
