"""Twin videos for the streaming video model (issue 19), labelled per frame from the twin's own state.

Episodes of the reward rollouts' agent mix (:mod:`policies.rewards.rollouts`: expert, degraded expert, expert then
random, random) in a disturbed env (random pushes on the block, ``env.kwargs.randomization.push_force``). Per frame:
the overhead image, the block pose (x, y m, yaw rad, ``info["block_pose"]``), progress (``info[progress_key]``) and
success (``info["is_success"]``), and the events of :data:`perception.streaming.config.EVENTS` that the twin's state
gives:

* ``block_moved_externally``: a disturbance push began during the step that led to this frame (the env's
  ``n_pushes`` counter, read through ``gymnasium.Env.get_wrapper_attr``), and the next ``event_frames - 1`` frames;
* ``contact_lost``: the pusher touched the block at the previous frame and does not now (pusher centre inside the T
  grown by ``contact_distance``, the T read as the env's ``shape``), and the next ``event_frames - 1`` frames;
* ``block_off_table``: the block's origin outside ``table_box`` (every frame while it is off);
* ``camera_frozen_or_replayed``: always 0 here: the clip sampler injects frozen and replayed frames
  (:mod:`policies.streaming.clips`).

A fraction ``shove_prob`` of episodes runs in a "shove" env whose pushes are ``shove_force`` N (a factory the scripts
layer passes), so blocks do leave the table; such an episode ends ``steps_after_off_table`` steps after its block
left. After a success the agent keeps acting for ``steps_after_success`` steps (the env terminates on success), so
success is not only an episode's last frame.

Layout (one ``.npz`` per episode, written atomically: a killed collection resumes losing at most one)::

    <root>/meta/info.json                     fps, events, label settings, per split its seeds, the env
    <root>/<split>/episode_<seed>.npz         images (T,H,W,3) uint8, pose (T,3) float32, progress (T,) float32,
                                              success (T,) bool, events (T,4) bool, contact (T,) bool,
                                              task, seed, agent, shove, fps
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from tqdm.auto import tqdm

from perception.streaming.config import EVENTS
from policies.collect import Agent
from policies.datasets.atomic import atomic_path, atomic_write_json
from policies.rewards.rollouts import RolloutConfig, agent_for_seed

EVENT_INDEX = {name: i for i, name in enumerate(EVENTS)}
SPLITS = ("train", "heldout")
MakeEnv = Callable[[bool], gym.Env]  # shove -> env (shove=True: the strong-push variant)


@dataclass
class StreamLabelConfig:
    """How the events are read from the twin's state, and the shove episodes (m, s, N)."""

    event_frames: int = 2  # frames labelled from an instantaneous event (push start, contact loss) on
    contact_distance: float = 0.02  # m: pusher centre within this of the T (a box grow) counts as contact
    table_box: tuple[float, float, float, float] = (-0.2, -0.5, 1.0, 0.5)  # x0, y0, x1, y1 of the table top (MJCF)
    shove_prob: float = 0.1  # fraction of episodes (drawn from the seed) in the shove env
    shove_force: float = 10.0  # N, the shove env's push force (the scripts layer builds that env)
    steps_after_success: int = 10  # steps recorded after the env terminates on success
    steps_after_off_table: int = 10  # steps recorded after the block leaves the table_box (then the episode ends)

    def __post_init__(self) -> None:
        if self.event_frames < 1 or self.steps_after_success < 0 or self.steps_after_off_table < 0:
            raise ValueError(f"labels.event_frames must be >= 1, labels.steps_after_success and "
                             f"steps_after_off_table >= 0, got {self.event_frames}, {self.steps_after_success}, "
                             f"{self.steps_after_off_table}")
        if self.contact_distance < 0 or self.shove_force < 0 or not 0 <= self.shove_prob <= 1:
            raise ValueError(f"labels.contact_distance and shove_force must be >= 0, shove_prob in [0, 1]; got "
                             f"{self.contact_distance}, {self.shove_force}, {self.shove_prob}")
        x0, y0, x1, y1 = self.table_box
        if not (x0 < x1 and y0 < y1):
            raise ValueError(f"labels.table_box must be (x0, y0, x1, y1) with x0 < x1, y0 < y1, got {self.table_box}")


@dataclass
class StreamDataConfig:
    """What to collect: splits, seeds and agent mix (:class:`RolloutConfig`; its ``train`` and ``heldout`` splits,
    ``n_heldout_instructions`` is not used) and the labels."""

    rollouts: RolloutConfig = field(default_factory=lambda: RolloutConfig(
        n_train=150, n_heldout=30, n_heldout_instructions=0))
    labels: StreamLabelConfig = field(default_factory=StreamLabelConfig)


