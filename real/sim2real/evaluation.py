"""The Real-is-Sim claim, measured: success in the twin's offline evaluation predicts success in reality.

For every checkpoint of a training run, the same seeded episodes are run twice:

* **twin**: the twin's *evaluate* mode, offline and in parallel (``policies.evaluation.Evaluator`` over the twin's
  nominal simulation, as ``scripts/eval.py``);
* **real**: deployed through the twin into the robot (the emulated reality in its own process, or hardware),
  success judged on the real block at the twin's control steps, as offline (``Deployer``, ``observation="twin"``);
* optionally **raw**: the baseline without a twin, the policy acting on reality's raw measurements
  (``observation="raw"``), for the checkpoints ``raw_baseline`` names.

The Pearson correlation between the twin and real success rates over the checkpoints is the figure of merit.
Results are kept in ``<output_dir>/sim2real.json`` (written atomically after every checkpoint; a rerun with the
same output dir skips the checkpoints already measured, so a crashed run resumes).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from policies.checkpoint import CHECKPOINTS_DIR, CheckpointError
from policies.datasets.atomic import atomic_write_json
from real.modes.deploy_run import DeployRunConfig

RAW_BASELINES = ("none", "last", "all")
RESULTS_FILE = "sim2real.json"


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """The step checkpoints of a training run (``<run_dir>/checkpoints/<step>``), oldest first.

    Raises:
        CheckpointError: the run directory or its checkpoints folder is missing, or holds no step checkpoint.
    """
    root = Path(run_dir) / CHECKPOINTS_DIR
    if not root.is_dir():
        raise CheckpointError(f"run_dir {str(run_dir)!r} has no {CHECKPOINTS_DIR}/ folder")
    steps = sorted((p for p in root.iterdir() if p.is_dir() and not p.is_symlink() and re.fullmatch(r"\d+", p.name)),
                   key=lambda p: int(p.name))
    if not steps:
        raise CheckpointError(f"run_dir {str(run_dir)!r} holds no step checkpoint under {CHECKPOINTS_DIR}/")
    return steps


def pearson_r(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson correlation of two equally long series; NaN when either is constant or shorter than 2.

    Raises:
        ValueError: the series differ in length.
    """
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"pearson_r needs series of equal length, got {a.shape} and {b.shape}")
    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    a, b = a - a.mean(), b - b.mean()
    return float(np.dot(a, b) / math.sqrt(np.dot(a, a) * np.dot(b, b)))


@dataclasses.dataclass
class CheckpointResult:
    """Success rates of one checkpoint on the same seeded episodes (NaN: not measured)."""

    checkpoint: str
    step: int
    twin_success: float
    twin_coverage: float
    real_success: float
    real_coverage: float
    raw_success: float = float("nan")
    raw_coverage: float = float("nan")
    sync_rms_mm: float = float("nan")  # twin block vs truth, median over the deployed episodes
    sync_rms_deg: float = float("nan")
    raw_sync_rms_mm: float = float("nan")  # raw block estimate vs truth, baseline episodes
    raw_sync_rms_deg: float = float("nan")
    episodes: dict[str, list[dict[str, float]]] = dataclasses.field(default_factory=dict)


def summarize_deployments(episodes: list[dict[str, float]]) -> dict[str, float]:
    """Mean success/coverage on the real block, and the median over episodes of their sync RMS (an episode whose
    block was knocked off the table has a meaningless one), from ``Deployer.run`` dicts."""
    def finite(key: str) -> list[float]:
        return [e[key] for e in episodes if e[key] is not None and np.isfinite(e[key])]

    def mean(key: str) -> float:
        return float(np.mean(finite(key))) if finite(key) else float("nan")

    def median(key: str) -> float:
        return float(np.median(finite(key))) if finite(key) else float("nan")

    return {"success": mean("success_real"), "coverage": mean("coverage_real"), "sync_rms_mm": median("sync_rms_mm"),
            "sync_rms_deg": median("sync_rms_deg")}


class ResultsFile:
    """``sim2real.json``: the settings and one row per measured checkpoint; rewritten atomically after each.

    Raises:
        ValueError: an existing file was written with other settings (the message names them), so its rows
            would not be comparable.
    """

    def __init__(self, path: str | Path, settings: dict[str, Any]) -> None:
        self.path = Path(path)
        self.settings = settings
        self.rows: list[dict[str, Any]] = []
        if self.path.is_file():
            stored = json.loads(self.path.read_text())
            changed = sorted(k for k in set(settings) | set(stored["settings"])
                             if settings.get(k) != stored["settings"].get(k))
            if changed:
                raise ValueError(f"{self.path} was measured with other settings ({', '.join(changed)}); "
                                 f"use another output_dir")
            self.rows = stored["rows"]

    def done(self, checkpoint: Path) -> bool:
        """Whether ``checkpoint`` already has a row."""
        return any(row["checkpoint"] == str(checkpoint) for row in self.rows)

    def add(self, result: CheckpointResult) -> None:
        """Appends a row and rewrites the file atomically (NaN stored as null)."""
        row = {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
               for k, v in dataclasses.asdict(result).items()}
        self.rows.append(row)
        atomic_write_json(self.path, {"settings": self.settings, "rows": self.rows})

    def column(self, key: str) -> list[float]:
        """One value per row (NaN where null)."""
        return [float("nan") if row[key] is None else float(row[key]) for row in self.rows]


