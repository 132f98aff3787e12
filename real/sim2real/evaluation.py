"""The Real-is-Sim claim, measured: success in the twin's offline evaluation predicts success in reality.

For every checkpoint of a training run, the same seeded episodes are run twice:

* **twin**: the twin's *evaluate* mode, offline and in parallel (``policies.evaluation.Evaluator`` over the twin's
  nominal simulation, as ``scripts/eval.py``);
* **real**: deployed through the twin into the robot (the emulated reality in its own process, or hardware),
  success judged on the real block at the twin's control steps, as offline (``Deployer``, ``observation="twin"``);
* optionally **raw**: the baseline without a twin, the policy acting on reality's raw measurements
  (``observation="raw"``), for the checkpoints ``raw_baseline`` names;
* **calibrated** (``calibration.enabled``): the twin offline again, in the checkpoint's env with reality's physics
  identified from the deployed episodes' logs (:mod:`real.sim2real.calibration`; identified once per run).

The Pearson correlation between the twin and real success rates over the checkpoints is the figure of merit; the
calibrated column's mean absolute error against real success says whether the twin predicts the number itself.
Results are kept in ``<output_dir>/sim2real.json`` (written atomically after every checkpoint and after the
identification; a rerun with the same output dir skips the checkpoints already measured and the identification
already made, so a crashed run resumes). Deployed episodes' logs go to ``<output_dir>/episodes/<checkpoint>/``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from policies.checkpoint import CHECKPOINTS_DIR, CheckpointError
from policies.datasets.atomic import atomic_write_json
from real.modes.deploy_run import EPISODES_DIR, DeployRunConfig
from real.sim2real.calibration import CalibrationConfig, mean_absolute_error, offline_speedup

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
    real_s_per_episode: float = float("nan")  # wall s per deployed episode through the twin
    calibrated_success: float = float("nan")  # the twin offline with reality's identified physics
    calibrated_coverage: float = float("nan")
    calibrated_s_per_episode: float = float("nan")  # wall s of the calibrated offline evaluation per episode
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
    """``sim2real.json``: the settings, one row per measured checkpoint and the calibration's identification record
    (:func:`real.sim2real.calibration.identify_logs`); rewritten atomically after each change.

    Raises:
        ValueError: an existing file was written with other settings (the message names them), so its rows
            would not be comparable.
    """

    def __init__(self, path: str | Path, settings: dict[str, Any]) -> None:
        self.path = Path(path)
        self.settings = settings
        self.rows: list[dict[str, Any]] = []
        self.calibration: dict[str, Any] | None = None
        if self.path.is_file():
            stored = json.loads(self.path.read_text())
            changed = sorted(k for k in set(settings) | set(stored["settings"])
                             if settings.get(k) != stored["settings"].get(k))
            if changed:
                raise ValueError(f"{self.path} was measured with other settings ({', '.join(changed)}); "
                                 f"use another output_dir")
            self.rows, self.calibration = stored["rows"], stored.get("calibration")

    def done(self, checkpoint: str | Path) -> bool:
        """Whether ``checkpoint`` already has a row."""
        return self.row(checkpoint) is not None

    def row(self, checkpoint: str | Path) -> dict[str, Any] | None:
        """The row of ``checkpoint``, or None."""
        return next((row for row in self.rows if row["checkpoint"] == str(checkpoint)), None)

    def add(self, result: CheckpointResult) -> None:
        """Appends a row and rewrites the file atomically (NaN stored as null)."""
        self.rows.append(_nulled(dataclasses.asdict(result)))
        self._write()

    def update(self, checkpoint: str | Path, values: dict[str, float]) -> None:
        """Sets ``values`` in the row of ``checkpoint`` and rewrites the file (NaN stored as null).

        Raises:
            KeyError: ``checkpoint`` has no row.
        """
        row = self.row(checkpoint)
        if row is None:
            raise KeyError(f"{checkpoint} has no row in {self.path}")
        row.update(_nulled(values))
        self._write()

    def set_calibration(self, record: dict[str, Any]) -> None:
        """Keeps the identification record and rewrites the file."""
        self.calibration = record
        self._write()

    def column(self, key: str) -> list[float]:
        """One value per row (NaN where null or missing)."""
        return [float("nan") if row.get(key) is None else float(row[key]) for row in self.rows]

    def _write(self) -> None:
        data = {"settings": self.settings, "rows": self.rows}
        if self.calibration is not None:
            data["calibration"] = self.calibration
        atomic_write_json(self.path, data)


def _nulled(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with non-finite floats as None (JSON null)."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in values.items()}


def measure_checkpoint(checkpoint: Path, twin_eval: Callable[[Path], dict[str, Any]],
                       deploy: Callable[[Path, str], list[dict[str, float]]], raw: bool) -> CheckpointResult:
    """Twin offline evaluation, deployment through the twin, and (``raw``) the raw-observation baseline.

    Args:
        checkpoint: a step checkpoint directory.
        twin_eval: ``twin_eval(checkpoint)`` -> ``Evaluator.run`` result.
        deploy: ``deploy(checkpoint, observation)`` -> one ``Deployer.run`` dict per episode (timed: the wall
            seconds per episode through the twin are ``real_s_per_episode``).
        raw: also deploy on raw observations.
    """
    twin = twin_eval(checkpoint)
    start = time.perf_counter()
    real_episodes = deploy(checkpoint, "twin")
    real_s = (time.perf_counter() - start) / max(len(real_episodes), 1)
    real = summarize_deployments(real_episodes)
    result = CheckpointResult(
        checkpoint=str(checkpoint), step=int(checkpoint.name), twin_success=float(twin["success_rate"]),
        twin_coverage=float(twin["mean_coverage"]), real_success=real["success"], real_coverage=real["coverage"],
        sync_rms_mm=real["sync_rms_mm"], sync_rms_deg=real["sync_rms_deg"], real_s_per_episode=real_s,
        episodes={"real": real_episodes},
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
    episodes that keep its binomial noise from diluting the correlation. The calibrated column runs the same
    ``twin_episodes`` seeds in the checkpoint's env with reality's identified physics (``calibration``).
    """

    policy_path: str = ""  # unused: each checkpoint is deployed in turn
    run_dir: str = ""  # a training run: all its step checkpoints are compared
    checkpoints: list[str] = dataclasses.field(default_factory=list)  # or an explicit list of checkpoint dirs
    n_episodes: int = 10
    twin_episodes: int | None = None  # offline episodes per checkpoint; None: n_episodes
    n_envs: int = 2  # parallel envs of the twin's offline evaluation
    raw_baseline: str = "last"  # none | last | all: checkpoints also deployed on raw observations
    # the calibrated column: reality's physics identified from deployed episodes' logs (real.sim2real.calibration)
    calibration: CalibrationConfig = dataclasses.field(default_factory=CalibrationConfig)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.calibration.enabled and not self.calibration.run_dir and not self.deploy.episode_log:
            raise ValueError("calibration.enabled identifies from the deployed episodes' logs: set "
                             "deploy.episode_log=true, calibration.run_dir=<logs> or calibration.enabled=false")
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
        checkpoints get the raw baseline; a stored identification is kept whatever ``calibration.run_dir`` says)."""
        skip = {"policy_path", "run_dir", "checkpoints", "output_dir", "logger", "device", "raw_baseline"}
        settings = {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self) if f.name not in skip}
        settings["calibration"].pop("run_dir")  # the identification record names its logs
        return settings


def _plain(value: Any) -> Any:
    """A dataclass/tuple config value as JSON-comparable plain data."""
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value


def evaluate_sim2real(run: Sim2RealRunConfig, device: str, tracker: Any = None,
                      echo: Callable[[str], None] = print) -> ResultsFile:
    """Measures every checkpoint not yet in ``<run.output_dir>/sim2real.json`` and, with ``run.calibration``, the
    calibrated column of every row that lacks it; returns the results file.

    Reality's physics are identified once, from ``calibration.run_dir`` or else from the first deployed checkpoint
    whose logs show free slides of the block (an early policy may never move it): rows measured before that are
    calibrated after the last checkpoint.

    Raises:
        CheckpointError: a checkpoint is missing or unreadable.
        ValueError: the existing results file was measured with other settings.
        EpisodeLogError: the calibration's logs are missing or bad, or none shows a free slide of the block.
    """
    session = _Session(run, device, tracker, echo)
    checkpoints = run.checkpoint_dirs()
    with_raw = raw_checkpoints(checkpoints, run.raw_baseline)
    sources = [episodes_dir(run.output_dir, c) for c in checkpoints]  # where each deployment logs its episodes
    for checkpoint in checkpoints:
        calibrate = run.calibration.enabled and not _calibrated(session.results, checkpoint)
        if session.results.done(checkpoint):
            echo(f"{checkpoint}: already measured")
            if not calibrate:
                continue
        policy, env_cfg = session.load(checkpoint)
        if not session.results.done(checkpoint):
            session.measure(checkpoint, policy, env_cfg, raw=checkpoint in with_raw)
        if calibrate:
            session.calibrate(checkpoint, policy, env_cfg, sources)
    pending = [c for c in checkpoints if run.calibration.enabled and not _calibrated(session.results, c)]
    for checkpoint in pending:  # measured before any deployed logs identified reality
        session.calibrate(checkpoint, *session.load(checkpoint), sources, final=True)
    return session.results


class _Session:
    """One ``evaluate_sim2real`` call: its settings, results file and the steps of a checkpoint."""

    def __init__(self, run: Sim2RealRunConfig, device: str, tracker: Any, echo: Callable[[str], None]) -> None:
        from policies.train_config import EvalConfig

        self.run, self.device, self.tracker, self.echo = run, device, tracker, echo
        # the twin's columns: twin_episodes offline episodes on the deployed episodes' seeds, no videos
        self.twin_settings = EvalConfig(n_episodes=run.twin_episodes, start_seed=run.deploy.seed, n_envs=run.n_envs,
                                        n_videos=0, every=0)
        self.results = ResultsFile(Path(run.output_dir) / RESULTS_FILE, run.settings())

    def load(self, checkpoint: Path) -> tuple[Any, Any]:
        """The checkpoint's policy and training env config."""
        from policies.checkpoint import load_policy, load_train_config

        return load_policy(checkpoint, device=self.device), _env_config(load_train_config(checkpoint)["env"])

    def measure(self, checkpoint: Path, policy: Any, env_cfg: Any, raw: bool) -> None:
        """The twin, real (and ``raw``) columns of a checkpoint: a new row."""
        twin_eval = functools.partial(self.offline_eval, policy, env_cfg)
        deploy = functools.partial(_deploy, self.run, policy, env_cfg)
        result = measure_checkpoint(checkpoint, lambda _: twin_eval(), deploy, raw=raw)
        self.results.add(result)
        self.echo(f"{checkpoint}: twin {result.twin_success:.2f}  real {result.real_success:.2f}  raw "
                  f"{result.raw_success:.2f}  sync {result.sync_rms_mm:.1f} mm / {result.sync_rms_deg:.1f} deg")
        _track(self.tracker, result.step, {k: getattr(result, k) for k in (
            "twin_success", "real_success", "raw_success", "twin_coverage", "real_coverage", "sync_rms_mm")})

    def calibrate(self, checkpoint: Path, policy: Any, env_cfg: Any, sources: list[Path], final: bool = False) -> None:
        """The calibrated column of a measured checkpoint; identifies first if not yet done (from
        ``calibration.run_dir``, else the first of ``sources`` with logs that identify; none yet: skipped, unless
        ``final``)."""
        calibrated_env = _calibrated_env(self.results, self.run, sources, env_cfg, self.echo, final)
        if calibrated_env is None:
            self.echo(f"{checkpoint}: not calibrated yet (no deployed logs with free slides of the block so far)")
            return
        start = time.perf_counter()
        calibrated = self.offline_eval(policy, calibrated_env)
        values = {"calibrated_success": float(calibrated["success_rate"]),
                  "calibrated_coverage": float(calibrated["mean_coverage"]),
                  "calibrated_s_per_episode": (time.perf_counter() - start) / self.run.twin_episodes}
        self.results.update(checkpoint, values)
        self.echo(f"{checkpoint}: calibrated {values['calibrated_success']:.2f}")
        _track(self.tracker, self.results.row(checkpoint)["step"], values)

    def offline_eval(self, policy: Any, env_cfg: Any) -> dict[str, Any]:
        """``Evaluator.run`` of ``policy`` in parallel envs of ``env_cfg`` (as ``scripts/eval.py``)."""
        import sim
        from policies.evaluation import EvalEnvs, Evaluator

        envs = EvalEnvs(functools.partial(sim.make_vector_env, env_cfg), self.run.deploy.max_steps,
                        metric_keys=tuple(env_cfg.metric_keys))
        return Evaluator.from_config(self.twin_settings, envs, device=self.device, progress=False).run(policy)


