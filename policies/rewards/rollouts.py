"""Twin rollouts of mixed quality, labelled with the env's own progress and success: what the native reward trains on.

Agents (one drawn per episode from the seed, by :class:`RolloutConfig.agent_weights`): ``expert`` (the scripted
expert), ``degraded`` (the expert with action noise and detours to random points), ``partial`` (the expert, then
random pushes from a random step on) and ``random`` (random pusher targets, each held a few steps). So episodes mix
successes, near misses and failures. Per recorded frame: the overhead image, the env's progress (``info[progress_key]``,
e.g. the targets env's ``proximity`` in [0, 1]) and ``info["is_success"]``; per episode the instruction, seed and agent.

Layout (one ``.npz`` per episode, each written atomically, so a killed collection resumes losing at most one)::

    <root>/meta/info.json                      fps, image_key, progress_key, per split: seeds and the env it ran in
    <root>/<split>/episode_<seed>.npz          images (T,H,W,3) uint8, progress (T,) float32, success (T,) bool,
                                               task, seed, agent

Frame 0 is the reset observation; frame t the observation after action t. The env is reached only through gymnasium
and the factories a script passes in (policies/ never imports sim).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from tqdm.auto import tqdm

from policies.collect import Agent
from policies.datasets.atomic import atomic_path, atomic_write_json
from policies.rewards.topreward import resample_indices

AGENTS = ("expert", "degraded", "partial", "random")


@dataclass
class RolloutConfig:
    """What to collect: how many episodes per split, their seeds, and the agent mix (positions in m, world frame)."""

    n_train: int = 400  # episodes on training seeds (instructions: the env's train paraphrases)
    n_heldout: int = 100  # episodes on held-out seeds (other initial states), train paraphrases
    n_heldout_instructions: int = 100  # held-out seeds and the env's held-out paraphrases
    train_seed: int = 0  # first seed of each split; the ranges must not overlap
    heldout_seed: int = 100_000
    heldout_instructions_seed: int = 200_000
    agent_weights: dict[str, float] = field(
        default_factory=lambda: {"expert": 0.3, "degraded": 0.3, "partial": 0.2, "random": 0.2})
    noise_std: float = 0.02  # degraded: Gaussian noise on the expert's actions (m)
    random_contact_prob: float = 0.3  # degraded: probability that the expert picks a random contact
    detour_prob: float = 0.08  # degraded: probability per step of starting a detour
    detour_steps: int = 12  # degraded: steps of each detour towards a random point
    switch_steps: tuple[int, int] = (5, 30)  # partial: the expert hands over at a step drawn in this range
    random_hold_steps: int = 6  # random: steps each random target is held
    random_box: tuple[float, float, float, float] = (0.40, -0.17, 0.72, 0.17)  # x0, y0, x1, y1 of random targets
    image_key: str = "observation.images.overhead"
    progress_key: str = "proximity"  # info key of the env's progress in [0, 1]

    def __post_init__(self) -> None:
        if min(self.n_train, self.n_heldout, self.n_heldout_instructions) < 0:
            raise ValueError("rollouts.n_train, n_heldout and n_heldout_instructions must be >= 0")
        unknown = set(self.agent_weights) - set(AGENTS)
        if unknown or not self.agent_weights or min(self.agent_weights.values()) < 0 or \
                sum(self.agent_weights.values()) <= 0:
            raise ValueError(f"rollouts.agent_weights must map some of {AGENTS} to weights >= 0 with a positive "
                             f"sum, got {dict(self.agent_weights)}")
        if self.noise_std < 0 or not 0 <= self.random_contact_prob <= 1:
            raise ValueError(f"rollouts.noise_std must be >= 0 and random_contact_prob in [0, 1], got "
                             f"{self.noise_std}, {self.random_contact_prob}")
        if not 0 <= self.detour_prob <= 1 or self.detour_steps < 1 or self.random_hold_steps < 1:
            raise ValueError("rollouts.detour_prob must be in [0, 1], detour_steps and random_hold_steps >= 1")
        lo, hi = self.switch_steps
        if not 0 <= lo <= hi:
            raise ValueError(f"rollouts.switch_steps must be 0 <= lo <= hi, got {self.switch_steps}")
        x0, y0, x1, y1 = self.random_box
        if not (x0 < x1 and y0 < y1):
            raise ValueError(f"rollouts.random_box must be (x0, y0, x1, y1) with x0 < x1, y0 < y1, got {self.random_box}")

    def split_seeds(self) -> dict[str, list[int]]:
        """The seeds of each split: ``train``, ``heldout``, ``heldout_instructions``."""
        return {"train": list(range(self.train_seed, self.train_seed + self.n_train)),
                "heldout": list(range(self.heldout_seed, self.heldout_seed + self.n_heldout)),
                "heldout_instructions": list(range(self.heldout_instructions_seed,
                                                   self.heldout_instructions_seed + self.n_heldout_instructions))}


@dataclass
class Rollout:
    """One recorded episode: frames, their true progress and success, and what produced it."""

    images: np.ndarray  # (T, H, W, 3) uint8
    progress: np.ndarray  # (T,) float32 in [0, 1]
    success: np.ndarray  # (T,) bool
    task: str  # the instruction
    seed: int
    agent: str
    fps: float  # frames per second of ``images``

    @property
    def succeeded(self) -> bool:
        """Whether the episode ended in success."""
        return bool(self.success[-1])


# ------------------------------------------------------------------------------------------------------ agents
class RandomPushAgent:
    """Random pusher targets ``(x, y)`` drawn uniformly in ``box``, each held for ``hold_steps`` steps."""

    def __init__(self, box: tuple[float, float, float, float], hold_steps: int) -> None:
        self.low, self.high = np.asarray(box[:2], dtype=float), np.asarray(box[2:], dtype=float)
        self.hold_steps, self.rng = hold_steps, np.random.default_rng()
        self._target, self._left = self.low, 0

    def reset(self, seed: int | None = None) -> None:
        """Reseeds and forgets the current target."""
        self.rng, self._left = np.random.default_rng(seed), 0

    def act(self, obs: dict[str, Any]) -> np.ndarray:
        """The held random target, drawn anew every ``hold_steps`` calls."""
        if self._left == 0:
            self._target, self._left = self.rng.uniform(self.low, self.high), self.hold_steps
        self._left -= 1
        return self._target.astype(np.float32)


class DetourAgent:
    """``base`` (e.g. a noisy expert), except that with ``prob`` per step it detours for ``steps`` steps to a random
    point of ``box``."""

    def __init__(self, base: Agent, box: tuple[float, float, float, float], prob: float, steps: int) -> None:
        self.base, self.prob, self.detour = base, prob, RandomPushAgent(box, steps)
        self.rng, self._left = np.random.default_rng(), 0

    def reset(self, seed: int | None = None) -> None:
        """Resets the base agent and the detours."""
        self.base.reset(seed=seed)
        self.detour.reset(seed=None if seed is None else seed + 1)
        self.rng, self._left = np.random.default_rng(None if seed is None else seed + 2), 0

    def act(self, obs: dict[str, Any]) -> np.ndarray:
        """The base agent's action, or the detour's while one lasts."""
        action = self.base.act(obs)  # the base agent keeps its own state up to date
        if self._left == 0 and self.rng.random() < self.prob:
            self._left, self.detour._left = self.detour.hold_steps, 0
        if self._left > 0:
            self._left -= 1
            return self.detour.act(obs)
        return action


class SwitchAgent:
    """``first`` for a number of steps drawn per episode in ``switch_steps`` (inclusive), then ``second``."""

    def __init__(self, first: Agent, second: Agent, switch_steps: tuple[int, int]) -> None:
        self.first, self.second, self.switch_steps = first, second, switch_steps
        self._step, self._switch = 0, 0

    def reset(self, seed: int | None = None) -> None:
        """Resets both agents and draws the hand-over step."""
        self.first.reset(seed=seed)
        self.second.reset(seed=None if seed is None else seed + 1)
        lo, hi = self.switch_steps
        self._step, self._switch = 0, int(np.random.default_rng(seed).integers(lo, hi + 1))

    def act(self, obs: dict[str, Any]) -> np.ndarray:
        """``first``'s action before the hand-over, ``second``'s after."""
        self._step += 1
        return (self.first if self._step <= self._switch else self.second).act(obs)


def build_agents(env: gym.Env, make_expert: Callable[[gym.Env], Agent], make_noisy_expert: Callable[[gym.Env], Agent],
                 cfg: RolloutConfig) -> dict[str, Agent]:
    """The four agents of the mix for ``env``; the experts come from factories the scripts layer passes in."""
    return {
        "expert": make_expert(env),
        "degraded": DetourAgent(make_noisy_expert(env), cfg.random_box, cfg.detour_prob, cfg.detour_steps),
        "partial": SwitchAgent(make_expert(env), RandomPushAgent(cfg.random_box, cfg.random_hold_steps),
                               cfg.switch_steps),
        "random": RandomPushAgent(cfg.random_box, cfg.random_hold_steps),
    }


def agent_for_seed(seed: int, weights: Mapping[str, float]) -> str:
    """The agent of episode ``seed``: drawn by ``weights`` from a generator seeded by ``seed`` (reproducible)."""
    names = [name for name in AGENTS if weights.get(name, 0) > 0]
    p = np.array([weights[name] for name in names], dtype=float)
    return names[int(np.random.default_rng([seed, 7]).choice(len(names), p=p / p.sum()))]


# -------------------------------------------------------------------------------------------------- recording
def record_rollout(env: gym.Env, agent: Agent, seed: int, cfg: RolloutConfig, agent_name: str = "",
                   fps: float = 10.0) -> Rollout:
    """Runs one episode of ``agent`` from ``env.reset(seed=seed)`` and records image, progress and success per frame.

    Raises:
        KeyError: the env observes no ``cfg.image_key`` or its info has no ``cfg.progress_key`` (names the key).
    """
    obs, info = env.reset(seed=seed)
    agent.reset(seed=seed)
    if cfg.image_key not in obs or cfg.progress_key not in info:
        raise KeyError(f"rollouts need obs[{cfg.image_key!r}] and info[{cfg.progress_key!r}]; the env gives "
                       f"observations {sorted(obs)} and info {sorted(info)}")
    task = str(obs.get("task", info.get("task", "")))
    images, progress, success = [obs[cfg.image_key]], [info[cfg.progress_key]], [info.get("is_success", False)]
    while True:
        obs, _, terminated, truncated, info = env.step(np.asarray(agent.act(obs), dtype=np.float32))
        images.append(obs[cfg.image_key])
        progress.append(info[cfg.progress_key])
        success.append(info.get("is_success", False))
        if terminated or truncated:
            break
    return Rollout(np.stack(images).astype(np.uint8), np.clip(np.asarray(progress, np.float32), 0.0, 1.0),
                   np.asarray(success, bool), task, int(seed), agent_name, float(fps))


def save_rollout(rollout: Rollout, path: str | Path) -> Path:
    """Writes ``rollout`` to ``path`` (``.npz``, compressed) atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez_compressed(handle, images=rollout.images, progress=rollout.progress, success=rollout.success,
                            task=np.array(rollout.task), seed=np.array(rollout.seed), agent=np.array(rollout.agent),
                            fps=np.array(rollout.fps))
    return Path(path)


