"""The training run: demos -> policy -> train loop -> evaluation -> checkpoints, logged to W&B."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch
from tqdm.auto import tqdm

from policies import checkpoint as ckpt
from policies.base import Policy
from policies.collect import Agent, record_episodes
from policies.datasets import ChunkWindowDataset, LeRobotDatasetReader
from policies.datasets.atomic import atomic_write_bytes, atomic_write_json
from policies.datasets.layout import DatasetError
from policies.datasets.metadata import load_info, load_json
from policies.ema import EMA
from policies.evaluation import EvalEnvs, Evaluator, save_eval_info
from policies.registry import make_policy
from policies.runtime import resolve_device, seed_everything
from policies.tracking import Tracker
from policies.train_config import TrainConfig

DEMONSTRATED_ENV_FILE = "meta/demonstrated_env.json"  # the env config the expert demonstrations were recorded in


@dataclass
class EnvFactories:
    """How the trainer reaches the simulator: through the gymnasium API only (injected by the script)."""

    make_env: Callable[[], gym.Env]  # one env, for demonstration collection
    make_vector_env: Callable[[int], gym.vector.VectorEnv]  # n parallel envs, for evaluation
    make_expert: Callable[[gym.Env], Agent]  # the demonstrator for an env
    fps: int  # control rate of the env (frames per second of the dataset)
    max_episode_steps: int  # episode length limit, in control steps
    metric_keys: tuple[str, ...]  # info keys evaluation reports (the env config's metric_keys, e.g. coverage)


class Trainer:
    """Runs one training job from a validated :class:`TrainConfig`.

    Phases (each a method): ``prepare_dataset`` (collect expert demos when missing), ``build`` (policy,
    optimizer, LR schedule, EMA, tracker; resume from the last checkpoint when ``resume=true``),
    ``train_step``, ``evaluate`` (EMA weights, vector envs, listed seeds) and ``save``. ``run`` strings them
    together and returns the final evaluation metrics.

    Batches are drawn with a generator seeded by ``(seed, step)``, so a resumed run sees exactly the batches
    the uninterrupted run would have seen; together with the restored RNG, optimizer, scheduler and EMA state
    the next loss after a resume equals the one without interruption.
    """

    def __init__(self, cfg: TrainConfig, resolved_config: dict[str, Any], envs: EnvFactories) -> None:
        self.cfg = cfg
        self.resolved_config = resolved_config
        self.envs = envs
        self.run_dir = Path(cfg.output_dir)
        self.device = resolve_device(cfg.device)
        self.step = 0

    # -------------------------------------------------------------------------------------------- phases
    def prepare_dataset(self) -> LeRobotDatasetReader:
        """Opens the demonstration dataset, collecting (or completing) it with the expert first if needed.

        Raises:
            ValueError: the dataset holds demonstrations of another env, or fewer than ``dataset.n_episodes``
                episodes that the scripted expert did not record (e.g. teleoperated): those are never topped up.
            DatasetError: a dataset file it reads is malformed (the message names it).
        """
        root = Path(self.cfg.dataset.root)
        demonstrated = {k: self.resolved_config["env"][k] for k in ("id", "kwargs", "expert")}
        by_expert = _check_demonstrated_env(root, demonstrated)
        held = _episodes_held(root)
        wanted = self.cfg.dataset.n_episodes
        if held < wanted:
            if held and not by_expert:
                raise ValueError(
                    f"dataset.root {str(root)!r} holds {held} episodes that the scripted expert did not record "
                    f"(no {DEMONSTRATED_ENV_FILE}: e.g. teleoperated with scripts/collect.py); it is never topped "
                    f"up with expert demos: set dataset.n_episodes={held} (or fewer) or use another dataset.root")
            self._collect(root, demonstrated)
        return LeRobotDatasetReader(root)

    def _collect(self, root: Path, demonstrated: dict[str, Any]) -> None:
        """Records expert demos until the dataset holds ``dataset.n_episodes``; marks it as expert-written first."""
        env = self.envs.make_env()
        try:
            stats = record_episodes(
                env,
                self.envs.make_expert(env),
                root,
                n_episodes=self.cfg.dataset.n_episodes,
                fps=self.envs.fps,
                start_seed=self.cfg.dataset.start_seed,
                keep_failed=self.cfg.dataset.keep_failed,
                extra_meta={DEMONSTRATED_ENV_FILE: demonstrated},
            )
        finally:
            env.close()
        print(f"collected {stats.episodes_saved} demos ({stats.frames} frames; the dataset held "
              f"{stats.episodes_before}), expert success {stats.success_rate:.2f}")

    def build(self, dataset: LeRobotDatasetReader) -> None:
        """Creates the policy, optimiser, schedule, EMA and window sampler; restores them when resuming."""
        cfg = self.cfg
        policy_cfg = dataclasses.asdict(cfg.policy)
        name = policy_cfg.pop("name")
        features = {k: v for k, v in dataset.features.items() if k.startswith("observation.") or k == "action"}
        stats = dict(dataset.stats)
        reference = policy_cfg.get("relative_action_key")
        if reference is not None:  # the policy predicts offsets: normalise with their per-index statistics
            offsets = ChunkWindowDataset(dataset, [reference], n_obs_steps=1, horizon=policy_cfg["horizon"])
            stats["action"] = offsets.relative_action_stats(reference)
        self.policy: Policy = make_policy(name, features, stats, policy_cfg).to(self.device)
        self.windows = ChunkWindowDataset(
            dataset,
            obs_keys=self.policy.input_keys,
            n_obs_steps=self.policy.config.n_obs_steps,
            horizon=self.policy.config.horizon,
        )
        self.optimizer = torch.optim.AdamW(
            self.policy.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, _warmup_cosine(cfg.optim))
        self.ema = EMA(self.policy, decay=cfg.optim.ema_decay) if cfg.optim.ema_decay > 0 else None
        if cfg.resume:
            self._resume()
        self.tracker = Tracker(
            project=cfg.logger.project,
            mode=cfg.logger.mode,
            run_dir=self.run_dir,
            config=self.resolved_config,
            name=cfg.logger.name,
            group=cfg.logger.group,
            tags=tuple(cfg.logger.tags),
            run_id=_read_run_id(self.run_dir) if cfg.resume else None,
        )
        atomic_write_bytes(self.run_dir / "wandb_run_id.txt", str(self.tracker.run_id or "").encode())

    def check_resume(self) -> Path:
        """The checkpoint ``resume=true`` continues from, checked against this run's config; nothing is touched.

        Raises:
            FileNotFoundError: the run dir holds no checkpoint.
            CheckpointError: a guarded setting differs from the checkpoint's (each key named) or a file is damaged.
        """
        last = ckpt.find_last_checkpoint(self.run_dir)
        if last is None:
            raise FileNotFoundError(f"resume=true but {self.run_dir / 'checkpoints'} holds no checkpoint")
        ckpt.check_resume_compatible(last, self.resolved_config)
        return last

    def _resume(self) -> None:
        last = self.check_resume()
        self.policy.load_state_dict(ckpt.load_training_weights(last, device=self.device))
        self.step = ckpt.load_training_state(last, self.optimizer, self.scheduler, self.ema)
        print(f"resumed from {last} at step {self.step}")

    def sample_batch(self, step: int) -> dict[str, torch.Tensor]:
        """The training batch of ``step``: windows drawn with replacement by a generator seeded by (seed, step)."""
        generator = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + step)
        indices = torch.randint(len(self.windows), (self.cfg.optim.batch_size,), generator=generator)
        batch = self.windows.get_batch(indices.numpy())
        return {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}

    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """One optimiser step; returns the logged losses."""
        self.policy.train()
        loss, logs = self.policy(batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.cfg.optim.grad_clip_norm)
        self.optimizer.step()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.step(self.policy)
        return {**logs, "loss": float(loss.item()), "grad_norm": float(grad_norm), "lr": self.scheduler.get_last_lr()[0]}

    def evaluate(self, n_episodes: int, tag: str) -> dict[str, Any]:
        """Evaluates the EMA weights on ``n_episodes`` listed seeds; logs and returns the metrics."""
        envs = EvalEnvs(self.envs.make_vector_env, self.envs.max_episode_steps, self.envs.fps, self.envs.metric_keys)
        evaluator = Evaluator.from_config(self.cfg.eval, envs, self.run_dir / "eval" / tag, self.device, n_episodes)
        with self._eval_weights():
            result = evaluator.run(self.policy)
        save_eval_info(self.run_dir / "eval" / tag / "eval_info.json", result)
        scalars = {f"eval/{k}": v for k, v in result.items() if isinstance(v, (int, float))}
        self.tracker.log(scalars, step=self.step)
        for path in result.get("video_paths", []):
            self.tracker.log_video("eval/video", path, step=self.step)
        return result

    def save(self) -> Path:
        """Writes a checkpoint of the current step atomically and prunes old ones."""
        return ckpt.save_checkpoint(
            self.run_dir,
            step=self.step,
            policy=self.policy,
            train_config=self.resolved_config,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            ema=self.ema,
            keep_last=self.cfg.keep_checkpoints,
        )

    def _eval_weights(self):
        return self.ema.applied(self.policy) if self.ema is not None else nullcontext()

    # ----------------------------------------------------------------------------------------------- run
    def run(self) -> dict[str, Any]:
        """Trains to ``optim.steps``, saves, evaluates on ``eval.n_episodes`` seeds and returns the figures.

        A resume is checked before any demonstration is collected; the final checkpoint is written before the
        final evaluation, so a failing evaluation loses no training.
        """
        cfg = self.cfg
        seed_everything(cfg.seed)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if cfg.resume:
            self.check_resume()
        dataset = self.prepare_dataset()
        self.build(dataset)
        try:
            self._train_loop()
            checkpoint = self.save()
            final = self.evaluate(cfg.eval.n_episodes, tag="final")
            figures = _headline(final, checkpoint, self.tracker.run_path)
            atomic_write_json(self.run_dir / "results.json", figures)
            self.tracker.log({f"final/{k}": v for k, v in figures.items() if isinstance(v, float)}, step=self.step)
        finally:
            self.tracker.finish()
        return figures

    def _train_loop(self) -> None:
        cfg = self.cfg
        with tqdm(total=cfg.optim.steps, initial=self.step, desc="training", unit="step") as bar:
            while self.step < cfg.optim.steps:
                logs = self.train_step(self.sample_batch(self.step))
                self.step += 1
                bar.update(1)
                if self.step % cfg.log_every == 0:
                    bar.set_postfix(loss=f"{logs['loss']:.4f}")
                    self.tracker.log({f"train/{k}": v for k, v in logs.items()}, step=self.step)
                if cfg.eval.every and self.step % cfg.eval.every == 0 and self.step < cfg.optim.steps:
                    self.evaluate(cfg.eval.n_episodes_during_training, tag=f"step_{self.step:06d}")
                if self.step % cfg.save_every == 0 and self.step < cfg.optim.steps:
                    self.save()


def _headline(result: dict[str, Any], checkpoint: Path, wandb_path: str | None) -> dict[str, Any]:
    return {
        "success_rate": float(result["success_rate"]),
        "success_ci_low": float(result["success_ci_low"]),
        "success_ci_high": float(result["success_ci_high"]),
        "mean_coverage": float(result.get("mean_coverage", float("nan"))),
        "n_episodes": int(result["n_episodes"]),
        "checkpoint": str(checkpoint),
        "wandb_run": str(wandb_path),
    }


def _warmup_cosine(optim_cfg) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < optim_cfg.warmup_steps:
            return (step + 1) / optim_cfg.warmup_steps
        progress = (step - optim_cfg.warmup_steps) / max(1, optim_cfg.steps - optim_cfg.warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return factor


def _check_demonstrated_env(root: Path, env: dict[str, Any]) -> bool:
    """Whether ``root`` holds scripted-expert demonstrations of ``env`` (``False``: no record of the expert).

    Raises:
        ValueError: ``root`` records an env config that differs from ``env``; the message names the keys.
        DatasetError: the record is not a JSON object; the message names its path.
    """
    path = root / DEMONSTRATED_ENV_FILE
    if not path.exists():
        return False
    stored = load_json(path)
    if not isinstance(stored, dict):
        raise DatasetError(f"{path}: expected a JSON object (the env config the demonstrations were recorded in), "
                           f"got {type(stored).__name__}")
    changed = sorted(k for k in set(stored) | set(env) if stored.get(k) != env.get(k))
    if changed:
        raise ValueError(f"dataset.root {str(root)!r} holds expert demonstrations of another env "
                         f"(env.{', env.'.join(changed)} differ from {path}); use another dataset.root")
    return True


def _episodes_held(root: Path) -> int:
    """Episodes committed in the dataset at ``root`` (0 when there is none); DatasetError naming a bad info.json."""
    return load_info(root)["total_episodes"] if (root / "meta" / "info.json").exists() else 0


def _read_run_id(run_dir: Path) -> str | None:
    path = run_dir / "wandb_run_id.txt"
    return (path.read_text().strip() or None) if path.exists() else None
