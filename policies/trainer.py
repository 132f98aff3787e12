"""The training run: demos -> policy -> train loop -> evaluation -> checkpoints, logged to W&B."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from policies import checkpoint as ckpt
from policies import distributed
from policies.augment import augment_batch
from policies.base import Policy
from policies.collect import Agent, executed_action, record_episodes
from policies.datasets import ChunkWindowDataset, LeRobotDatasetReader
from policies.datasets.atomic import atomic_write_bytes, atomic_write_json
from policies.datasets.layout import DatasetError
from policies.datasets.metadata import load_info, load_json
from policies.ema import EMA
from policies.evaluation import EvalEnvs, Evaluator, save_eval_info
from policies.registry import make_policy
from policies.rewards.rabc import ChunkWeights, dataset_progress, weight_figures
from policies.rewards.rollouts import DetourAgent
from policies.runtime import resolve_device, seed_everything
from policies.tracking import Tracker
from policies.train_config import DegradedExpertConfig, TrainConfig

DEMONSTRATED_ENV_FILE = "meta/demonstrated_env.json"  # the env config the expert demonstrations were recorded in
TRAIN_LOG_FILE = "train_log.jsonl"  # in the run dir: one JSON row {"step", "train/<name>": value} per logged step
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class EnvFactories:
    """How the trainer reaches the simulator: through the gymnasium API only (injected by the script)."""

    make_env: Callable[[], gym.Env]  # one env, for demonstration collection
    make_vector_env: Callable[[int], gym.vector.VectorEnv]  # n parallel envs, for evaluation
    make_expert: Callable[[gym.Env], Agent]  # the demonstrator for an env
    fps: int  # control rate of the env (frames per second of the dataset)
    max_episode_steps: int  # episode length limit, in control steps
    metric_keys: tuple[str, ...]  # info keys evaluation reports (the env config's metric_keys, e.g. coverage)
    # the expert with Gaussian action noise (m) and a random-contact probability: (env, noise_std, random_contact_prob)
    # -> agent; needed only for dataset.degraded_fraction > 0
    make_noisy_expert: Callable[[gym.Env, float, float], Agent] | None = None


class MixedAgent:
    """``degraded`` for a share ``fraction`` of the episodes, ``expert`` for the rest: the choice is drawn at each
    ``reset`` from a generator seeded by the episode seed (reproducible; ``last_degraded`` tells which acted)."""

    def __init__(self, expert: Agent, degraded: Agent, fraction: float) -> None:
        self.expert, self.degraded, self.fraction = expert, degraded, float(fraction)
        self.last_degraded, self._agent = False, expert

    def reset(self, seed: int | None = None) -> None:
        """Draws this episode's demonstrator and resets it."""
        self.last_degraded = bool(np.random.default_rng(None if seed is None else [seed, 11]).random() < self.fraction)
        self._agent = self.degraded if self.last_degraded else self.expert
        self._agent.reset(seed=seed)

    def act(self, obs: dict[str, Any]) -> np.ndarray:
        """This episode's demonstrator's action."""
        return self._agent.act(obs)

    def explore(self, action: np.ndarray) -> np.ndarray:
        """This episode's demonstrator's executed action (:func:`policies.collect.executed_action`)."""
        return executed_action(self._agent, action)


def degraded_expert(env: gym.Env, envs: EnvFactories, cfg: DegradedExpertConfig) -> Agent:
    """The degraded demonstrator of :class:`DegradedExpertConfig` for ``env``.

    Raises: ValueError: ``envs`` has no ``make_noisy_expert`` (names dataset.degraded_fraction).
    """
    if envs.make_noisy_expert is None:
        raise ValueError("dataset.degraded_fraction > 0 needs EnvFactories.make_noisy_expert (the scripts layer "
                         "passes it: scripts/_entry.py env_factories)")
    noisy = envs.make_noisy_expert(env, cfg.noise_std, cfg.random_contact_prob)
    return DetourAgent(noisy, tuple(cfg.random_box), cfg.detour_prob, cfg.detour_steps)