def episodes_dir(output_dir: str | Path, checkpoint: Path) -> Path:
    """Where the episode logs of ``checkpoint``'s deployment through the twin go: ``<output_dir>/episodes/<name>``."""
    return Path(output_dir) / EPISODES_DIR / checkpoint.name


def _env_config(env: dict[str, Any]) -> Any:
    import sim

    return sim.env_config_from_dict(env)


def _deploy(run: Sim2RealRunConfig, policy: Any, env_cfg: Any, path: Path, observation: str) -> list[dict[str, float]]:
    """``run.n_episodes`` deployments of the checkpoint at ``path``; through the twin its episode logs are written to
    :func:`episodes_dir` (with ``run.deploy.episode_log``)."""
    from real.modes.deploy_run import deploy_episodes

    episode_run = dataclasses.replace(run, policy_path=str(path),
                                      deploy=dataclasses.replace(run.deploy, observation=observation))
    log_dir = episodes_dir(run.output_dir, path) if observation == "twin" and run.deploy.episode_log else None
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
    return deploy_episodes(episode_run, env_cfg.kwargs, policy, log_dir=log_dir)


def _calibrated(results: ResultsFile, checkpoint: Path) -> bool:
    row = results.row(checkpoint)
    return row is not None and row.get("calibrated_s_per_episode") is not None


