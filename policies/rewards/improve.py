"""On-policy improvement in the twin driven only by TOPReward progress (issue 16, item b).

From a trained checkpoint (flow-matching or VLA; its env must record a camera, e.g. ``realsim/PushTTargets-v0``'s
64x64 overhead view), each iteration ``i``:

1. **Roll out** the policy in ``n_rollouts`` vectorised twin episodes seeded ``rollout_seed + i * n_rollouts + j``;
   the policy's own sampling noise (torch seeded per iteration), optionally widened by ``noise_scale`` on the flow's
   initial noise, makes them differ (:mod:`policies.rewards.policy_rollouts`: frames, observations, actions).
2. **Score** every rollout with TOPReward (the ``reward`` backend; progress per frame, min-max per trajectory). With
   ``reward_source=coverage`` the twin's true progress (``info[progress_key]``) replaces it: the comparison run.
   Nothing else of the twin (success, coverage) enters the update in the TOPReward run; the twin's progress is read
   only to log how well TOPReward tracks it (``voc``: mean per-rollout Spearman; ``rank_spearman``: Spearman across
   rollouts between the final log-probability and the final true progress).
3. **Update** by reward-weighted regression (self-training): keep the best ``top_fraction`` of rollouts (TOPReward:
   by the final log-probability of ``True`` -- the success detector's score, comparable across rollouts, unlike the
   per-trajectory min-max progress; coverage: by the final true progress), cut them into the policy's training
   windows, and fine-tune with per-sample weights from the progress gained over each action chunk
   (:func:`policies.rewards.rabc.chunk_deltas` and :func:`~policies.rewards.rabc.rabc_weights`: 0 where progress
   falls, scaled into [0, 1]) through the ``sample_weights`` path of the flow-matching loss. A ``replay_fraction`` of
   every batch comes from the original demonstrations (weight 1), so the policy cannot drift far from the behaviour
   it was cloned from (self-training on its own samples alone collapses the action distribution).
4. **Checkpoint** atomically (``<run>/checkpoints/<iteration>/pretrained_model``, loadable by ``scripts/eval.py``);
   ``resume=true`` continues after the last complete iteration.

Why reward-weighted regression and not PPO on the flow's initial noise: PPO needs a value function and many
on-policy samples per update (thousands of episodes for a 2-D noise-space policy on PushT), and every TOPReward
score is a VLM pass over a video, so the sample budget of one CPU hour (about 200 episodes) would give a few noisy
policy-gradient steps. RWR reuses the training loss the policy was built with (flow matching, the same code path as
reward-aligned BC), turns every scored rollout into hundreds of supervised windows, needs no likelihood of the flow
(intractable without an ODE trace) and no critic, and with demo replay it is monotone in practice: it only imitates
chunks that the reward says made progress. It also matches how TOPReward is used in its paper (advantage-free
weights from progress deltas).

``Improver.run`` evaluates the starting checkpoint and the final policy on the same seeded episodes
(:class:`~policies.evaluation.Evaluator`) and returns ``success_rate_before`` / ``success_rate_after`` with Wilson
intervals. Per iteration it logs to W&B (``improve/*``) and ``improve_log.jsonl``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from policies import checkpoint as ckpt
from policies.base import Policy
from policies.common.flow import initial_noise_scale
from policies.datasets import ChunkWindowDataset, LeRobotDatasetReader
from policies.datasets.atomic import atomic_write_bytes, atomic_write_json
from policies.datasets.windows import TaskBatch
from policies.evaluation import EvalEnvs, Evaluator, save_eval_info
from policies.rewards.backends import build_topreward
from policies.rewards.config import RewardConfig
from policies.rewards.improve_config import ImproveConfig
from policies.rewards.policy_rollouts import PolicyRollouts, load_policy_rollouts, record_policy_rollouts
from policies.rewards.rabc import chunk_deltas, rabc_weights, weight_figures
from policies.rewards.topreward import TOPReward, voc
from policies.runtime import resolve_device, seed_everything
from policies.tracking import Tracker

__all__ = ["IMPROVE_LOG_FILE", "Improver", "RolloutScores", "RolloutWindows", "score_rollouts", "top_episodes"]

IMPROVE_LOG_FILE = "improve_log.jsonl"  # in the run dir: one JSON row per iteration
RESUME_GUARDED = ("improve.policy_path", "improve.reward", "improve.reward_source", "improve.n_rollouts",
                  "improve.rollout_seed", "improve.seed", "improve.batch_size", "improve.lr")


# ---------------------------------------------------------------------------------------------------------- scoring
@dataclasses.dataclass
class RolloutScores:
    """What the update uses of one iteration's rollouts, and what is logged about them."""

    progress: list[np.ndarray]  # per episode (T + 1,): the reward's progress at every video frame
    rank: np.ndarray  # (N,) higher is better: final log p(True) (topreward) or final true progress (coverage)
    figures: dict[str, float]


