"""Experiment tracking: one small ``Tracker`` over Weights & Biases (offline by default, online, or disabled).

::

    tracker = Tracker("realsim", mode="offline", run_dir=hydra_output_dir, config=resolved_cfg)
    tracker.log({"train/loss": 0.12, "train/lr": 1e-4}, step=100)
    tracker.log_video("eval/video", run_dir / "eval/videos/episode_100000.mp4", step=100)
    tracker.log_image("eval/progress", run_dir / "progress.png", step=100)
    tracker.finish()          # then, for offline runs: ``wandb sync <tracker.run_dir>``

``offline`` needs no account: W&B writes ``<run_dir>/wandb/offline-run-<time>-<id>/`` and ``wandb sync`` uploads
it later. ``online`` needs credentials (``WANDB_API_KEY``, ``wandb login``'s netrc entry, or W&B settings).
``disabled`` calls no W&B code at all and writes nothing, yet checks its inputs like the other modes.
"""

from __future__ import annotations

import base64
import numbers
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from omegaconf import OmegaConf

if TYPE_CHECKING:
    from typing import Self

__all__ = ["MODES", "Tracker"]

MODES = ("offline", "online", "disabled")
VIDEO_FORMATS = ("mp4", "webm", "gif", "ogg")
IMAGE_FORMATS = ("png", "jpg", "jpeg")