def measure_checkpoint(checkpoint: Path, twin_eval: Callable[[Path], dict[str, Any]],
                       deploy: Callable[[Path, str], list[dict[str, float]]], raw: bool) -> CheckpointResult:
    """Twin offline evaluation, deployment through the twin, and (``raw``) the raw-observation baseline.

    Args:
        checkpoint: a step checkpoint directory.
        twin_eval: ``twin_eval(checkpoint)`` -> ``Evaluator.run`` result.
        deploy: ``deploy(checkpoint, observation)`` -> one ``Deployer.run`` dict per episode.
        raw: also deploy on raw observations.
    """
    twin = twin_eval(checkpoint)
    real_episodes = deploy(checkpoint, "twin")
    real = summarize_deployments(real_episodes)
    result = CheckpointResult(
        checkpoint=str(checkpoint), step=int(checkpoint.name), twin_success=float(twin["success_rate"]),
        twin_coverage=float(twin["mean_coverage"]), real_success=real["success"], real_coverage=real["coverage"],
        sync_rms_mm=real["sync_rms_mm"], sync_rms_deg=real["sync_rms_deg"], episodes={"real": real_episodes},
    )
    if raw:
        raw_episodes = deploy(checkpoint, "raw")
        summary = summarize_deployments(raw_episodes)
        result.raw_success, result.raw_coverage = summary["success"], summary["coverage"]
        result.raw_sync_rms_mm, result.raw_sync_rms_deg = summary["sync_rms_mm"], summary["sync_rms_deg"]
        result.episodes["raw"] = raw_episodes
    return result


def raw_checkpoints(checkpoints: list[Path], which: str) -> set[Path]:
    """The checkpoints that also get the raw-observation baseline: ``none``, the ``last`` one, or ``all``.

    Raises:
        ValueError: ``which`` is not one of ``RAW_BASELINES``.
    """
    if which not in RAW_BASELINES:
        raise ValueError(f"raw_baseline must be one of {RAW_BASELINES}, got {which!r}")
    return {"none": set(), "last": set(checkpoints[-1:]), "all": set(checkpoints)}[which]


@dataclasses.dataclass
class Sim2RealRunConfig(DeployRunConfig):
    """``scripts/eval_sim2real.py``: the deployment settings of ``scripts/deploy.py`` plus which checkpoints to compare.

    Episode i of every column uses seed ``deploy.seed + i``: ``n_episodes`` deployed episodes per checkpoint and
    column, and ``twin_episodes`` offline ones (default ``n_episodes``): the twin runs at simulation speed in
    parallel, ~1 s an episode here against a minute of (half-speed) wall time deployed, so its column can afford the
    episodes that keep its binomial noise from diluting the correlation.
    """

    policy_path: str = ""  # unused: each checkpoint is deployed in turn
    run_dir: str = ""  # a training run: all its step checkpoints are compared
    checkpoints: list[str] = dataclasses.field(default_factory=list)  # or an explicit list of checkpoint dirs
    n_episodes: int = 10
    twin_episodes: int | None = None  # offline episodes per checkpoint; None: n_episodes
    n_envs: int = 2  # parallel envs of the twin's offline evaluation
    raw_baseline: str = "last"  # none | last | all: checkpoints also deployed on raw observations

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.run_dir and not self.checkpoints:
            raise ValueError("eval_sim2real needs run_dir=<training run> or checkpoints=[<dir>, ...]")
        if self.twin_episodes is None:
            self.twin_episodes = self.n_episodes
        if min(self.n_episodes, self.twin_episodes, self.n_envs) < 1:
            raise ValueError(f"n_episodes, twin_episodes and n_envs must be >= 1, got {self.n_episodes}, "
                             f"{self.twin_episodes} and {self.n_envs}")
        raw_checkpoints([], self.raw_baseline)

    def checkpoint_dirs(self) -> list[Path]:
        """The checkpoints to compare, oldest first (``checkpoints`` if given, else those of ``run_dir``)."""
        return [Path(c) for c in self.checkpoints] if self.checkpoints else list_checkpoints(self.run_dir)

    def settings(self) -> dict[str, Any]:
        """What makes two result files comparable (everything but the checkpoints, paths, logging and which
        checkpoints get the raw baseline)."""
        skip = {"policy_path", "run_dir", "checkpoints", "output_dir", "logger", "device", "raw_baseline"}
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self) if f.name not in skip}