def score_rollouts(rollouts: PolicyRollouts, source: str, topreward: TOPReward | None, image_key: str,
                   score_batch: int = 8) -> RolloutScores:
    """Progress per frame of every rollout from ``source`` (``topreward``: ``topreward``'s scores of the video;
    ``coverage``: the twin's progress), plus the figures logged per iteration.

    Raises: ValueError: ``source`` is topreward and ``topreward`` is None, or an unknown source.
    """
    true = rollouts.progress
    figures = {"rollout_success_rate": float(np.mean(rollouts.success)),
               "mean_final_true_progress": float(np.mean([p[-1] for p in true]))}
    if source == "coverage":
        rank = np.array([p[-1] for p in true], dtype=np.float64)
        return RolloutScores([np.asarray(p, np.float64) for p in true], rank,
                             {**figures, "mean_progress": float(np.mean([p.mean() for p in true]))})
    if source != "topreward" or topreward is None:
        raise ValueError(f"reward_source {source!r} needs a TOPReward scorer (topreward) or is unknown")
    dataset = rollouts.dataset
    videos = rollouts.videos(dataset, image_key)
    tasks = [dataset.frame_task(dataset.episode_slice(e).start) for e in range(len(videos))]
    results = []
    for first in range(0, len(videos), score_batch):
        results += topreward.score_batch(videos[first:first + score_batch], tasks[first:first + score_batch],
                                         float(dataset.fps))
    progress = [r.progress for r in results]
    final = np.array([r.final_log_prob for r in results])
    figures |= {"mean_progress": float(np.mean([p.mean() for p in progress])),
                "mean_final_log_prob": float(final.mean()),
                "voc": float(np.mean([voc(p, t) for p, t in zip(progress, true, strict=True)])),
                "rank_spearman": voc(final, np.array([t[-1] for t in true]))}
    return RolloutScores(progress, final, figures)


def top_episodes(rank: np.ndarray, fraction: float) -> np.ndarray:
    """Indices (sorted) of the ``ceil(fraction * N)`` best episodes by ``rank`` (ties: the earlier episode)."""
    n_keep = max(1, int(np.ceil(fraction * len(rank))))
    order = np.argsort(-np.asarray(rank, dtype=np.float64), kind="stable")
    return np.sort(order[:n_keep])


# ------------------------------------------------------------------------------------------------- training windows
class RolloutWindows:
    """The training windows of the kept rollouts and their reward weights.

    Each episode's progress has ``T + 1`` values (its video ends with the observation after the last action), the
    dataset ``T`` frames; frame ``t`` of episode ``e`` is value ``t + e`` of the concatenated progress, and a chunk
    may reach the episode's final observation: ``delta = progress[min(t + H, T)] - progress[t]`` per episode.
    """

    def __init__(self, dataset: LeRobotDatasetReader, progress: list[np.ndarray], keep: np.ndarray,
                 obs_keys: list[str], n_obs_steps: int, horizon: int, scale: str) -> None:
        lengths = dataset.episode_lengths
        if len(progress) != len(lengths) or any(len(p) != n + 1 for p, n in zip(progress, lengths, strict=True)):
            raise ValueError(f"progress must hold T + 1 values for each of the {len(lengths)} episodes")
        self.windows = ChunkWindowDataset(dataset, obs_keys, n_obs_steps, horizon)
        episode = np.repeat(np.arange(len(lengths)), lengths)
        self.progress = np.concatenate(progress).astype(np.float64)
        self.padded = np.arange(dataset.num_frames) + episode
        self.padded_last = (dataset.episode_starts + lengths)[episode] + episode
        self.items = np.concatenate([np.arange(dataset.episode_starts[e], dataset.episode_starts[e] + lengths[e])
                                     for e in np.asarray(keep, dtype=np.int64)])
        self.horizon, self.scale = int(horizon), scale

    def weights(self, t: np.ndarray) -> np.ndarray:
        """``(B,)`` float32 weights of the windows starting at dataset frames ``t`` (statistics of this batch)."""
        t = np.asarray(t, dtype=np.int64)
        delta = chunk_deltas(self.progress, self.padded[t], self.horizon, self.padded_last[t])
        return rabc_weights(delta, self.scale)

    def batch(self, n: int, generator: torch.Generator) -> dict[str, Any]:
        """``n`` windows of the kept episodes drawn with replacement, with ``sample_weights``."""
        t = self.items[torch.randint(len(self.items), (n,), generator=generator).numpy()]
        batch = self.windows.get_batch(t)
        batch["sample_weights"] = torch.from_numpy(self.weights(t))
        return batch


