"""Seeded, batched policy evaluation in gymnasium vector envs: success rate with a Wilson CI, metrics, videos.

The idea of diffusion_policy's ``env_runner`` and LeRobot's ``eval_policy`` as one object, built from its config
(``eval`` of a training run, ``scripts/eval.py``'s run config) and the simulator side the caller injects::

    envs = EvalEnvs(make_vector_env=lambda n: sim.make_vector_env(env_cfg, n), max_episode_steps=300, fps=10,
                    metric_keys=("coverage",))
    evaluator = Evaluator.from_config(cfg.eval, envs, output_dir=run_dir / "eval", device="auto")
    result = evaluator.run(policy)          # flat dict, see ``Evaluator.run``
    save_eval_info(run_dir / "eval_info.json", result)

Episode ``i`` is always reset with seed ``start_seed + i`` (the listed evaluation set), whatever the number of
parallel envs, so two runs, or two checkpoints, are scored on the same initial states.

Language-conditioned envs: when the env gives an instruction (``info["task"]`` or ``obs["task"]``, a
``spaces.Text``), every observation handed to the policy carries ``"task"``: a list of one string per sub-env, the
episode's instruction (or, with ``shuffle_instructions``, another episode's; see :mod:`policies.ablations`). Episodes
record their ``task`` and ``target`` (``info["target_color"]``, else the task) and the result holds a
per-instruction success table; videos carry the instruction written on the frame.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode
from tqdm.auto import tqdm

from policies.ablations import IMAGE_PREFIX, ablation_options, blank_images, shuffled_instructions
from policies.datasets.atomic import atomic_write_bytes
from policies.datasets.video import write_video
from policies.eval_report import instruction_caption, overlay_text, per_instruction_table
from policies.runtime import resolve_device
from policies.stats_utils import wilson_interval

__all__ = ["EpisodeObserver", "EpisodeResult", "EvalEnvs", "EvalSettings", "Evaluator", "PolicyLike", "obs_to_torch",
           "save_eval_info"]

VectorEnvFactory = Callable[[], gym.vector.VectorEnv]


@runtime_checkable
class PolicyLike(Protocol):
    """What the evaluator needs from a policy (``policies.base.Policy`` satisfies it)."""

    def reset(self) -> None:
        """Clear per-episode state (action queues, observation history)."""

    def select_action(self, obs: dict[str, Any]) -> torch.Tensor:
        """Return actions ``(B, action_dim)`` for a batch of observations ``(B, ...)``."""


class EvalSettings(Protocol):
    """The evaluation fields of a config (``policies.train_config.EvalConfig``, ``EvalRunConfig``)."""

    n_episodes: int  # episodes, episode i seeded start_seed + i
    start_seed: int
    n_envs: int  # parallel envs (at most n_episodes are made)
    n_videos: int  # the first n_videos episodes are filmed


@runtime_checkable
class EpisodeObserver(Protocol):
    """Watches every evaluated episode beside the policy (e.g. the streaming monitor,
    :mod:`policies.streaming.monitor_eval`), through the gymnasium API only. Per batch: :meth:`begin` after the
    reset, :meth:`step` after every env step, :meth:`end` when the batch is over; :meth:`summary` once at the end."""

    def begin(self, envs: gym.vector.VectorEnv, seeds: list[int], tasks: list[str | None],
              infos: list[dict[str, Any]]) -> None:
        """A batch starts: sub-env ``j`` runs the episode of ``seeds[j]`` (instruction ``tasks[j]``), reset info
        ``infos[j]``; sub-envs past ``len(seeds)`` are padding."""

    def step(self, envs: gym.vector.VectorEnv, indices: list[int], infos: list[dict[str, Any]]) -> None:
        """After an env step: the sub-envs ``indices`` show their episode's newest state (``render()`` is theirs);
        ``infos[j]`` is sub-env ``j``'s info of the step."""

    def end(self) -> list[dict[str, float]]:
        """The batch is over: metrics to add to each listed episode's ``metrics``, in seed order."""

    def summary(self, episodes: list[dict[str, Any]]) -> dict[str, float]:
        """Figures over every episode (``EpisodeResult.as_dict()`` with the added metrics)."""