class Tracker:
    """A W&B run for one training or evaluation job; also a context manager that finishes the run.

    Resuming: pass the ``run_id`` of an earlier run (``resume="allow"``): online, W&B continues that run; offline,
    a new ``offline-run-*-<run_id>`` folder is written that ``wandb sync`` appends to the same run. Steps must
    keep increasing across the resume (W&B drops rows logged at an older step).
    """

    def __init__(
        self,
        project: str,
        mode: str = "offline",
        run_dir: str | os.PathLike = ".",
        config: Mapping[str, Any] | None = None,
        name: str | None = None,
        group: str | None = None,
        tags: Iterable[str] = (),
        run_id: str | None = None,
    ):
        """Start the W&B run (nothing is started in ``disabled`` mode); the resolved ``config`` is logged with it.

        Args:
            project: W&B project name.
            mode: ``offline`` (default), ``online`` or ``disabled`` (the ``logger.mode`` setting).
            run_dir: folder W&B writes under (``<run_dir>/wandb/...``), e.g. Hydra's output dir; created if missing.
            config: resolved run configuration (a dict, or an OmegaConf config, which is resolved here).
            name, group, tags: W&B display name, group and tags.
            run_id: id of the run to resume or to create (W&B makes one up when None).

        Raises:
            ValueError: if ``mode`` is not one of ``MODES`` (names ``logger.mode``) or ``project`` is empty.
            TypeError: if ``config`` is not a mapping.
            RuntimeError: in ``online`` mode without W&B credentials (names ``WANDB_API_KEY``).
        """
        if mode not in MODES:
            raise ValueError(f"logger.mode must be one of {MODES}, got {mode!r}")
        if not isinstance(project, str) or not project:
            raise ValueError(f"logger.project must be a non-empty string, got {project!r}")
        self.mode = mode
        self._config = _resolved_config(config)
        self._given_run_id = run_id
        self._run: Any = None
        self._finished = False
        if mode == "disabled":
            return
        import wandb  # imported lazily: disabled trackers (tests) never load W&B

        if mode == "online" and not _has_wandb_credentials():
            raise RuntimeError(
                "logger.mode=online needs W&B credentials: set WANDB_API_KEY or run `wandb login` "
                "(or use logger.mode=offline and `wandb sync` later)"
            )
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        self._run = wandb.init(
            project=project,
            mode=mode,
            dir=str(run_dir),
            config=self._config,
            name=name,
            group=group,
            tags=list(tags),
            id=run_id,
            resume="allow" if run_id is not None else None,
            settings=wandb.Settings(reinit="create_new"),  # this tracker owns its run; others may exist
        )

    @property
    def run_id(self) -> str | None:
        """The W&B run id (the ``run_id`` given, if any, when disabled)."""
        return self._run.id if self._run is not None else self._given_run_id

    @property
    def run_dir(self) -> Path | None:
        """Local run folder ``<run_dir>/wandb/offline-run-<time>-<id>`` (``run-...`` online); None if disabled.

        This is the folder ``wandb sync`` takes.
        """
        return Path(self._run.settings.sync_dir) if self._run is not None else None

    @property
    def run_path(self) -> str | None:
        """W&B's run path ``entity/project/run_id`` (no entity while offline); None if disabled."""
        return self._run.path if self._run is not None else None

    @property
    def config(self) -> dict[str, Any]:
        """The resolved configuration logged with the run."""
        return self._config

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        """Log scalar metrics at a global step (e.g. optimizer steps).

        Raises:
            TypeError: if a value is not a real number (0-d tensors and numpy scalars are fine); names the key.
            ValueError: if ``step`` is not an integer >= 0.
            RuntimeError: after ``finish``.
        """
        self._check_open()
        _check_step(step)
        row = {_check_key(key): _as_float(key, value) for key, value in metrics.items()}
        if self._run is not None:
            self._run.log(row, step=step)

    def log_video(self, key: str, path: str | os.PathLike, step: int) -> None:
        """Log an encoded video file (mp4, webm, gif or ogg) under ``key``; no re-encoding, no moviepy.

        Raises:
            FileNotFoundError: if ``path`` does not exist.
            ValueError: on an unsupported file type or a bad ``step``.
            RuntimeError: after ``finish``.
        """
        fmt = self._check_media("log_video", key, path, step, VIDEO_FORMATS)
        if self._run is not None:
            import wandb

            self._run.log({key: wandb.Video(str(path), format=fmt)}, step=step)

    def log_image(self, key: str, path: str | os.PathLike, step: int) -> None:
        """Log an image file (png or jpg) under ``key``: a W&B image where Pillow is installed, else (wandb.Image
        needs Pillow) the file embedded in a W&B HTML panel; the file itself is not changed.

        Raises:
            FileNotFoundError: if ``path`` does not exist.
            ValueError: on an unsupported file type or a bad ``step``.
            RuntimeError: after ``finish``.
        """
        fmt = self._check_media("log_image", key, path, step, IMAGE_FORMATS)
        if self._run is not None:
            self._run.log({key: _wandb_image(path, fmt)}, step=step)

    def _check_media(self, method: str, key: str, path: str | os.PathLike, step: int,
                     formats: tuple[str, ...]) -> str:
        """The format of the media file ``path`` logged by ``method``; raises as :meth:`log_video` documents."""
        self._check_open()
        _check_step(step)
        _check_key(key)
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{method}({key!r}): no file at {path}")
        fmt = path.suffix.lower().lstrip(".")
        if fmt not in formats:
            raise ValueError(f"{method}({key!r}): {path} is not one of {formats}")
        return fmt

    def finish(self, exit_code: int = 0) -> None:
        """Close the run and flush it to disk (and to the server when online); calling it again does nothing.

        ``run.finish`` only asks W&B's service process to close the run's files, so the service is also torn down
        (the next ``Tracker`` starts a new one): when this returns, ``run_dir`` is complete and can be synced or read.
        """
        if self._finished:
            return
        self._finished = True
        if self._run is not None:
            import wandb

            self._run.finish(exit_code=exit_code)
            wandb.teardown(exit_code=exit_code)

    def __enter__(self) -> Self:
        """Use as ``with Tracker(...) as tracker:``; the run is finished on exit."""
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Finish the run, marking it failed (exit code 1) if an exception escaped."""
        self.finish(exit_code=0 if exc_type is None else 1)

    def _check_open(self) -> None:
        """Raise RuntimeError once the tracker is finished."""
        if self._finished:
            raise RuntimeError("Tracker: the run is finished; create a new Tracker (run_id=...) to resume it")


def _resolved_config(config: Mapping[str, Any] | None) -> dict[str, Any]:
    """A plain dict of the run config; OmegaConf configs are resolved (interpolations filled in)."""
    if config is None:
        return {}
    if OmegaConf.is_config(config):
        config = OmegaConf.to_container(config, resolve=True)
    if not isinstance(config, Mapping):
        raise TypeError(f"Tracker config must be a mapping, got {type(config).__name__}")
    return dict(config)


def _wandb_image(path: Path, fmt: str) -> Any:
    """``wandb.Image`` of the file at ``path`` when Pillow is importable, else a ``wandb.Html`` that embeds it."""
    import importlib.util

    import wandb

    if importlib.util.find_spec("PIL") is not None:
        return wandb.Image(str(path))
    mime = "jpeg" if fmt == "jpg" else fmt
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return wandb.Html(f'<img src="data:image/{mime};base64,{data}" alt="{path.name}">', inject=False)


def _has_wandb_credentials() -> bool:
    """True if W&B has an API key: ``WANDB_API_KEY``, a netrc entry (``wandb login``) or W&B settings."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    import wandb

    return bool(wandb.login(verify=False, prompt=False))


def _check_step(step: object) -> None:
    """Raise ValueError unless ``step`` is an integer >= 0."""
    if isinstance(step, bool) or not isinstance(step, numbers.Integral) or step < 0:
        raise ValueError(f"step must be an integer >= 0, got {step!r}")


def _check_key(key: object) -> str:
    """Return ``key`` if it is a non-empty string, else raise TypeError."""
    if not isinstance(key, str) or not key:
        raise TypeError(f"metric keys must be non-empty strings, got {key!r}")
    return key


def _as_float(key: str, value: Any) -> float:
    """``value`` as a float (numbers, numpy scalars, one-element tensors); TypeError naming ``key`` otherwise."""
    if isinstance(value, numbers.Real):
        return float(value)
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:
        item = value.item()
        if isinstance(item, numbers.Real):
            return float(item)
    raise TypeError(f"metric {key!r} must be a real number, got {type(value).__name__}")