def _demo_batch(windows: ChunkWindowDataset, n: int, generator: torch.Generator) -> dict[str, Any]:
    """``n`` demonstration windows drawn with replacement, weight 1."""
    batch = windows.get_batch(torch.randint(len(windows), (n,), generator=generator).numpy())
    batch["sample_weights"] = torch.ones(n)
    return batch


def _concat(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Two batches with the same keys as one (tensors concatenated, instructions joined)."""
    return {k: TaskBatch([*a[k], *b[k]]) if isinstance(a[k], list) else torch.cat([a[k], b[k]]) for k in a}


# ---------------------------------------------------------------------------------------------------------- the loop
class Improver:
    """Runs one improvement job from a validated :class:`ImproveConfig` (phases in the module docstring).

    ``policy`` is the starting checkpoint's policy (loaded from ``cfg.policy_path``), ``envs`` the twin it was
    trained in (the gymnasium side, injected by the script), ``resolved`` the run's resolved config (saved in every
    checkpoint under ``improve``, beside the starting checkpoint's own training config, so ``scripts/eval.py`` finds
    the env). ``make_reward`` builds the TOPReward scorer (tests inject stubs).

    Raises:
        ValueError: output_dir holds checkpoints and ``resume`` is false, or ``replay_fraction`` > 0 and the
            demonstrations cannot be found (both name the key).
    """

    def __init__(self, cfg: ImproveConfig, resolved: dict[str, Any], policy: Policy, envs: EvalEnvs,
                 make_reward: Callable[[RewardConfig], TOPReward] = build_topreward) -> None:
        self.cfg, self.envs, self.policy = cfg, envs, policy
        self.run_dir = Path(cfg.output_dir)
        self.device = resolve_device(cfg.device)
        self.train_config = ckpt.load_train_config(cfg.policy_path)
        self.saved_config = {**self.train_config, "improve": resolved}
        self.make_reward = make_reward
        self.iteration = 0
        self.history: list[dict[str, float]] = []

    # ------------------------------------------------------------------------------------------------ phases
    def build(self) -> None:
        """Optimiser, demo windows, reward scorer and tracker; restores the last iteration when resuming."""
        cfg = self.cfg
        self.policy.to(self.device)
        self.optimizer = torch.optim.AdamW(self.policy.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        last = ckpt.find_last_checkpoint(self.run_dir)
        if last is not None and not cfg.resume:
            raise ValueError(f"output_dir {str(self.run_dir)!r} already holds checkpoints ({last.name}): set "
                             f"resume=true to continue that run, or use another output_dir")
        if last is not None:
            self._resume(last)
        self.demos = self._demo_windows()
        self.topreward = self.make_reward(cfg.reward) if cfg.reward_source == "topreward" else None
        self.tracker = Tracker(cfg.logger.project, cfg.logger.mode, self.run_dir, self.saved_config,
                               name=cfg.logger.name, group=cfg.logger.group, tags=cfg.logger.tags,
                               run_id=_read_run_id(self.run_dir) if last is not None else None)
        if self.tracker.run_id is not None:
            atomic_write_bytes(self.run_dir / "wandb_run_id.txt", str(self.tracker.run_id).encode())

    def _resume(self, last: Path) -> None:
        """Raw weights, optimiser, RNG and the per-iteration history of checkpoint ``last``."""
        ckpt.check_resume_compatible(last, self.saved_config, RESUME_GUARDED)
        self.policy.load_state_dict(ckpt.load_training_weights(last, device=self.device))
        self.iteration = ckpt.load_training_state(last, self.optimizer)
        self.history = list(ckpt.load_training_meta(last).get("history", []))
        print(f"resumed from {last} after iteration {self.iteration}")

    def _demo_windows(self) -> ChunkWindowDataset | None:
        """The starting policy's demonstrations as training windows (None when ``replay_fraction`` is 0)."""
        if self.cfg.replay_fraction == 0:
            return None
        root = Path(self.cfg.demo_root or self.train_config.get("dataset", {}).get("root", ""))
        if not (root / "meta" / "info.json").is_file():
            raise ValueError(f"replay_fraction={self.cfg.replay_fraction} replays the demos, but demo_root "
                             f"{str(root)!r} holds no dataset: set demo_root=<the dataset the policy was trained on> "
                             f"or replay_fraction=0")
        config = self.policy.config
        return ChunkWindowDataset(LeRobotDatasetReader(root), self.policy.input_keys, config.n_obs_steps,
                                  config.horizon)

    def evaluate(self, tag: str) -> dict[str, Any]:
        """The policy on the listed evaluation seeds (``<run>/eval/<tag>/eval_info.json``; read back when present)."""
        path = self.run_dir / "eval" / tag / "eval_info.json"
        if path.is_file():
            return json.loads(path.read_text())
        evaluator = Evaluator.from_config(self.cfg.eval, self.envs, path.parent, self.device)
        result = evaluator.run(self.policy)
        save_eval_info(path, result)
        return result

    def rollouts(self, iteration: int) -> PolicyRollouts:
        """Iteration ``iteration``'s rollouts (recorded, or read back when a resumed run had finished them)."""
        root = self.run_dir / "rollouts" / f"iter_{iteration:03d}"
        done = load_policy_rollouts(root)
        if done is not None and list(done.seeds) == self.cfg.rollout_seeds(iteration):
            return done
        cfg, envs = self.cfg, self.envs
        self.policy.eval()
        with torch.random.fork_rng(), torch.no_grad(), initial_noise_scale(cfg.noise_scale):
            torch.manual_seed(cfg.seed * 1_000_003 + iteration)
            return record_policy_rollouts(self.policy, envs.make_vector_env, cfg.n_envs, cfg.rollout_seeds(iteration),
                                          envs.max_episode_steps, root, envs.fps, cfg.image_key, cfg.progress_key,
                                          cfg.instruction, self.device)

    def update(self, rollouts: PolicyRollouts, scores: RolloutScores, iteration: int) -> dict[str, float]:
        """``steps`` optimiser steps of weighted flow matching on the kept rollouts (+ replayed demos)."""
        cfg, config = self.cfg, self.policy.config
        keep = top_episodes(scores.rank, cfg.top_fraction)
        windows = RolloutWindows(rollouts.dataset, scores.progress, keep, self.policy.input_keys, config.n_obs_steps,
                                 config.horizon, cfg.scale)
        n_demo = round(cfg.batch_size * cfg.replay_fraction) if self.demos is not None else 0
        self.policy.train()
        totals = {"loss": 0.0, "rabc_weight_mean": 0.0, "rabc_zero_fraction": 0.0}
        torch.manual_seed(cfg.seed * 1_000_003 + 500_009 + iteration)  # the loss's noise and flow times
        for step in range(cfg.steps):
            generator = torch.Generator().manual_seed((cfg.seed * 1_000_003 + iteration) * 100_003 + step)
            batch = windows.batch(cfg.batch_size - n_demo, generator)
            logs = weight_figures(batch["sample_weights"].numpy())
            if n_demo:
                batch = _concat(batch, _demo_batch(self.demos, n_demo, generator))
            loss = self._step(batch)
            for key, value in {**logs, "loss": loss}.items():
                totals[key] += value / cfg.steps
        return {**totals, "kept_rollouts": float(len(keep))}

    def _step(self, batch: dict[str, Any]) -> float:
        """One AdamW step on ``batch`` (moved to the device); returns the loss."""
        batch = {k: v.to(self.device) for k, v in batch.items()}
        self.optimizer.zero_grad(set_to_none=True)
        loss, _ = self.policy(batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.cfg.grad_clip_norm)
        self.optimizer.step()
        return float(loss.item())

    def save(self) -> Path:
        """Checkpoint after iteration ``self.iteration`` (atomic; ``pretrained_model`` loads with load_policy)."""
        return ckpt.save_checkpoint(self.run_dir, step=self.iteration, policy=self.policy, optimizer=self.optimizer,
                                    train_config=self.saved_config, keep_last=self.cfg.keep_checkpoints,
                                    training_meta={"history": self.history})

    def iterate(self) -> dict[str, float]:
        """One iteration: rollouts, scores, update, checkpoint, logs; returns its figures."""
        i = self.iteration
        rollouts = self.rollouts(i)
        scores = score_rollouts(rollouts, self.cfg.reward_source, self.topreward, self.cfg.image_key,
                                self.cfg.score_batch)
        figures = {**scores.figures, **self.update(rollouts, scores, i)}
        self.iteration, self.history = i + 1, [*self.history, {"iteration": i + 1, **figures}]
        self.save()
        self.tracker.log({f"improve/{k}": v for k, v in figures.items()}, step=self.iteration)
        with open(self.run_dir / IMPROVE_LOG_FILE, "a") as log:
            log.write(json.dumps({"iteration": self.iteration, **figures}) + "\n")
        return figures

    # ---------------------------------------------------------------------------------------------------- run
    def run(self) -> dict[str, Any]:
        """Evaluates the start, improves for ``iterations``, evaluates the end; returns the headline figures."""
        seed_everything(self.cfg.seed)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.build()
        try:
            before = self._evaluate_start()
            with tqdm(total=self.cfg.iterations, initial=self.iteration, desc="improve", unit="iter") as bar:
                while self.iteration < self.cfg.iterations:
                    figures = self.iterate()
                    bar.update(1)
                    bar.set_postfix(success=f"{figures['rollout_success_rate']:.2f}", loss=f"{figures['loss']:.3f}")
            after = self.evaluate(f"after_{self.iteration:03d}")
            figures = _headline(before, after, self.cfg, self.history)
            atomic_write_json(self.run_dir / "results.json", figures)
            self.tracker.log({f"final/{k}": v for k, v in figures.items() if isinstance(v, float)},
                             step=self.iteration)
        finally:
            self.tracker.finish()
        return figures

    def _evaluate_start(self) -> dict[str, Any]:
        """The starting checkpoint's evaluation (before any update; read back on resume)."""
        path = self.run_dir / "eval" / "before" / "eval_info.json"
        if self.iteration > 0 and not path.is_file():
            raise ValueError(f"resume: {path} is missing, so the starting checkpoint's success is unknown; start a "
                             f"new output_dir")
        if self.iteration > 0:
            return json.loads(path.read_text())
        result = self.evaluate("before")  # the starting checkpoint's evaluated (EMA) weights, as loaded
        self.tracker.log({"eval/success_rate": result["success_rate"]}, step=0)
        return result


def _headline(before: dict[str, Any], after: dict[str, Any], cfg: ImproveConfig,
              history: list[dict[str, float]]) -> dict[str, Any]:
    """``success_rate_before`` / ``_after`` with their Wilson intervals, the gain, the reward source, the last
    iteration's reward figures."""
    figures: dict[str, Any] = {}
    for name, result in (("before", before), ("after", after)):
        figures[f"success_rate_{name}"] = float(result["success_rate"])
        figures[f"success_ci_low_{name}"] = float(result["success_ci_low"])
        figures[f"success_ci_high_{name}"] = float(result["success_ci_high"])
    figures["success_gain_points"] = 100.0 * (figures["success_rate_after"] - figures["success_rate_before"])
    figures["n_episodes"] = int(after["n_episodes"])
    figures["iterations"] = len(history)
    figures["reward_source"] = cfg.reward_source
    for key in ("voc", "rank_spearman", "mean_progress"):
        if history and key in history[-1]:
            figures[f"last_{key}"] = float(history[-1][key])
    return figures


def _read_run_id(run_dir: Path) -> str | None:
    path = run_dir / "wandb_run_id.txt"
    return (path.read_text().strip() or None) if path.exists() else None