class Trainer:
    """Runs one training job from a validated :class:`TrainConfig`.

    Phases (each a method): ``prepare_dataset`` (collect expert demos when missing), ``build`` (policy,
    optimizer, LR schedule, EMA, tracker; resume from the last checkpoint when ``resume=true``),
    ``train_step``, ``evaluate`` (EMA weights, vector envs, listed seeds) and ``save``. ``run`` strings them
    together and returns the final evaluation metrics.

    Batches are drawn with a generator seeded by ``(seed, step)``, so a resumed run sees exactly the batches
    the uninterrupted run would have seen; together with the restored RNG, optimizer, scheduler and EMA state
    the next loss after a resume equals the one without interruption.

    Under ``torchrun`` (:mod:`policies.distributed`) the policy is wrapped in DistributedDataParallel, each rank
    trains on its shards of the global batch, and rank 0 alone collects demos, writes checkpoints, logs and
    evaluates (the others wait at a barrier). Gradient accumulation, image augmentation (``augment``), mixed
    precision (``optim.amp``) and ``torch.compile`` (``compile``) apply on one process or many.

    Raises:
        ValueError: ``optim.amp`` asks for mixed precision the device cannot run (fp16 off CUDA; bf16 on CPU
            without ``optim.amp_on_cpu``).
    """

    def __init__(self, cfg: TrainConfig, resolved_config: dict[str, Any], envs: EnvFactories) -> None:
        self.cfg = cfg
        self.resolved_config = resolved_config
        self.envs = envs
        self.run_dir = Path(cfg.output_dir)
        self.device = resolve_device(cfg.device)
        _check_amp(cfg.optim, self.device)
        self.dist = distributed.DistContext(device=self.device)  # one process until run() joins torchrun's group
        self.step = 0
        self._resumed_meta: dict[str, Any] = {}

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
        if self.cfg.dataset.degraded_fraction > 0:  # a mixed dataset records its degraded demonstrator too
            demonstrated["degraded"] = {"fraction": self.cfg.dataset.degraded_fraction,
                                        **dataclasses.asdict(self.cfg.dataset.degraded)}
        schema_defaults = {key: json.loads(json.dumps(dataclasses.asdict(type(getattr(self.cfg.env, key))())))
                           for key in ("kwargs", "expert")}
        by_expert = _check_demonstrated_env(root, demonstrated, schema_defaults)
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
                self._demonstrator(env),
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

    def _demonstrator(self, env: gym.Env) -> Agent:
        """The expert, or with ``dataset.degraded_fraction`` > 0 the expert mixed with the degraded one per episode."""
        expert, data = self.envs.make_expert(env), self.cfg.dataset
        if data.degraded_fraction == 0:
            return expert
        return MixedAgent(expert, degraded_expert(env, self.envs, data.degraded), data.degraded_fraction)

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
        self.image_keys = [k for k in self.policy.input_keys if self.policy.feature_kinds[k] == "visual"]
        if cfg.augment.enabled and not self.image_keys:
            raise ValueError(f"augment.random_shift={cfg.augment.random_shift} / augment.crop_scale="
                             f"{cfg.augment.crop_scale} augment images, but the policy takes no image input "
                             f"({self.policy.input_keys}): set them off (0 and 1.0) or train on images")
        self.windows = ChunkWindowDataset(
            dataset,
            obs_keys=self.policy.input_keys,
            n_obs_steps=self.policy.config.n_obs_steps,
            horizon=self.policy.config.horizon,
        )
        self.chunk_weights = self._build_chunk_weights(dataset)
        # several processes: DDP broadcasts rank 0's weights now, before the optimiser and the EMA copy them
        self.ddp = DistributedDataParallel(
            self.policy, device_ids=[self.device] if self.device.type == "cuda" else None, broadcast_buffers=False,
        ) if self.dist.enabled else None
        self.optimizer = torch.optim.AdamW(
            self.policy.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, _warmup_cosine(cfg.optim))
        self.ema = EMA(self.policy, decay=cfg.optim.ema_decay) if cfg.optim.ema_decay > 0 else None
        self.scaler = torch.amp.GradScaler(self.device.type) if cfg.optim.amp == "fp16" else None
        if cfg.resume:
            self._resume()
        self.layout = distributed.BatchLayout.for_run(
            cfg.optim.batch_size, cfg.optim.grad_accum_steps, self.dist, self._resumed_meta.get("batch_shards"))
        module = self.ddp if self.ddp is not None else self.policy
        self.train_module = torch.compile(module) if cfg.compile else module
        self.tracker = self._make_tracker()

    def _build_chunk_weights(self, dataset: LeRobotDatasetReader) -> ChunkWeights | None:
        """Reward-aligned BC's sample weights (None without a ``reward``): rank 0 scores the dataset with TOPReward
        (or reads the cache) while the others wait, then they read the cache."""
        cfg = self.cfg
        if cfg.reward is None:
            return None
        progress = dataset_progress(dataset, cfg.reward, cfg.rabc) if self.dist.is_main else None
        distributed.barrier(self.dist)
        if progress is None:
            progress = dataset_progress(dataset, cfg.reward, cfg.rabc)
        return ChunkWeights(dataset, progress, self.policy.config.horizon, cfg.rabc.scale)

    def _make_tracker(self) -> Tracker:
        """The W&B tracker: rank 0's logs; the other ranks get a disabled one (they log nothing)."""
        cfg, main = self.cfg, self.dist.is_main
        tracker = Tracker(
            project=cfg.logger.project,
            mode=cfg.logger.mode if main else "disabled",
            run_dir=self.run_dir,
            config=self.resolved_config,
            name=cfg.logger.name,
            group=cfg.logger.group,
            tags=tuple(cfg.logger.tags),
            run_id=_read_run_id(self.run_dir) if cfg.resume and main else None,
        )
        if main:
            atomic_write_bytes(self.run_dir / "wandb_run_id.txt", str(tracker.run_id or "").encode())
        return tracker

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
        """Every rank loads rank 0's last checkpoint: weights, optimiser, schedule, EMA, RNG, batch layout, scaler."""
        last = Path(distributed.broadcast(str(self.check_resume()) if self.dist.is_main else None, self.dist))
        self.policy.load_state_dict(ckpt.load_training_weights(last, device=self.device))
        self.step = ckpt.load_training_state(last, self.optimizer, self.scheduler, self.ema)
        self._resumed_meta = ckpt.load_training_meta(last)
        if self.scaler is not None and "grad_scaler" in self._resumed_meta:
            self.scaler.load_state_dict(self._resumed_meta["grad_scaler"])
        if self.dist.is_main:
            print(f"resumed from {last} at step {self.step}")

    def sample_batch(self, step: int) -> dict[str, Any]:
        """This rank's part of the training batch of ``step`` (its shards, in order; the whole batch on one process).

        The global batch is ``batch_size x grad_accum_steps`` windows drawn with replacement by a generator seeded by
        (seed, step): the same on every rank and for any number of processes. With a ``reward`` (reward-aligned BC)
        the batch carries ``sample_weights`` ``(B,)``, made from the statistics of the global batch.
        """
        generator = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + step)
        indices = torch.randint(len(self.windows), (self.layout.global_batch,), generator=generator)
        batch = self.windows.get_batch(self.layout.rank_indices(indices).numpy())
        if getattr(self, "chunk_weights", None) is not None:
            weights = torch.from_numpy(self.chunk_weights(indices.numpy()))
            batch["sample_weights"] = self.layout.rank_indices(weights)
        return {k: v.to(self.device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}

    def train_step(self, batch: dict[str, Any]) -> dict[str, float]:
        """One optimiser step over this rank's shards of the batch (micro-batches, gradients accumulated and, with
        several processes, averaged over all shards); returns the logged values, averaged over this rank's shards."""
        self.policy.train()
        self.optimizer.zero_grad(set_to_none=True)
        shards, size = self.layout.shards, self.layout.shard_size
        totals: dict[str, float] = {}
        for i, shard in enumerate(shards):
            micro = batch if len(shards) == 1 else {k: v[i * size:(i + 1) * size] for k, v in batch.items()}
            sync = self.ddp is None or i == len(shards) - 1  # DDP averages the gradients once, after the last one
            with nullcontext() if sync else self.ddp.no_sync(), \
                    distributed.shard_rng(self.layout, self.cfg.seed, self.step, shard, self.device):
                loss, logs = self._forward(micro)
                self._backward(loss if len(shards) == 1 else loss / len(shards))
            for key, value in {**logs, "loss": loss.item()}.items():
                totals[key] = totals.get(key, 0.0) + float(value)
        grad_norm = self._optimizer_step()
        logs = {k: v / len(shards) for k, v in totals.items()}
        if "sample_weights" in batch:  # reward-aligned BC: train/rabc_weight_mean, train/rabc_zero_fraction
            logs.update(weight_figures(batch["sample_weights"].cpu().numpy()))
        return {**logs, "grad_norm": float(grad_norm), "lr": self.scheduler.get_last_lr()[0]}

    def _forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        """The policy's loss on one micro-batch: images augmented, under autocast when ``optim.amp`` is on."""
        augment = self.cfg.augment
        if augment.enabled:
            batch = augment_batch(batch, self.image_keys, augment.random_shift, augment.crop_scale)
        amp = AMP_DTYPES.get(self.cfg.optim.amp)
        with torch.autocast(self.device.type, dtype=amp) if amp is not None else nullcontext():
            return self.train_module(batch)

    def _backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def _optimizer_step(self) -> torch.Tensor:
        """Clips the gradient norm, steps the optimiser (through the fp16 scaler), the schedule and the EMA."""
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.cfg.optim.grad_clip_norm)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)  # skipped when the gradients overflowed
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.step(self.policy)
        return grad_norm

    def evaluate(self, n_episodes: int, tag: str) -> dict[str, Any]:
        """Evaluates the EMA weights on ``n_episodes`` listed seeds; logs and returns the metrics.

        Rank 0 evaluates while the other ranks wait (they return ``{}``).
        """
        if self.dist.is_main:
            result = self._evaluate(n_episodes, tag)
        distributed.barrier(self.dist)
        return result if self.dist.is_main else {}

    def _evaluate(self, n_episodes: int, tag: str) -> dict[str, Any]:
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

    def save(self) -> Path | None:
        """Writes a checkpoint of the current step atomically and prunes old ones (rank 0; the others return None).

        With several processes every rank first checks that all hold the same weights and EMA.

        Raises:
            RuntimeError: the replicas' weights or EMA differ (the tensor named).
        """
        replica = {f"policy.{k}": v for k, v in self.policy.state_dict().items() if v.is_floating_point()}
        if self.ema is not None:
            replica.update({f"ema.{k}": v for k, v in self.ema.shadow.items()})
        distributed.check_same_on_all_ranks(replica, "the policy weights or their EMA", self.dist)
        if not self.dist.is_main:
            return None
        meta = {"batch_shards": self.layout.n_shards, "world_size": self.dist.world_size}
        if self.scaler is not None:
            meta["grad_scaler"] = self.scaler.state_dict()
        return ckpt.save_checkpoint(
            self.run_dir,
            step=self.step,
            policy=self.policy,
            train_config=self.resolved_config,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            ema=self.ema,
            keep_last=self.cfg.keep_checkpoints,
            training_meta=meta,
        )

    def _eval_weights(self):
        return self.ema.applied(self.policy) if self.ema is not None else nullcontext()

    # ----------------------------------------------------------------------------------------------- run
    def run(self) -> dict[str, Any]:
        """Trains to ``optim.steps``, saves, evaluates on ``eval.n_episodes`` seeds and returns the figures.

        A resume is checked before any demonstration is collected; the final checkpoint is written before the
        final evaluation, so a failing evaluation loses no training. Under torchrun this joins the process group
        first and leaves it at the end; the figures are rank 0's (the other ranks return ``{}``).
        """
        self.dist = distributed.setup(self.device)
        self.device = self.dist.device
        finished = False
        try:
            figures = self._run()
            finished = True
        finally:
            distributed.shutdown(self.dist, wait=finished)
        return figures

    def _run(self) -> dict[str, Any]:
        cfg = self.cfg
        seed_everything(cfg.seed)
        self.run_dir = Path(distributed.broadcast(str(self.run_dir), self.dist))  # rank 0's (Hydra's dir may differ)
        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        distributed.BatchLayout.for_run(cfg.optim.batch_size, cfg.optim.grad_accum_steps, self.dist)  # shareable?
        if cfg.resume:
            self.check_resume()
        self.build(self._shared_dataset())
        try:
            self._train_loop()
            checkpoint = self.save()
            final = self.evaluate(cfg.eval.n_episodes, tag="final")
            if not self.dist.is_main:
                return {}
            figures = _headline(final, checkpoint, self.tracker.run_path)
            atomic_write_json(self.run_dir / "results.json", figures)
            self.tracker.log({f"final/{k}": v for k, v in figures.items() if isinstance(v, float)}, step=self.step)
        finally:
            self.tracker.finish()
        return figures

    def _shared_dataset(self) -> LeRobotDatasetReader:
        """The demonstration dataset, prepared (collected if needed) by rank 0 while the others wait, then opened."""
        dataset = self.prepare_dataset() if self.dist.is_main else None
        distributed.barrier(self.dist)
        return dataset if dataset is not None else LeRobotDatasetReader(Path(self.cfg.dataset.root))

    def _log_train(self, logs: dict[str, float]) -> None:
        """Logs training values (already averaged over the ranks) to W&B and ``train_log.jsonl`` (rank 0)."""
        row = {f"train/{k}": v for k, v in logs.items()}
        self.tracker.log(row, step=self.step)
        if self.dist.is_main:
            with open(self.run_dir / TRAIN_LOG_FILE, "a") as f:
                f.write(json.dumps({"step": self.step, **row}) + "\n")

    def _train_loop(self) -> None:
        cfg = self.cfg
        with tqdm(total=cfg.optim.steps, initial=self.step, desc="training", unit="step",
                  disable=not self.dist.is_main) as bar:
            while self.step < cfg.optim.steps:
                logs = self.train_step(self.sample_batch(self.step))
                self.step += 1
                bar.update(1)
                if self.step % cfg.log_every == 0:
                    logs = distributed.mean_over_ranks(logs, self.dist)
                    bar.set_postfix(loss=f"{logs['loss']:.4f}")
                    self._log_train(logs)
                if cfg.eval.every and self.step % cfg.eval.every == 0 and self.step < cfg.optim.steps:
                    self.evaluate(cfg.eval.n_episodes_during_training, tag=f"step_{self.step:06d}")
                if self.step % cfg.save_every == 0 and self.step < cfg.optim.steps:
                    self.save()