@dataclass
class StreamEpisode:
    """One labelled video (module docstring); arrays share their first dimension T."""

    images: np.ndarray  # (T, H, W, 3) uint8
    pose: np.ndarray  # (T, 3) float32: x, y (m), yaw (rad)
    progress: np.ndarray  # (T,) float32 in [0, 1]
    success: np.ndarray  # (T,) bool
    events: np.ndarray  # (T, len(EVENTS)) bool
    contact: np.ndarray  # (T,) bool, pusher touching the block
    task: str
    seed: int
    agent: str
    shove: bool
    fps: float

    def __post_init__(self) -> None:
        n = len(self.images)
        if self.events.shape != (n, len(EVENTS)) or self.pose.shape != (n, 3):
            raise ValueError(f"StreamEpisode: events must be ({n}, {len(EVENTS)}) and pose ({n}, 3), got "
                             f"{self.events.shape}, {self.pose.shape}")
        if not all(len(a) == n for a in (self.progress, self.success, self.contact)):
            raise ValueError("StreamEpisode: progress, success and contact must have one value per image")


# ------------------------------------------------------------------------------------------------- labels
def in_contact(shape: Any, pose: np.ndarray, pusher_xy: np.ndarray, distance: float) -> bool:
    """Whether the pusher centre ``pusher_xy`` (m) is within ``distance`` of the T at planar ``pose`` (``shape``:
    anything with ``contains(block_frame_point, margin)``, the env's T)."""
    c, s = np.cos(pose[2]), np.sin(pose[2])
    d = np.asarray(pusher_xy, float) - pose[:2]
    return bool(shape.contains(np.array([c * d[0] + s * d[1], -s * d[0] + c * d[1]]), margin=distance))


def derive_events(pose: np.ndarray, contact: np.ndarray, pushes: np.ndarray, cfg: StreamLabelConfig) -> np.ndarray:
    """(T, len(EVENTS)) bool labels from per-frame block ``pose`` (T, 3), ``contact`` (T,) and the running push count
    ``pushes`` (T,) (module docstring); the camera column stays 0."""
    n = len(pose)
    events = np.zeros((n, len(EVENTS)), bool)
    began = np.flatnonzero(np.diff(pushes, prepend=pushes[:1]) > 0)
    lost = np.flatnonzero(contact[:-1] & ~contact[1:]) + 1
    for name, starts in (("block_moved_externally", began), ("contact_lost", lost)):
        for t in starts:
            events[t:t + cfg.event_frames, EVENT_INDEX[name]] = True
    events[:, EVENT_INDEX["block_off_table"]] = off_table(pose, cfg.table_box)
    return events


def off_table(pose: np.ndarray, table_box: tuple[float, float, float, float]) -> np.ndarray | bool:
    """Whether the block origin(s) of ``pose`` (..., 3) (x, y m) lie outside ``table_box`` (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = table_box
    x, y = np.asarray(pose)[..., 0], np.asarray(pose)[..., 1]
    out = (x < x0) | (x > x1) | (y < y0) | (y > y1)
    return bool(out) if np.ndim(out) == 0 else out


def is_shove(seed: int, prob: float) -> bool:
    """Whether episode ``seed`` runs in the shove env (drawn from the seed: reproducible)."""
    return bool(np.random.default_rng([seed, 11]).random() < prob)


# ---------------------------------------------------------------------------------------------- recording
def _push_count(env: gym.Env) -> int:
    """The env's disturbance pushes so far (0 for an env without the counter)."""
    try:
        return int(env.get_wrapper_attr("n_pushes"))
    except AttributeError:
        return 0


def record_stream(env: gym.Env, agent: Agent, seed: int, data: StreamDataConfig, agent_name: str = "",
                  fps: float = 10.0, shove: bool = False) -> StreamEpisode:
    """Runs one episode of ``agent`` from ``env.reset(seed=seed)`` and labels every frame (module docstring).

    Raises:
        KeyError: the env observes no image or its info lacks the progress key or ``block_pose`` (names them).
    """
    cfg, labels = data.rollouts, data.labels
    obs, info = env.reset(seed=seed)
    agent.reset(seed=seed)
    if cfg.image_key not in obs or cfg.progress_key not in info or "block_pose" not in info:
        raise KeyError(f"streams need obs[{cfg.image_key!r}], info[{cfg.progress_key!r}] and info['block_pose']; the "
                       f"env gives observations {sorted(obs)} and info {sorted(info)}")
    shape = env.get_wrapper_attr("shape")
    frames: dict[str, list] = {k: [] for k in ("images", "pose", "progress", "success", "contact", "pushes")}

    def record(obs: dict, info: dict) -> None:
        pose = np.asarray(info["block_pose"], float)
        frames["images"].append(obs[cfg.image_key])
        frames["pose"].append(pose)
        frames["progress"].append(info[cfg.progress_key])
        frames["success"].append(bool(info.get("is_success", False)))
        frames["contact"].append(in_contact(shape, pose, info["pusher_xy"], labels.contact_distance))
        frames["pushes"].append(_push_count(env))

    record(obs, info)
    extra = None  # steps left after a success ended the episode, or after the block left the table
    while extra != 0:
        obs, _, terminated, truncated, info = env.step(np.asarray(agent.act(obs), dtype=np.float32))
        record(obs, info)
        if extra is not None:
            extra -= 1
        elif truncated or (terminated and not info.get("is_success", False)):
            break
        elif terminated:
            extra = labels.steps_after_success
        elif off_table(frames["pose"][-1], labels.table_box):
            extra = labels.steps_after_off_table  # a block gone over the edge falls for good: stop, as an operator
    pose = np.asarray(frames["pose"], np.float32)
    contact = np.asarray(frames["contact"], bool)
    events = derive_events(pose, contact, np.asarray(frames["pushes"]), labels)
    return StreamEpisode(np.stack(frames["images"]).astype(np.uint8), pose,
                         np.clip(np.asarray(frames["progress"], np.float32), 0.0, 1.0),
                         np.asarray(frames["success"], bool), events, contact,
                         str(obs.get("task", info.get("task", ""))), int(seed), agent_name, bool(shove), float(fps))