def _calibrated_env(results: ResultsFile, run: Sim2RealRunConfig, sources: list[Path], env_cfg: Any,
                    echo: Callable[[str], None], final: bool) -> Any:
    """``env_cfg`` with its randomisation drawn around reality's identified physics, or None while nothing identifies.

    Unless the results file holds an identification already, identifies from ``calibration.run_dir`` (errors raise)
    or the first of ``sources`` holding logs whose identification succeeds, keeping the record in the results file
    and the env in ``<output_dir>/identified_env.yaml``.

    Raises:
        EpisodeLogError: ``calibration.run_dir``'s logs fail, or (``final``) no identification has succeeded.
    """
    from real.sim2real import calibration
    from real.sim2real.identified_env import identified_env, write_env_config
    from sim.episode_log import EpisodeLogError

    if results.calibration is None:
        record, errors = None, []
        if run.calibration.run_dir:
            record = calibration.identify_logs(run.calibration.run_dir, run.calibration)
        for source in (s for s in sources if record is None and s.is_dir()):
            try:
                record = calibration.identify_logs(source, run.calibration)
            except EpisodeLogError as err:
                errors.append(str(err))
        if record is None:
            if final:
                raise EpisodeLogError("no deployed episode logs identified reality's physics; set calibration.run_dir "
                                      "to a deployment whose policy moves the block: " + "; ".join(errors))
            return None
        ident = calibration.identification_of(record)
        write_env_config(identified_env(ident, record["nominal_mass"], env_cfg),
                         Path(run.output_dir) / calibration.IDENTIFIED_ENV,
                         header=f"Identified by scripts/eval_sim2real.py from {len(record['logs'])} logs of "
                                f"{record['source']}")
        results.set_calibration(record)
        echo(f"identified from {len(record['logs'])} episode logs of {record['source']}: friction x"
             f"{ident.friction_scale:.2f} +- {ident.friction_scale_std:.2f}, block mass {ident.block_mass:.3f} kg, "
             f"pushes {ident.push_rate_hz:.2f} Hz of {ident.push_force_n:.2f} N")
    ident = calibration.identification_of(results.calibration)
    return identified_env(ident, results.calibration["nominal_mass"], env_cfg)