def _headline(result: dict[str, Any], checkpoint: Path, wandb_path: str | None) -> dict[str, Any]:
    """The run's final figures: success with its Wilson interval, the mean of each env metric, where it is saved."""
    metrics = {key: float(value) for key, value in result.items() if key.startswith("mean_")}
    return {
        "success_rate": float(result["success_rate"]),
        "success_ci_low": float(result["success_ci_low"]),
        "success_ci_high": float(result["success_ci_high"]),
        **metrics,
        "n_episodes": int(result["n_episodes"]),
        "checkpoint": str(checkpoint),
        "wandb_run": str(wandb_path),
    }


def _check_amp(optim_cfg, device: torch.device) -> None:
    """Raises ``ValueError`` for mixed precision that ``device`` cannot run (naming ``optim.amp`` and the device)."""
    if optim_cfg.amp == "fp16" and device.type != "cuda":
        raise ValueError(f"optim.amp=fp16 needs a CUDA device, but the run is on {device}: use optim.amp=off "
                         f"(or bf16 with optim.amp_on_cpu=true)")
    if optim_cfg.amp == "bf16" and device.type == "cpu" and not optim_cfg.amp_on_cpu:
        raise ValueError(f"optim.amp=bf16 on {device} is refused by default (CPU bf16 autocast is slow on most "
                         f"CPUs and changes the numerics): use optim.amp=off, or set optim.amp_on_cpu=true")


def _warmup_cosine(optim_cfg) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < optim_cfg.warmup_steps:
            return (step + 1) / optim_cfg.warmup_steps
        progress = (step - optim_cfg.warmup_steps) / max(1, optim_cfg.steps - optim_cfg.warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return factor


def _with_defaults(stored: Any, defaults: Any) -> Any:
    """``stored`` with the keys it lacks taken from ``defaults``, recursively (dicts only)."""
    if not isinstance(stored, dict) or not isinstance(defaults, dict):
        return stored
    return {**defaults, **{k: _with_defaults(v, defaults.get(k)) for k, v in stored.items()}}


def _check_demonstrated_env(root: Path, env: dict[str, Any], defaults: dict[str, Any] | None = None) -> bool:
    """Whether ``root`` holds scripted-expert demonstrations of ``env`` (``False``: no record of the expert).

    ``defaults``: the env schema's default values; a field the record lacks (added to the schema after the
    demonstrations were recorded) counts as recorded at its default.

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
    stored = _with_defaults(stored, defaults or {})
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