def save_stream(episode: StreamEpisode, path: str | Path) -> Path:
    """Writes ``episode`` to ``path`` (``.npz``, compressed) atomically."""
    arrays = {k: (np.array(v) if not isinstance(v, np.ndarray) else v) for k, v in vars(episode).items()}
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez_compressed(handle, **arrays)
    return Path(path)


def load_stream(path: str | Path) -> StreamEpisode:
    """The :class:`StreamEpisode` saved at ``path`` by :func:`save_stream`."""
    with np.load(path) as d:
        return StreamEpisode(d["images"], d["pose"], d["progress"], d["success"], d["events"], d["contact"],
                             str(d["task"]), int(d["seed"]), str(d["agent"]), bool(d["shove"]), float(d["fps"]))


def load_streams(root: str | Path, split: str, limit: int = 0) -> list[StreamEpisode]:
    """Every episode of ``split`` under ``root`` sorted by seed (the first ``limit`` when > 0).

    Raises:
        FileNotFoundError: no episode there (names the folder).
    """
    paths = sorted((Path(root) / split).glob("episode_*.npz"))
    if not paths:
        raise FileNotFoundError(f"no streams in {Path(root) / split}; collect them first (scripts/train_streaming.py)")
    return [load_stream(p) for p in (paths[:limit] if limit > 0 else paths)]


# --------------------------------------------------------------------------------------------- collection
def collect_stream_split(make_env: MakeEnv, make_agents: Callable[[gym.Env], dict[str, Agent]], root: str | Path,
                         split: str, seeds: Iterable[int], data: StreamDataConfig, fps: float) -> int:
    """Records one episode per seed into ``<root>/<split>/`` (seeds on disk are skipped: resumable); each episode in
    the shove env when :func:`is_shove` says so. Returns the episodes recorded by this call."""
    out = Path(root) / split
    todo = [seed for seed in seeds if not (out / f"episode_{seed:06d}.npz").exists()]
    envs: dict[bool, tuple[gym.Env, dict[str, Agent]]] = {}
    try:
        for seed in tqdm(todo, desc=f"streams {split}", unit="ep"):
            shove = is_shove(seed, data.labels.shove_prob)
            if shove not in envs:
                env = make_env(shove)
                envs[shove] = (env, make_agents(env))
            env, agents = envs[shove]
            name = agent_for_seed(seed, data.rollouts.agent_weights)
            episode = record_stream(env, agents[name], seed, data, name, fps, shove)
            save_stream(episode, out / f"episode_{seed:06d}.npz")
    finally:
        for env, _ in envs.values():
            env.close()
    return len(todo)


def collect_streams(make_env: MakeEnv, make_agents: Callable[[gym.Env], dict[str, Agent]], root: str | Path,
                    data: StreamDataConfig, fps: float, env_meta: Mapping[str, Any] | None = None) -> dict[str, int]:
    """Collects the ``train`` and ``heldout`` splits of ``data.rollouts`` into ``root``; ``env_meta`` (JSON-ready)
    goes to ``meta/info.json``. Returns the episodes recorded per split."""
    seeds = {split: s for split, s in data.rollouts.split_seeds().items() if s and split in SPLITS}
    info = {"fps": fps, "events": list(EVENTS), "labels": asdict(data.labels),
            "splits": {split: {"seeds": [s[0], s[-1] + 1]} for split, s in seeds.items()}, "env": dict(env_meta or {})}
    atomic_write_json(Path(root) / "meta" / "info.json", info)
    return {split: collect_stream_split(make_env, make_agents, root, split, s, data, fps) for split, s in seeds.items()}