@dataclass(frozen=True)
class EvalEnvs:
    """The simulator side of an evaluation, injected by the caller (``policies/`` never imports sim internals)."""

    make_vector_env: Callable[[int], gym.vector.VectorEnv]  # n -> n parallel envs rendering rgb_array frames
    max_episode_steps: int  # cap on control steps per episode
    fps: int = 10  # the env's control rate: frame rate of the videos
    metric_keys: tuple[str, ...] = ()  # info keys to aggregate, e.g. ("coverage",)


@dataclass
class EpisodeResult:
    """The outcome of one evaluation episode.

    ``metrics`` holds, for every metric key ``k``, the value at the last step (``k``) and the maximum over the
    episode's steps (``max_k``); ``length`` counts env steps. In a language-conditioned env ``task`` is the
    episode's instruction, ``target`` what it asks for (``info["target_color"]``, else the task) and ``policy_task``
    what the policy was told instead (a shuffled instruction); ``None`` otherwise, and then left out of
    :meth:`as_dict`.
    """

    seed: int
    success: bool
    length: int
    metrics: dict[str, float] = field(default_factory=dict)
    task: str | None = None
    target: str | None = None
    policy_task: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The episode as a JSON-ready dict, without the instruction fields that are ``None``."""
        optional = ("task", "target", "policy_task")
        return {k: v for k, v in asdict(self).items() if v is not None or k not in optional}


def obs_to_torch(obs: Mapping[str, Any], device: torch.device | str = "cpu") -> dict[str, Any]:
    """Turn a batched numpy observation dict from a vector env into the policy's torch batch.

    ``observation.images.*`` (B, H, W, 3) uint8 become float (B, 3, H, W) in [0, 1]; other float arrays become
    float32 tensors; integer/bool arrays keep their dtype; a tuple/list of strings (``task``) stays a list.

    Raises:
        TypeError: if ``obs`` is not a mapping or a value has an unsupported type (the message names the key).
        ValueError: if an image key is not a (B, H, W, 3) uint8 array.
    """
    if not isinstance(obs, Mapping):
        raise TypeError(f"observations must be a dict keyed like LeRobot, got {type(obs).__name__}")
    batch: dict[str, Any] = {}
    for key, value in obs.items():
        if isinstance(value, (tuple, list)) and all(isinstance(v, str) for v in value):
            batch[key] = list(value)
        elif not isinstance(value, np.ndarray):
            raise TypeError(f"observation {key!r}: unsupported type {type(value).__name__}")
        elif key.startswith(IMAGE_PREFIX):
            if value.dtype != np.uint8 or value.ndim != 4 or value.shape[-1] != 3:
                raise ValueError(
                    f"observation {key!r}: expected (B, H, W, 3) uint8 images, got {value.shape} {value.dtype}"
                )
            image = torch.from_numpy(np.ascontiguousarray(value)).to(device)
            batch[key] = image.permute(0, 3, 1, 2).float().div_(255.0)
        elif np.issubdtype(value.dtype, np.floating):
            batch[key] = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32)).to(device)
        elif np.issubdtype(value.dtype, np.integer) or value.dtype == np.bool_:
            batch[key] = torch.from_numpy(np.ascontiguousarray(value)).to(device)
        else:
            raise TypeError(f"observation {key!r}: unsupported dtype {value.dtype}")
    return batch


class Evaluator:
    """Runs a policy for a listed set of seeded episodes in parallel gymnasium vector envs.

    Episodes run in batches of ``num_envs``; batch ``b`` resets its sub-envs with the seeds
    ``start_seed + b * num_envs + j`` and steps until every sub-env has terminated or truncated, or
    ``max_steps`` steps have passed (an episode still running then ends there, as a truncation). Outputs of a
    sub-env after its episode ended are ignored. A last, partial batch pads its unused sub-envs with a repeat
    of its last seed and ignores them.

    Autoreset: the env factory chooses the mode; it is read from ``envs.metadata["autoreset_mode"]`` (gymnasium
    1.x sets it). ``NEXT_STEP`` (gymnasium's default, recommended) reports the terminal step's info directly
    and resets the sub-env on the following step; ``SAME_STEP`` resets within the terminal step, so the
    episode's last info is read from ``info["final_info"]`` and, because ``render()`` then already shows the
    next episode, the terminal frame is missing from that episode's video. ``DISABLED`` is refused.

    Success is ``info["is_success"]`` at the episode's last step (as LeRobot's ``eval_policy``). Every key of
    ``metric_keys`` must be in ``info`` at every step; per episode its last value and its max over the steps
    are kept. The first ``n_videos`` episodes are filmed from their sub-env's ``render()`` (initial state, then
    after every step) and written to ``<video_dir>/episode_<seed>.mp4``.

    Ablations (:mod:`policies.ablations`): ``shuffle_instructions`` first resets every listed episode once to read
    its instruction and target, then tells each episode's policy another episode's instruction whose target differs
    (the env still judges its own); ``blank_images`` zeroes every ``observation.images.*`` of the policy's batch.

    Policy randomness: no generator is handed to the policy; instead ``run`` seeds torch's global RNG with
    ``start_seed`` inside ``torch.random.fork_rng`` (the caller's RNG state is restored afterwards), so two runs
    with the same policy, seeds and ``num_envs`` give identical results. numpy's global RNG is not touched:
    a policy must not draw from it.
    """

    def __init__(
        self,
        make_env: VectorEnvFactory,
        n_episodes: int,
        start_seed: int,
        max_steps: int | None = None,
        n_videos: int = 0,
        video_dir: str | os.PathLike | None = None,
        fps: int = 10,
        device: str | torch.device = "cpu",
        metric_keys: Sequence[str] = (),
        confidence: float = 0.95,
        progress: bool = True,
        shuffle_instructions: bool = False,
        blank_images: bool = False,
        caption_videos: bool = True,
        observer: EpisodeObserver | None = None,
    ):
        """Check and store the settings; no env is built and nothing is written until ``run``.

        Args:
            make_env: callable returning a fresh ``gymnasium.vector.VectorEnv`` (sync or async) with a Dict
                observation space; sub-envs must render ``rgb_array`` frames if ``n_videos > 0``. It is called
                once per ``run`` and the env is closed at the end.
            n_episodes: number of episodes (>= 1).
            start_seed: episode ``i`` is reset with seed ``start_seed + i`` (>= 0).
            max_steps: cap on env steps per episode (>= 1); the env's own time limit may end it sooner. None:
                the sub-envs' ``spec.max_episode_steps`` (``run`` raises ValueError if they have none).
            n_videos: film the first ``n_videos`` episodes (0 <= n_videos <= n_episodes).
            video_dir: where the mp4 files go; required when ``n_videos > 0``.
            fps: frame rate of the videos (Hz, > 0).
            device: ``cpu``, ``cuda``, ``cuda:<i>`` or ``auto`` (cuda if available); observations go there.
            metric_keys: info keys to aggregate, e.g. ``["coverage"]``.
            confidence: confidence level of the Wilson interval on the success rate.
            progress: show a tqdm progress bar over episodes.
            shuffle_instructions: tell each episode's policy another episode's instruction (with another target).
            blank_images: the policy sees every ``observation.images.*`` as zeros.
            caption_videos: write the episode's instruction on its video frames (when the env gives one).
            observer: watches every episode (:class:`EpisodeObserver`); its per-episode metrics join each episode's
                ``metrics`` and its summary is the result's ``observed``.

        Raises:
            TypeError: if ``make_env`` is not callable.
            ValueError: naming the offending argument, or if ``device`` asks for CUDA and there is none.
        """
        if not callable(make_env):
            raise TypeError(f"make_env must be callable returning a VectorEnv, got {type(make_env).__name__}")
        _check_int("n_episodes", n_episodes, minimum=1)
        _check_int("start_seed", start_seed, minimum=0)
        if max_steps is not None:
            _check_int("max_steps", max_steps, minimum=1)
        _check_int("n_videos", n_videos, minimum=0)
        if n_videos > n_episodes:
            raise ValueError(f"n_videos ({n_videos}) must be <= n_episodes ({n_episodes})")
        if n_videos > 0 and video_dir is None:
            raise ValueError(f"video_dir is required when n_videos > 0 (n_videos={n_videos})")
        if not fps > 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        if isinstance(metric_keys, str) or not all(isinstance(k, str) and k for k in metric_keys):
            raise ValueError(f"metric_keys must be a sequence of non-empty strings, got {metric_keys!r}")
        if not 0.0 < confidence < 1.0:
            raise ValueError(f"confidence must be in (0, 1), got {confidence}")
        self.make_env = make_env
        self.n_episodes = n_episodes
        self.start_seed = start_seed
        self.max_steps = max_steps
        self.n_videos = n_videos
        self.video_dir = Path(video_dir) if video_dir is not None else None
        self.fps = fps
        self.device = resolve_device(device)
        self.metric_keys = tuple(metric_keys)
        self.confidence = confidence
        self.progress = progress
        self.shuffle_instructions = bool(shuffle_instructions)
        self.blank_images = bool(blank_images)
        self.caption_videos = bool(caption_videos)
        self.observer = observer

    @classmethod
    def from_config(cls, cfg: EvalSettings, envs: EvalEnvs, output_dir: str | os.PathLike | None = None,
                    device: str | torch.device = "cpu", n_episodes: int | None = None,
                    progress: bool = True, ablation: str = "none",
                    observer: EpisodeObserver | None = None) -> Evaluator:
        """The evaluator of ``cfg`` over ``envs``: ``n_episodes`` (default ``cfg.n_episodes``) episodes from
        ``cfg.start_seed`` in ``min(cfg.n_envs, n_episodes)`` parallel envs, the first ``cfg.n_videos`` filmed into
        ``<output_dir>/videos``, with the policy-side switches of ``ablation`` (:func:`policies.ablations.
        ablation_options`; the env side of ``heldout_paraphrases`` is ``envs``'s).

        Raises:
            ValueError: as :class:`Evaluator` (e.g. more videos than episodes, or videos without ``output_dir``), or an
                unknown ablation.
        """
        n = cfg.n_episodes if n_episodes is None else n_episodes
        n_envs = min(cfg.n_envs, n)
        return cls(
            make_env=lambda: envs.make_vector_env(n_envs),
            n_episodes=n,
            start_seed=cfg.start_seed,
            max_steps=envs.max_episode_steps,
            n_videos=cfg.n_videos,
            video_dir=Path(output_dir) / "videos" if output_dir is not None else None,
            fps=envs.fps,
            device=device,
            metric_keys=envs.metric_keys,
            progress=progress,
            observer=observer,
            **ablation_options(ablation),
        )

    @property
    def seeds(self) -> list[int]:
        """The listed evaluation seeds, episode ``i`` -> ``start_seed + i``."""
        return [self.start_seed + i for i in range(self.n_episodes)]

    def run(self, policy: PolicyLike) -> dict[str, Any]:
        """Evaluate ``policy`` on all episodes and return flat metrics.

        Returns:
            ``success_rate``, ``success_ci_low``, ``success_ci_high``, ``n_episodes``, ``mean_episode_length``,
            for every metric key ``k``: ``mean_k`` (mean over episodes of the last value) and ``max_k`` (mean
            over episodes of the per-episode max); ``episodes`` (list of ``EpisodeResult`` dicts: seed,
            success, length, metrics, and task, target, policy_task when the env gives instructions),
            ``per_instruction`` (:func:`policies.eval_report.per_instruction_table`; ``{}`` without instructions)
            and ``video_paths`` (list of str).

        Raises:
            TypeError: if ``policy`` lacks ``reset``/``select_action`` or ``select_action`` returns no tensor.
            ValueError: on an env that breaks the contract (no autoreset mode, bad frames, bad action shape, an
                instruction that changes between resets with the same seed), when ``max_steps`` is None and the env
                has no time limit, or when instructions are to be shuffled and the episodes do not ask for at least
                two different targets.
            KeyError: if ``is_success`` or a metric key is missing from ``info``.
        """
        if not isinstance(policy, PolicyLike):
            raise TypeError(f"policy must have reset() and select_action(obs), got {type(policy).__name__}")
        envs = self.make_env()
        episodes: list[EpisodeResult] = []
        video_paths: list[str] = []
        try:
            autoreset = _autoreset_mode(envs)
            max_steps = self.max_steps or _env_time_limit(envs)
            told = self._shuffled_tasks(envs) if self.shuffle_instructions else None
            with _eval_context(policy, self.device, self.start_seed), tqdm(
                total=self.n_episodes, desc="eval", unit="episode", disable=not self.progress
            ) as bar:
                for first in range(0, self.n_episodes, envs.num_envs):
                    if first:
                        _clear_pending_autoreset(envs, autoreset)
                    seeds = self.seeds[first : first + envs.num_envs]
                    n_film = max(0, min(len(seeds), self.n_videos - first))
                    batch, videos = self._run_batch(envs, autoreset, policy, seeds, n_film, max_steps, told)
                    episodes += batch
                    video_paths += [str(self._write_video(batch[j], frames)) for j, frames in videos.items()]
                    bar.update(len(batch))
                    bar.set_postfix(success=f"{np.mean([e.success for e in episodes]):.2f}")
        finally:
            envs.close()
        return self._summarise(episodes, video_paths)

    def _run_batch(
        self,
        envs: gym.vector.VectorEnv,
        autoreset: AutoresetMode,
        policy: PolicyLike,
        seeds: list[int],
        n_film: int,
        max_steps: int,
        told: Mapping[int, tuple[str, str]] | None = None,
    ) -> tuple[list[EpisodeResult], dict[int, list[np.ndarray]]]:
        """Run one batch of episodes (sub-env ``j`` <- ``seeds[j]``); film sub-envs ``0 .. n_film - 1``.

        ``told``: ``{seed: (the episode's instruction, the one the policy gets instead)}`` when shuffling.
        """
        n_envs, n_valid = envs.num_envs, len(seeds)
        obs, info = envs.reset(seed=seeds + [seeds[-1]] * (n_envs - n_valid))
        policy.reset()
        tasks, targets = _episode_labels(envs, obs, info)
        shown = _told_tasks(tasks, seeds, told)
        state = _BatchState(n_envs, n_valid, self.metric_keys)
        filmed = list(range(n_film))
        frames = {j: [frame] for j, frame in zip(filmed, _render(envs, filmed))}
        if self.observer is not None:
            self.observer.begin(envs, seeds, tasks, _unbatch_info(info, n_envs))
        for _ in range(max_steps):
            running = state.running.copy()
            action = _to_env_action(policy.select_action(self._policy_batch(obs, shown)), envs)
            obs, _, terminated, truncated, info = envs.step(action)
            ended = np.logical_or(terminated, truncated)
            infos = _last_step_infos(info, ended, autoreset)
            state.record_step(running, ended, infos, seeds)
            # the sub-envs that show their episode's new state (a SAME_STEP one that ended shows the next episode)
            fresh = [j for j in range(n_envs) if running[j] and not (ended[j] and autoreset is AutoresetMode.SAME_STEP)]
            to_film = [j for j in fresh if j < n_film]
            for j, frame in zip(to_film, _render(envs, to_film)):
                frames[j].append(frame)
            if self.observer is not None:
                self.observer.step(envs, fresh, infos)
            if not state.running.any():
                break
        results = state.results(seeds)
        if self.observer is not None:
            for episode, metrics in zip(results, self.observer.end()):
                episode.metrics |= metrics
        for j, episode in enumerate(results):
            episode.task, episode.target = tasks[j], targets[j]
            episode.policy_task = shown[j] if told is not None else None
        return results, frames

    def _policy_batch(self, obs: Mapping[str, Any], tasks: list[str] | None) -> dict[str, Any]:
        """The policy's view of a vector-env observation: torch tensors, ``task`` (one instruction per sub-env)
        when the env gives instructions, images zeroed when ``blank_images``."""
        batch = obs_to_torch(obs, self.device)
        if tasks is not None:
            batch["task"] = list(tasks)
        return blank_images(batch) if self.blank_images else batch

    def _shuffled_tasks(self, envs: gym.vector.VectorEnv) -> dict[int, tuple[str, str]]:
        """Reset every listed episode once to read its instruction and target; ``{seed: (its instruction, another
        episode's instruction with a different target)}`` (:func:`policies.ablations.shuffled_instructions`)."""
        tasks: list[str | None] = []
        targets: list[str | None] = []
        for first in range(0, self.n_episodes, envs.num_envs):
            seeds = self.seeds[first : first + envs.num_envs]
            obs, info = envs.reset(seed=seeds + [seeds[-1]] * (envs.num_envs - len(seeds)))
            batch_tasks, batch_targets = _episode_labels(envs, obs, info)
            tasks += batch_tasks[: len(seeds)]
            targets += batch_targets[: len(seeds)]
        if any(t is None for t in tasks):
            raise ValueError("shuffle_instructions: the env gives no instruction (neither info['task'] nor "
                             "obs['task'])")
        shuffled = shuffled_instructions(tasks, targets, seed=self.start_seed)
        return {seed: (task, other) for seed, task, other in zip(self.seeds, tasks, shuffled)}

    def _write_video(self, episode: EpisodeResult, frames: list[np.ndarray]) -> Path:
        """Write one filmed episode as ``<video_dir>/episode_<seed>.mp4``, its instruction written on every frame."""
        assert self.video_dir is not None  # checked in __init__ when n_videos > 0
        caption = instruction_caption(episode.as_dict()) if self.caption_videos else []
        if caption:
            frames = [overlay_text(frame, caption) for frame in frames]
        return write_video(self.video_dir / f"episode_{episode.seed}.mp4", np.stack(frames), self.fps)

    def _summarise(self, episodes: list[EpisodeResult], video_paths: list[str]) -> dict[str, Any]:
        """Aggregate per-episode results into the flat result dict of ``run``."""
        n_success = sum(e.success for e in episodes)
        low, high = wilson_interval(n_success, len(episodes), self.confidence)
        result: dict[str, Any] = {
            "success_rate": n_success / len(episodes),
            "success_ci_low": low,
            "success_ci_high": high,
            "n_episodes": len(episodes),
            "mean_episode_length": float(np.mean([e.length for e in episodes])),
        }
        for key in self.metric_keys:
            result[f"mean_{key}"] = float(np.mean([e.metrics[key] for e in episodes]))
            result[f"max_{key}"] = float(np.mean([e.metrics[f"max_{key}"] for e in episodes]))
        result["episodes"] = [e.as_dict() for e in episodes]
        result["per_instruction"] = per_instruction_table(result["episodes"], self.confidence)
        result["video_paths"] = video_paths
        if self.observer is not None:
            result["observed"] = self.observer.summary(result["episodes"])
        return result


def save_eval_info(path: str | os.PathLike, result: Mapping[str, Any]) -> Path:
    """Write an evaluation result (``Evaluator.run``'s dict) as JSON, atomically (temp file, fsync, rename).

    Conventionally ``path`` is ``<run_dir>/eval_info.json``; missing parent folders are created. numpy scalars and
    paths are converted.

    Raises:
        ValueError: if ``result`` holds NaN/inf or a value JSON cannot represent (the message says which).
    """
    path = Path(path)
    try:
        text = json.dumps(dict(result), indent=2, allow_nan=False, default=_json_default)
    except (TypeError, ValueError) as err:
        raise ValueError(f"save_eval_info: result cannot be written to {path}: {err}") from err
    atomic_write_bytes(path, (text + "\n").encode())
    return path


class _BatchState:
    """Per-sub-env bookkeeping of one batch: which episodes run, their length, success and metrics."""

    def __init__(self, n_envs: int, n_valid: int, metric_keys: tuple[str, ...]):
        self.metric_keys = metric_keys
        self.running = np.zeros(n_envs, dtype=bool)
        self.running[:n_valid] = True  # padded sub-envs are ignored from the start
        self.lengths = np.zeros(n_envs, dtype=int)
        self.success = np.zeros(n_envs, dtype=bool)
        self.last = {k: np.full(n_envs, np.nan) for k in metric_keys}
        self.best = {k: np.full(n_envs, -np.inf) for k in metric_keys}

    def record_step(self, running: np.ndarray, ended: np.ndarray, infos: list[Mapping[str, Any]], seeds: list[int]):
        """Add one env step to every episode that was running before it; stop those that ended."""
        for j in np.flatnonzero(running):
            info = infos[j]
            self.lengths[j] += 1
            self.success[j] = bool(_info_value(info, "is_success", seeds[j]))
            for key in self.metric_keys:
                value = float(_info_value(info, key, seeds[j]))
                self.last[key][j] = value
                self.best[key][j] = max(self.best[key][j], value)
        self.running &= ~ended

    def results(self, seeds: list[int]) -> list[EpisodeResult]:
        """One ``EpisodeResult`` per listed seed (episodes still running count as truncated at ``max_steps``)."""
        out = []
        for j, seed in enumerate(seeds):
            metrics = {k: float(self.last[k][j]) for k in self.metric_keys}
            metrics |= {f"max_{k}": float(self.best[k][j]) for k in self.metric_keys}
            out.append(EpisodeResult(int(seed), bool(self.success[j]), int(self.lengths[j]), metrics))
        return out


def _episode_labels(envs: gym.vector.VectorEnv, obs: Mapping[str, Any],
                    info: Mapping[str, Any]) -> tuple[list[str | None], list[str | None]]:
    """Per sub-env, right after a reset: the instruction (``info["task"]``, else ``obs["task"]``) and the target
    (``info["target_color"]``, else the instruction); ``None`` for an env without instructions.

    ``info`` comes first: gymnasium's ``AsyncVectorEnv`` with ``shared_memory=True`` returns a ``spaces.Text``
    observation read once when it was built, never the worker's (Farama-Foundation/Gymnasium#1164), so an
    instruction only in ``obs`` is refused there.

    Raises:
        ValueError: the instruction is only in ``obs`` of a shared-memory ``AsyncVectorEnv``.
    """
    per_env = _unbatch_info(info, envs.num_envs)
    tasks = [None if e.get("task") is None else str(e["task"]) for e in per_env]
    if any(t is None for t in tasks) and "task" in obs:
        if isinstance(envs, gym.vector.AsyncVectorEnv) and getattr(envs, "shared_memory", False):
            raise ValueError("the env gives its instruction only as obs['task'], which gymnasium's AsyncVectorEnv "
                             "with shared_memory=True does not update (Gymnasium#1164): put 'task' in info too, "
                             "or build the vector env with shared_memory=False")
        tasks = [str(obs["task"][j]) if t is None else t for j, t in enumerate(tasks)]
    targets = [str(e["target_color"]) if e.get("target_color") is not None else t for e, t in zip(per_env, tasks)]
    return tasks, targets


def _told_tasks(tasks: list[str | None], seeds: list[int],
                told: Mapping[int, tuple[str, str]] | None) -> list[str] | None:
    """The instruction each sub-env's policy gets: its own, or the shuffled one of ``told``; None without
    instructions. Padded sub-envs (past ``len(seeds)``) keep their own.

    Raises:
        ValueError: an episode's instruction differs from the one read for its seed before (a non-deterministic env).
    """
    if any(t is None for t in tasks):
        return None
    shown = list(tasks)
    for j, seed in enumerate(seeds if told is not None else []):
        own, other = told[seed]
        if tasks[j] != own:
            raise ValueError(f"seed {seed}: the env's instruction changed between two resets with the same seed "
                             f"({own!r}, then {tasks[j]!r}); instructions must be drawn from the reset seed")
        shown[j] = other
    return shown


def _clear_pending_autoreset(envs: gym.vector.VectorEnv, autoreset: AutoresetMode) -> None:
    """Work around gymnasium's ``AsyncVectorEnv(shared_memory=False)`` in NEXT_STEP mode: its worker clears the
    pending autoreset of a sub-env whose episode ended only when shared memory is on (gymnasium 1.4
    ``async_vector_env._async_worker``), so after an explicit ``reset(seed=...)`` such a sub-env would restart,
    unseeded, on its next step instead of stepping. One step with a sampled action first lets every such sub-env do
    its pending reset; the ``reset(seed=...)`` that follows starts the listed episodes. A sub-env whose episode ends
    on that very step (a sampled action can succeed) is pending again, so steps repeat until one ends no episode.
    No-op for other vector envs.

    Raises:
        RuntimeError: if sub-envs still end episodes after 100 such steps.
    """
    if not (isinstance(envs, gym.vector.AsyncVectorEnv) and not getattr(envs, "shared_memory", True)
            and autoreset is AutoresetMode.NEXT_STEP):
        return
    for _ in range(100):
        _, _, terminated, truncated, _ = envs.step(envs.action_space.sample())
        if not np.logical_or(terminated, truncated).any():
            return
    raise RuntimeError("could not clear the async vector env's pending autoresets: its sub-envs end an episode on "
                       "every step")


def _last_step_infos(info: Mapping[str, Any], ended: np.ndarray, autoreset: AutoresetMode) -> list[dict[str, Any]]:
    """Split a vector env's batched ``info`` into per-sub-env dicts describing the step just taken.

    In ``SAME_STEP`` mode a sub-env that ended was already reset; its step's info is ``info["final_info"]``.
    """
    per_env = _unbatch_info(info, len(ended))
    if autoreset is AutoresetMode.SAME_STEP and ended.any():
        if "final_info" not in info:
            raise ValueError("autoreset SAME_STEP: a sub-env ended but info has no 'final_info'")
        finals = _unbatch_info(info["final_info"], len(ended))
        per_env = [finals[j] if ended[j] else per_env[j] for j in range(len(ended))]
    return per_env


def _unbatch_info(info: Mapping[str, Any], n_envs: int) -> list[dict[str, Any]]:
    """Gymnasium's vector info ``{k: array(B), "_k": mask(B)}`` -> a list of ``B`` plain dicts."""
    per_env: list[dict[str, Any]] = [{} for _ in range(n_envs)]
    for key, values in info.items():
        if key.startswith("_") or isinstance(values, Mapping):
            continue
        mask = info.get(f"_{key}", np.ones(n_envs, dtype=bool))
        for j in np.flatnonzero(mask):
            per_env[j][key] = values[j]
    return per_env


def _info_value(info: Mapping[str, Any], key: str, seed: int) -> Any:
    """``info[key]`` with a KeyError that names the key and the episode's seed."""
    if key not in info:
        raise KeyError(f"env info has no {key!r} for the episode with seed {seed} (keys: {sorted(info)})")
    return info[key]


def _to_env_action(action: torch.Tensor, envs: gym.vector.VectorEnv) -> np.ndarray:
    """Policy output (B, action_dim) tensor -> numpy array in the env's action dtype; checks the shape."""
    if not isinstance(action, torch.Tensor):
        raise TypeError(f"select_action must return a torch.Tensor, got {type(action).__name__}")
    expected = tuple(envs.action_space.shape or ())
    if tuple(action.shape) != expected:
        raise ValueError(f"select_action returned shape {tuple(action.shape)}, the vector env expects {expected}")
    return action.detach().cpu().numpy().astype(envs.action_space.dtype, copy=False)


def _render(envs: gym.vector.VectorEnv, indices: list[int]) -> list[np.ndarray]:
    """RGB frames (H, W, 3) uint8 of the given sub-envs; renders only those when the env is a SyncVectorEnv."""
    if not indices:
        return []
    if isinstance(envs, gym.vector.SyncVectorEnv):
        frames = [envs.envs[j].render() for j in indices]
    else:
        every = envs.call("render")
        frames = [every[j] for j in indices]
    for j, frame in zip(indices, frames):
        if not (isinstance(frame, np.ndarray) and frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3):
            got = f"{frame.shape} {frame.dtype}" if isinstance(frame, np.ndarray) else type(frame).__name__
            raise ValueError(f"sub-env {j}: render() must return an (H, W, 3) uint8 array (render_mode='rgb_array'), "
                             f"got {got}")
    return frames


def _autoreset_mode(envs: gym.vector.VectorEnv) -> AutoresetMode:
    """The vector env's autoreset mode from ``metadata["autoreset_mode"]``; refuses DISABLED or missing."""
    mode = envs.metadata.get("autoreset_mode")
    if mode is None:
        raise ValueError("the vector env must declare metadata['autoreset_mode'] (NEXT_STEP or SAME_STEP)")
    mode = AutoresetMode(mode)
    if mode is AutoresetMode.DISABLED:
        raise ValueError("autoreset_mode DISABLED is not supported; build the vector env with NEXT_STEP or SAME_STEP")
    return mode


@contextlib.contextmanager
def _eval_context(policy: PolicyLike, device: torch.device, seed: int) -> Iterator[None]:
    """No grad, ``policy.eval()`` for modules (training mode restored after), torch RNG forked and seeded."""
    was_training = isinstance(policy, torch.nn.Module) and policy.training
    cuda_devices = [device] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=cuda_devices), torch.no_grad():
            torch.manual_seed(seed)
            if isinstance(policy, torch.nn.Module):
                policy.eval()
            yield
    finally:
        if was_training:
            policy.train()


def _env_time_limit(envs: gym.vector.VectorEnv) -> int:
    """The sub-envs' ``spec.max_episode_steps`` (the step cap when ``max_steps`` is None)."""
    spec = envs.get_attr("spec")[0]
    limit = getattr(spec, "max_episode_steps", None)
    if limit is None:
        raise ValueError("max_steps is None and the env has no spec.max_episode_steps: give max_steps")
    return int(limit)


def _check_int(name: str, value: object, minimum: int) -> None:
    """Raise ValueError naming ``name`` unless ``value`` is an int >= ``minimum`` (bools refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")




def _json_default(value: Any) -> Any:
    """JSON fallback for numpy scalars/arrays and paths."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"object of type {type(value).__name__} is not JSON serialisable")