def load_rollout(path: str | Path) -> Rollout:
    """The :class:`Rollout` saved at ``path`` by :func:`save_rollout`."""
    with np.load(path) as data:
        return Rollout(data["images"], data["progress"], data["success"], str(data["task"]), int(data["seed"]),
                       str(data["agent"]), float(data["fps"]))


def collect_split(make_env: Callable[[], gym.Env], make_agents: Callable[[gym.Env], dict[str, Agent]],
                  root: str | Path, split: str, seeds: Iterable[int], cfg: RolloutConfig, fps: float) -> int:
    """Records one episode per seed into ``<root>/<split>/`` (seeds already on disk are skipped: resumable).

    Returns the number of episodes recorded by this call.
    """
    out = Path(root) / split
    todo = [seed for seed in seeds if not (out / f"episode_{seed:06d}.npz").exists()]
    if not todo:
        return 0
    env = make_env()
    try:
        agents = make_agents(env)
        for seed in tqdm(todo, desc=f"rollouts {split}", unit="ep"):
            name = agent_for_seed(seed, cfg.agent_weights)
            save_rollout(record_rollout(env, agents[name], seed, cfg, name, fps), out / f"episode_{seed:06d}.npz")
    finally:
        env.close()
    return len(todo)


def collect_rollouts(make_envs: Mapping[str, Callable[[], gym.Env]],
                     make_agents: Callable[[gym.Env], dict[str, Agent]], root: str | Path, cfg: RolloutConfig,
                     fps: float, env_meta: Mapping[str, Any] | None = None) -> dict[str, int]:
    """Collects every split of ``cfg.split_seeds()`` whose env factory ``make_envs[split]`` is given.

    ``env_meta`` (JSON-ready, e.g. each split's env config) is stored in ``meta/info.json``. Returns the episodes
    recorded per split.

    Raises:
        ValueError: a split with episodes has no env factory.
    """
    seeds = cfg.split_seeds()
    missing = [split for split, s in seeds.items() if s and split not in make_envs]
    if missing:
        raise ValueError(f"no env factory for the rollout splits {missing} (given: {sorted(make_envs)})")
    info = {"fps": fps, "image_key": cfg.image_key, "progress_key": cfg.progress_key,
            "splits": {split: {"seeds": [s[0], s[-1] + 1] if s else []} for split, s in seeds.items()},
            "env": dict(env_meta or {})}
    atomic_write_json(Path(root) / "meta" / "info.json", info)
    return {split: collect_split(make_envs[split], make_agents, root, split, s, cfg, fps)
            for split, s in seeds.items() if s}


