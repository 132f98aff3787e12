"""``resume=true``: a run continues under the config it was started with, never a silently different one."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from policies.checkpoint import CheckpointError, find_last_checkpoint, load_train_config

NEVER_RESTORED = ("resume", "output_dir")  # where and whether to resume: always this command's
FREE_ON_RESUME = ("device", "logger")  # may be overridden on the resume command line: they change no result


def restore_run_config(cfg: DictConfig, overrides: Sequence[str]) -> DictConfig:
    """``cfg`` with the saved config of the run in ``cfg.output_dir`` restored over it (``resume=true``).

    ``overrides`` are this command line's (Hydra's task overrides). An override of a ``FREE_ON_RESUME`` key is
    kept; any other override whose value differs from the saved one is refused. Everything else comes from the
    run's last checkpoint (``train_config.yaml``), e.g. its ``optim.steps`` and its ``dataset.root``. Nothing is
    collected or written.

    Raises:
        FileNotFoundError: the run dir holds no checkpoint.
        CheckpointError: overrides change the saved config (each key named with both values), or the saved
            config is missing or malformed (the file named).
    """
    last = find_last_checkpoint(cfg.output_dir)
    if last is None:
        raise FileNotFoundError(f"resume=true but {Path(cfg.output_dir) / 'checkpoints'} holds no checkpoint")
    saved = load_train_config(last, required=("env", "policy"))
    keys = [o.key_or_group for o in OverridesParser.create().parse_overrides(list(overrides))]
    restored = copy.deepcopy(saved)
    changes = []
    for key in keys:
        root = key.split(".")[0]
        if root in NEVER_RESTORED:
            continue
        if root in FREE_ON_RESUME:
            _drop(restored, key)
            continue
        old, new = _lookup(saved, key), _select(cfg, key)
        if old != new:
            changes.append(f"{key} (saved {old!r}, given {new!r})")
    if changes:
        raise CheckpointError(f"resume=true restores the config saved in {last / 'pretrained_model'}; these "
                              f"overrides change it: {'; '.join(changes)}. Drop them, or start a new run")
    for key in NEVER_RESTORED:
        restored.pop(key, None)
    return OmegaConf.merge(cfg, restored)


_ABSENT = "<absent>"


def _lookup(config: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(config, dict) or part not in config:
            return _ABSENT
        config = config[part]
    return config


def _select(cfg: DictConfig, dotted: str) -> Any:
    """The resolved value at ``dotted`` (plain containers), resolving nothing else of ``cfg``."""
    value = OmegaConf.select(cfg, dotted, default=_ABSENT)
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def _drop(config: dict[str, Any], dotted: str) -> None:
    *parents, leaf = dotted.split(".")
    for part in parents:
        config = config.get(part)
        if not isinstance(config, dict):
            return
    config.pop(leaf, None)
