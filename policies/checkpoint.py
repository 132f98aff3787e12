"""Atomic, exactly-resumable checkpoints whose ``pretrained_model/`` is a self-contained, evaluated policy.

Layout written by :func:`save_checkpoint` (format 2)::

    <run_dir>/checkpoints/
    ├── 000500/
    │   ├── pretrained_model/             everything inference needs: copy it alone to ship the policy
    │   │   ├── config.json               {"format_version": 2, "type": policy name, "config": ..., "features": ...}
    │   │   ├── model.safetensors         the evaluated weights (EMA when there is one), normaliser stats included
    │   │   └── train_config.yaml         the resolved training config (OmegaConf YAML)
    │   └── training_state/               what an exact resume needs on top
    │       ├── model.safetensors         the raw (trained, not averaged) policy state_dict
    │       ├── optimizer.pt              optimizer.state_dict()
    │       ├── scheduler.pt              lr scheduler state_dict() (only if one was given)
    │       ├── ema.safetensors           EMA.state_dict() (only if one was given)
    │       ├── rng_state.pt              python, numpy, torch (and CUDA) generator states
    │       └── training_step.json        {"step": 500, ...}: the step and the trainer's training_meta (batch_shards, ...)
    ├── 001000/
    └── last -> 001000                    relative symlink to the newest complete checkpoint

Format 1 checkpoints (no ``format_version`` 2: raw weights in ``pretrained_model/model.safetensors``, EMA only in
``training_state/ema.safetensors``, no ``training_state/model.safetensors``) still load and resume.

A checkpoint is written into ``checkpoints/.tmp-*`` (files fsynced) and renamed into place in one
``os.replace``, so a ``<step>`` directory is either complete or absent; ``last`` is swapped atomically after.
``.pt`` files are read with ``torch.load(weights_only=True)``: no pickled code.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
import uuid
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.torch
import torch
from omegaconf import DictConfig, OmegaConf

from policies.base import Policy
from policies.datasets.atomic import fsync_dir
from policies.ema import EMA
from policies.registry import policy_class

FORMAT_VERSION = 2  # 2: pretrained_model holds the evaluated (EMA) weights; 1: the raw ones
CHECKPOINTS_DIR = "checkpoints"
LAST = "last"
PRETRAINED = "pretrained_model"
TRAINING_STATE = "training_state"


class CheckpointError(RuntimeError):
    """A checkpoint directory or file is missing, truncated, corrupt or incompatible; the message names it."""


def checkpoint_dir(run_dir: str | os.PathLike, step: int) -> Path:
    """``<run_dir>/checkpoints/<step:06d>``."""
    return Path(run_dir) / CHECKPOINTS_DIR / f"{step:06d}"


def _write(path: Path, writer: Callable[[Any], None], binary: bool = True) -> None:
    """Write a file through ``writer(file)`` and fsync it (atomicity comes from renaming the parent dir)."""
    with open(path, "wb" if binary else "w") as f:
        writer(f)
        f.flush()
        os.fsync(f.fileno())


def _rng_state() -> dict[str, Any]:
    """Generator states as plain types and tensors, so ``torch.load(weights_only=True)`` can read them."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    random.setstate(state["python"])
    np_state = state["numpy"]
    np.random.set_state((np_state["name"], np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _write_weights(path: Path, policy: Policy) -> None:
    tensors = {k: v.detach().contiguous().cpu() for k, v in policy.state_dict().items()}
    _write(path, lambda f: f.write(safetensors.torch.save(tensors)))


def _write_pretrained(dst: Path, policy: Policy, train_config: Mapping[str, Any] | None, ema: EMA | None) -> None:
    """The self-contained policy: config, evaluated weights (EMA applied when given) and training config."""
    dst.mkdir()
    meta = {"format_version": FORMAT_VERSION, "type": policy.name,
            "config": dataclasses.asdict(policy.config), "features": policy.features}
    _write(dst / "config.json", lambda f: json.dump(meta, f, indent=2), binary=False)
    policy.save_assets(dst)  # e.g. a tokenizer; fsynced with the directory below
    with ema.applied(policy) if ema is not None else nullcontext():
        _write_weights(dst / "model.safetensors", policy)
    cfg = OmegaConf.create(dict(train_config) if train_config is not None else {})
    _write(dst / "train_config.yaml", lambda f: f.write(OmegaConf.to_yaml(cfg)), binary=False)
    fsync_dir(dst)


def _write_training_state(dst: Path, step: int, policy: Policy, optimizer: torch.optim.Optimizer,
                          scheduler: Any | None, ema: EMA | None, meta: Mapping[str, Any] | None = None) -> None:
    dst.mkdir()
    _write_weights(dst / "model.safetensors", policy)
    _write(dst / "optimizer.pt", lambda f: torch.save(optimizer.state_dict(), f))
    if scheduler is not None:
        _write(dst / "scheduler.pt", lambda f: torch.save(scheduler.state_dict(), f))
    if ema is not None:
        tensors = {k: v.detach().contiguous().cpu() for k, v in ema.state_dict().items()}
        _write(dst / "ema.safetensors", lambda f: f.write(safetensors.torch.save(tensors)))
    _write(dst / "rng_state.pt", lambda f: torch.save(_rng_state(), f))
    _write(dst / "training_step.json", lambda f: json.dump({**(meta or {}), "step": int(step)}, f), binary=False)
    fsync_dir(dst)


def _point_last(ckpt_root: Path, name: str) -> None:
    tmp_link = ckpt_root / f".tmp-last-{uuid.uuid4().hex}"
    os.symlink(name, tmp_link)
    os.replace(tmp_link, ckpt_root / LAST)
    fsync_dir(ckpt_root)


def _step_dirs(ckpt_root: Path) -> list[Path]:
    """Complete checkpoint dirs (all-digit names), oldest first."""
    if not ckpt_root.is_dir():
        return []
    return sorted((p for p in ckpt_root.iterdir() if p.name.isdigit() and p.is_dir()), key=lambda p: int(p.name))


def save_checkpoint(
    run_dir: str | os.PathLike,
    step: int,
    policy: Policy,
    optimizer: torch.optim.Optimizer,
    scheduler: Any | None = None,
    ema: EMA | None = None,
    train_config: Mapping[str, Any] | None = None,
    keep_last: int | None = None,
    training_meta: Mapping[str, Any] | None = None,
) -> Path:
    """Write checkpoint ``step`` atomically (layout in the module docstring) and point ``last`` at it.

    ``pretrained_model/model.safetensors`` gets the weights that are evaluated: ``ema``'s average when given,
    else ``policy``'s own; ``training_state/`` gets ``policy``'s own (raw) weights and ``ema.safetensors``, for an
    exact resume. ``train_config`` is the resolved config as a plain dict. ``training_meta`` (JSON-safe values) is
    stored beside the step in ``training_step.json`` (:func:`load_training_meta`). With ``keep_last=k`` only the newest
    ``k`` checkpoints are kept.
    Re-saving an existing step replaces it. Returns the checkpoint dir. Raises ``ValueError`` for a negative
    step or ``keep_last < 1``.
    """
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if keep_last is not None and keep_last < 1:
        raise ValueError(f"keep_last must be None or >= 1, got {keep_last}")
    final = checkpoint_dir(run_dir, step)
    root = final.parent
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-{final.name}-{uuid.uuid4().hex}"
    tmp.mkdir()
    try:
        _write_pretrained(tmp / PRETRAINED, policy, train_config, ema)
        _write_training_state(tmp / TRAINING_STATE, step, policy, optimizer, scheduler, ema, training_meta)
        fsync_dir(tmp)
        if final.exists():
            old = root / f".old-{final.name}-{uuid.uuid4().hex}"
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old)
        else:
            os.replace(tmp, final)
        fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _point_last(root, final.name)
    if keep_last is not None:
        for old_dir in _step_dirs(root)[:-keep_last]:
            shutil.rmtree(old_dir)
    return final


def find_last_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """Newest complete checkpoint dir of a run: ``last``'s target, else the highest step; ``None`` if none."""
    root = Path(run_dir) / CHECKPOINTS_DIR
    last = root / LAST
    if last.is_dir():
        return root / os.readlink(last) if last.is_symlink() else last
    dirs = _step_dirs(root)
    return dirs[-1] if dirs else None


def _pretrained_dir(path: str | os.PathLike) -> Path:
    """Accept a checkpoint dir, its ``pretrained_model`` dir, ``checkpoints/last`` or a run dir (its last one)."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint directory {str(path)!r} does not exist")
    if (path / CHECKPOINTS_DIR).is_dir():
        last = find_last_checkpoint(path)
        if last is None:
            raise CheckpointError(f"run directory {str(path)!r} holds no checkpoint")
        path = last
    return path / PRETRAINED if (path / PRETRAINED).is_dir() else path


def _require(path: Path) -> Path:
    if not path.is_file():
        raise CheckpointError(f"checkpoint file {str(path)!r} is missing")
    return path


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return safetensors.torch.load_file(str(_require(path)))
    except CheckpointError:
        raise
    except Exception as err:  # safetensors raises its own error type for every malformed file
        raise CheckpointError(f"{str(path)!r} is truncated or not a valid safetensors file: {err}") from err


def _torch_load(path: Path) -> Any:
    try:
        return torch.load(_require(path), map_location="cpu", weights_only=True)
    except CheckpointError:
        raise
    except Exception as err:
        raise CheckpointError(f"{str(path)!r} is truncated or corrupt: {err}") from err


def _read_json(path: Path, kind: type = dict) -> Any:
    """A JSON file that must hold a ``kind`` (object by default); :class:`CheckpointError` naming it otherwise."""
    try:
        value = json.loads(_require(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{str(path)!r} is not valid JSON: {err}") from err
    if not isinstance(value, kind):
        raise CheckpointError(f"{str(path)!r} must hold a JSON {kind.__name__}, got {type(value).__name__}")
    return value


def load_model_state(path: str | os.PathLike, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """The ``state_dict`` in ``pretrained_model/model.safetensors`` (normaliser stats included), on ``device``.

    Format 2: the evaluated weights; format 1: the raw ones. ``path`` as for :func:`load_policy`. Raises
    :class:`CheckpointError` naming a missing or corrupt file.
    """
    state = _load_safetensors(_pretrained_dir(path) / "model.safetensors")
    return {k: v.to(device) for k, v in state.items()}


def load_training_weights(path: str | os.PathLike, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """The raw (trained, not averaged) policy ``state_dict`` a resume continues from, on ``device``.

    Reads ``training_state/model.safetensors`` (format 2) or, in a format 1 checkpoint, which has none,
    ``pretrained_model/model.safetensors``. ``path`` as for :func:`load_policy`. Raises :class:`CheckpointError`
    naming a missing or corrupt file.
    """
    pretrained = _pretrained_dir(path)
    raw = pretrained.parent / TRAINING_STATE / "model.safetensors"
    if _format_version(pretrained) >= 2:
        state = _load_safetensors(raw)
    else:
        state = _load_safetensors(pretrained / "model.safetensors")
    return {k: v.to(device) for k, v in state.items()}


def _format_version(pretrained: Path) -> int:
    version = _read_json(pretrained / "config.json").get("format_version", 1)
    if not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
        raise CheckpointError(f"{str(pretrained / 'config.json')!r}: unknown format_version {version!r} "
                              f"(this code reads 1 to {FORMAT_VERSION})")
    return version


def _build_policy(meta_file: Path, expected_type: str | None = None) -> Policy:
    """The policy described by a ``config.json`` and the assets beside it (untrained weights)."""
    meta = _read_json(meta_file)
    for field in ("type", "config", "features"):
        if field not in meta:
            raise CheckpointError(f"{str(meta_file)!r} has no {field!r} field")
    if expected_type is not None and meta["type"] != expected_type:
        raise CheckpointError(f"{str(meta_file.parent)!r} holds a {meta['type']!r} policy, not a {expected_type!r} "
                              f"one: load it as {meta['type']!r} (or with policies.checkpoint.load_policy)")
    try:
        cls = policy_class(meta["type"])
        config = cls.config_class(**meta["config"])
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{str(meta_file)!r}: cannot rebuild the policy config: {err}") from err
    try:
        return cls.from_assets(config, meta["features"], meta_file.parent)
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{str(meta_file.parent)!r}: cannot rebuild the {meta['type']!r} policy: {err}") from err


def load_policy(path: str | os.PathLike, device: str | torch.device = "cpu", use_ema: bool = True,
                expected_type: str | None = None) -> Policy:
    """Rebuild the exact policy of a checkpoint (class, config, features, weights, normaliser) in eval mode.

    ``path`` is a checkpoint dir, its ``pretrained_model`` dir (also one copied on its own), ``checkpoints/last``
    or a run dir; ``device`` is a torch device or ``"auto"`` (CUDA when available). With ``use_ema`` (default)
    the weights the trainer evaluates are loaded: ``pretrained_model/model.safetensors`` (format 2), or in a
    format 1 checkpoint its raw weights with the sibling ``training_state/ema.safetensors`` average applied.
    ``use_ema=False`` loads the raw training weights (:func:`load_training_weights`). With ``expected_type`` (a
    policy name) a checkpoint of another type is refused. Raises :class:`CheckpointError` naming a missing or
    corrupt file, an unknown policy type, both types when it is not ``expected_type``, or a config field the
    policy's config class rejects.
    """
    pretrained = _pretrained_dir(path)
    meta_file = pretrained / "config.json"
    policy = _build_policy(meta_file, expected_type)
    version = _format_version(pretrained)
    weights = load_model_state(pretrained) if use_ema else load_training_weights(pretrained)
    try:
        policy.load_state_dict(weights, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"the weights of {str(pretrained.parent)!r} do not match {meta_file}: {err}") from err
    ema_file = pretrained.parent / TRAINING_STATE / "ema.safetensors"
    if version == 1 and use_ema and ema_file.is_file():
        ema = EMA(policy)
        try:
            ema.load_state_dict(_load_safetensors(ema_file))
        except (KeyError, ValueError) as err:
            raise CheckpointError(f"{str(ema_file)!r} does not match {meta_file}: {err}") from err
        ema.copy_to(policy)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return policy.to(torch.device(device)).eval()


def with_execution(policy: Policy, overrides: Mapping[str, Any]) -> Policy:
    """``policy`` with the execution fields of its config in ``overrides`` (e.g. ``n_action_steps``; None values are
    skipped) replaced and validated by the config class; the weights are untouched.

    Raises:
        ValueError: a field the policy's config lacks (naming it and the policy type), or a value the config rejects.
    """
    changes = {key: value for key, value in overrides.items() if value is not None}
    missing = sorted(set(changes) - {f.name for f in dataclasses.fields(policy.config)})
    if missing:
        raise ValueError(f"policy_execution.{missing[0]}: the {type(policy.config).__name__} of this checkpoint has "
                         f"no field {missing[0]!r}")
    policy.config = dataclasses.replace(policy.config, **changes)
    return policy


def load_training_state(
    path: str | os.PathLike,
    optimizer: torch.optim.Optimizer,
    scheduler: Any | None = None,
    ema: EMA | None = None,
) -> int:
    """Restore optimizer, scheduler, EMA and the python/numpy/torch RNGs from a checkpoint; return its step.

    Load the raw policy weights first (:func:`load_training_weights`) and build the optimizer
    over that policy. Raises :class:`CheckpointError` naming a missing/corrupt file or a state that does not
    fit the given object (e.g. another model's optimizer).
    """
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint directory {str(path)!r} does not exist")
    state_dir = path / TRAINING_STATE
    if not state_dir.is_dir():
        raise CheckpointError(f"checkpoint directory {str(state_dir)!r} does not exist")
    step_file = state_dir / "training_step.json"
    step = _read_json(step_file).get("step")
    if not isinstance(step, int):
        raise CheckpointError(f"{str(step_file)!r} has no integer 'step'")
    targets: list[tuple[str, Any, Callable[[Path], Any]]] = [("optimizer.pt", optimizer, _torch_load)]
    if scheduler is not None:
        targets.append(("scheduler.pt", scheduler, _torch_load))
    if ema is not None:
        targets.append(("ema.safetensors", ema, _load_safetensors))
    for name, target, reader in targets:
        file = state_dir / name
        try:
            target.load_state_dict(reader(file))
        except CheckpointError:
            raise
        except (KeyError, ValueError, RuntimeError) as err:
            raise CheckpointError(f"{str(file)!r} does not fit the given {type(target).__name__}: {err}") from err
    _set_rng_state(_torch_load(state_dir / "rng_state.pt"))
    return step


def load_training_meta(path: str | os.PathLike) -> dict[str, Any]:
    """What ``training_step.json`` of checkpoint ``path`` holds: ``step`` and the ``training_meta`` saved with it.

    Raises :class:`CheckpointError` naming a missing or malformed file.
    """
    return _read_json(Path(path) / TRAINING_STATE / "training_step.json")


# Settings a resumed run must share with the run that wrote the checkpoint; the rest (steps, eval, logging,
# device, output paths) may change.
RESUME_GUARDED = (
    "policy", "env", "seed", "dataset.n_episodes", "dataset.start_seed", "dataset.keep_failed",
    "optim.batch_size", "optim.lr", "optim.weight_decay", "optim.warmup_steps", "optim.ema_decay",
    "optim.grad_clip_norm",
)
_ABSENT = object()


def _lookup(config: Mapping[str, Any], dotted: str) -> Any:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return _ABSENT
        node = node[part]
    return node


def _show(value: Any) -> str:
    return "<absent>" if value is _ABSENT else repr(value)


def check_resume_compatible(
    path: str | os.PathLike, train_config: Mapping[str, Any], guarded: tuple[str, ...] = RESUME_GUARDED
) -> None:
    """Refuse to resume from checkpoint ``path`` when a ``guarded`` setting differs from ``train_config``.

    Compares the resolved config saved in ``train_config.yaml`` with the new one, key path by key path.
    Raises :class:`CheckpointError` listing each differing key with its saved and new value, or naming a
    missing ``train_config.yaml``.
    """
    saved = load_train_config(path, required=())
    file = _pretrained_dir(path) / "train_config.yaml"
    new = OmegaConf.to_container(OmegaConf.create(dict(train_config)), resolve=True)
    changes = []
    for key in guarded:
        old_value, new_value = _lookup(saved, key), _lookup(new, key)
        if old_value != new_value:
            changes.append(f"{key}: {_show(old_value)} -> {_show(new_value)}")
    if changes:
        raise CheckpointError(f"cannot resume from {str(file)!r}; settings changed: " + "; ".join(changes))


def load_train_config(path: str | os.PathLike, required: tuple[str, ...] = ("env",)) -> dict[str, Any]:
    """The resolved training config saved with a checkpoint (``path`` as for :func:`load_policy`).

    Raises :class:`CheckpointError` naming ``train_config.yaml`` when it is missing, unreadable, not a mapping
    (e.g. empty) or lacks one of the ``required`` top-level keys.
    """
    file = _require(_pretrained_dir(path) / "train_config.yaml")
    try:
        config = OmegaConf.load(file)
        if not isinstance(config, DictConfig):
            raise ValueError(f"expected a mapping, got {type(config).__name__}")
        values = OmegaConf.to_container(config, resolve=True)
    except Exception as err:
        raise CheckpointError(f"{str(file)!r} is not a readable YAML config: {err}") from err
    missing = [key for key in required if key not in values]
    if missing:
        raise CheckpointError(f"{str(file)!r} has no {', '.join(map(repr, missing))} section "
                              f"({'empty' if not values else 'keys: ' + ', '.join(values)})")
    return values