def load_rollouts(root: str | Path, split: str, target_fps: float | None = 2.0) -> list[Rollout]:
    """Every episode of ``split`` under ``root``, sorted by seed, frames resampled to ``target_fps`` (None: as stored).

    Raises:
        FileNotFoundError: no such split folder or it holds no episode (names the path).
    """
    paths = sorted((Path(root) / split).glob("episode_*.npz"))
    if not paths:
        raise FileNotFoundError(f"no rollouts in {Path(root) / split}; collect them first (scripts/train_reward.py)")
    rollouts = [load_rollout(path) for path in paths]
    return rollouts if target_fps is None else [resample(r, target_fps) for r in rollouts]


def load_splits(root: str | Path, cfg: RolloutConfig, target_fps: float | None = 2.0) -> dict[str, list[Rollout]]:
    """:func:`load_rollouts` of every split with episodes in ``cfg`` (``train``, ``heldout``, ...)."""
    return {split: load_rollouts(root, split, target_fps) for split, seeds in cfg.split_seeds().items() if seeds}


def resample(rollout: Rollout, target_fps: float) -> Rollout:
    """``rollout`` with its frames (and their labels) resampled to ``target_fps``
    (:func:`policies.rewards.topreward.resample_indices`: the first and last frame always kept)."""
    idx = resample_indices(len(rollout.images), rollout.fps, target_fps)
    return Rollout(rollout.images[idx], rollout.progress[idx], rollout.success[idx], rollout.task, rollout.seed,
                   rollout.agent, float(target_fps))


def read_info(root: str | Path) -> dict:
    """``<root>/meta/info.json`` of a rollout set."""
    return json.loads((Path(root) / "meta" / "info.json").read_text())