def _track(tracker: Any, step: int, values: dict[str, float]) -> None:
    if tracker is not None:
        tracker.log({f"sim2real/{k}": v for k, v in values.items()}, step=step)


def report(results: ResultsFile) -> tuple[str, dict[str, float]]:
    """A table of the columns per checkpoint (with the twin's and the calibrated twin's absolute error against real
    success), and the summary figures: the number of checkpoints; Pearson r of twin (``pearson_r``) and calibrated
    twin (``pearson_r_calibrated``) vs real success; their mean absolute errors (``uncalibrated_mae``,
    ``calibrated_mae``); ``offline_speedup``, seconds per deployed episode over seconds per calibrated offline episode;
    the mean real success through the twin and on raw observations over the checkpoints that have both; and the
    identified physics (``identified_*``) when calibrated."""
    twin, calib, real, raw = (np.array(results.column(k)) for k in
                              ("twin_success", "calibrated_success", "real_success", "raw_success"))
    mm, deg = np.array(results.column("sync_rms_mm")), np.array(results.column("sync_rms_deg"))
    lines = [f"{'step':>8} {'twin':>6} {'calib':>6} {'real':>6} {'raw':>6} {'|twin-real|':>11} {'|calib-real|':>12}"
             f" {'sync_mm':>8} {'sync_deg':>8}"]
    for i, row in enumerate(results.rows):
        lines.append(f"{row['step']:>8d} " + " ".join(f"{v[i]:>6.2f}" for v in (twin, calib, real, raw))
                     + f" {abs(twin[i] - real[i]):>11.2f} {abs(calib[i] - real[i]):>12.2f} {mm[i]:>8.1f} {deg[i]:>8.1f}")
    both = np.isfinite(raw) & np.isfinite(real)
    figures = {
        "n_checkpoints": float(len(results.rows)),
        "pearson_r": pearson_r(twin, real),
        "pearson_r_calibrated": pearson_r(calib, real),
        "uncalibrated_mae": mean_absolute_error(twin, real),
        "calibrated_mae": mean_absolute_error(calib, real),
        "offline_speedup": offline_speedup(results.column("real_s_per_episode"),
                                           results.column("calibrated_s_per_episode")),
        "real_success_via_twin": float(real[both].mean()) if both.any() else float("nan"),
        "real_success_raw": float(raw[both].mean()) if both.any() else float("nan"),
    }
    if results.calibration is not None:
        ident = results.calibration["identification"]
        figures.update({f"identified_{k}": float(ident[k]) for k in
                        ("friction_scale", "block_mass", "push_rate_hz", "push_force_n")})
    return "\n".join(lines), figures


def register_configs() -> None:
    """Registers ``eval_sim2real_schema`` and the ``robot`` group's schemas in Hydra's ConfigStore."""
    from hydra.core.config_store import ConfigStore

    from real.robot_choice import register_robot_configs

    register_robot_configs()
    ConfigStore.instance().store(name="eval_sim2real_schema", node=Sim2RealRunConfig)