def _plain(value: Any) -> Any:
    """A dataclass/tuple config value as JSON-comparable plain data."""
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value


def evaluate_sim2real(run: Sim2RealRunConfig, device: str, tracker: Any = None,
                      echo: Callable[[str], None] = print) -> ResultsFile:
    """Measures every checkpoint not yet in ``<run.output_dir>/sim2real.json``; returns the results file.

    Raises:
        CheckpointError: a checkpoint is missing or unreadable.
        ValueError: the existing results file was measured with other settings.
    """
    import sim
    from policies.checkpoint import load_policy, load_train_config
    from policies.evaluation import EvalEnvs, Evaluator
    from policies.train_config import EvalConfig
    from real.modes.deploy_run import deploy_episodes

    # the twin's column: twin_episodes offline episodes on the deployed episodes' seeds, no videos
    twin_settings = EvalConfig(n_episodes=run.twin_episodes, start_seed=run.deploy.seed, n_envs=run.n_envs,
                               n_videos=0, every=0)
    checkpoints = run.checkpoint_dirs()
    with_raw = raw_checkpoints(checkpoints, run.raw_baseline)
    results = ResultsFile(Path(run.output_dir) / RESULTS_FILE, run.settings())
    for checkpoint in checkpoints:
        if results.done(checkpoint):
            echo(f"{checkpoint}: already measured")
            continue
        policy = load_policy(checkpoint, device=device)
        env_cfg = sim.env_config_from_dict(load_train_config(checkpoint)["env"])

        def twin_eval(_: Path, policy: Any = policy, env_cfg: Any = env_cfg) -> dict[str, Any]:
            envs = EvalEnvs(functools.partial(sim.make_vector_env, env_cfg), run.deploy.max_steps,
                            metric_keys=tuple(env_cfg.metric_keys))
            return Evaluator.from_config(twin_settings, envs, device=device, progress=False).run(policy)

        def deploy(path: Path, observation: str, policy: Any = policy, env_cfg: Any = env_cfg) -> list[dict[str, float]]:
            episode_run = dataclasses.replace(run, policy_path=str(path),
                                              deploy=dataclasses.replace(run.deploy, observation=observation))
            return deploy_episodes(episode_run, env_cfg.kwargs, policy)

        result = measure_checkpoint(checkpoint, twin_eval, deploy, raw=checkpoint in with_raw)
        results.add(result)
        echo(f"{checkpoint}: twin {result.twin_success:.2f}  real {result.real_success:.2f}  raw {result.raw_success:.2f}"
             f"  sync {result.sync_rms_mm:.1f} mm / {result.sync_rms_deg:.1f} deg")
        if tracker is not None:
            tracker.log({f"sim2real/{k}": getattr(result, k) for k in
                         ("twin_success", "real_success", "raw_success", "twin_coverage", "real_coverage", "sync_rms_mm")},
                        step=result.step)
    return results


def report(results: ResultsFile) -> tuple[str, dict[str, float]]:
    """A table of the columns per checkpoint, and the summary figures: Pearson r of twin vs real success, the
    number of checkpoints, and the mean real success through the twin and on raw observations over the checkpoints
    that have both."""
    lines = [f"{'step':>8} {'twin':>6} {'real':>6} {'raw':>6} {'sync_mm':>8} {'sync_deg':>8}"]
    for row in results.rows:
        values = [row[k] if row[k] is not None else float("nan") for k in
                  ("twin_success", "real_success", "raw_success", "sync_rms_mm", "sync_rms_deg")]
        lines.append(f"{row['step']:>8d} " + " ".join(f"{v:>6.2f}" for v in values[:3])
                     + f" {values[3]:>8.1f} {values[4]:>8.1f}")
    twin, real, raw = (np.array(results.column(k)) for k in ("twin_success", "real_success", "raw_success"))
    both = np.isfinite(raw) & np.isfinite(real)
    figures = {
        "n_checkpoints": float(len(results.rows)),
        "pearson_r": pearson_r(twin, real),
        "real_success_via_twin": float(real[both].mean()) if both.any() else float("nan"),
        "real_success_raw": float(raw[both].mean()) if both.any() else float("nan"),
    }
    return "\n".join(lines), figures


def register_configs() -> None:
    """Registers ``eval_sim2real_schema`` and the ``robot`` group's schemas in Hydra's ConfigStore."""
    from hydra.core.config_store import ConfigStore

    from real.robot_choice import register_robot_configs

    register_robot_configs()
    ConfigStore.instance().store(name="eval_sim2real_schema", node=Sim2RealRunConfig)
