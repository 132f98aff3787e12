"""The typed configs of ``scripts/train_recon.py`` and ``scripts/eval_recon.py`` (conf/train_recon.yaml,
conf/eval_recon.yaml), registered in Hydra's ConfigStore. The scenes' schema (``sim.recon_scenes.SceneConfig``) is
sim's and is registered by the scripts layer as ``scenes/scenes_schema``; here it is an ``Any`` node, as ``env`` is."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from perception.recon.config import ReconConfig
from policies.recon.evaluate import ReconEvalConfig
from policies.recon.train import ReconTrainConfig
from policies.train_config import LoggerConfig


@dataclass
class TrainReconConfig:
    """A reconstruction run: render twin scenes if missing, train, evaluate the held-out scenes."""

    recon: ReconConfig = field(default_factory=ReconConfig)  # conf/recon/*.yaml
    scenes: Any = MISSING  # conf/scenes/*.yaml (sim.recon_scenes.SceneConfig); its image_size follows recon's
    train: ReconTrainConfig = field(default_factory=ReconTrainConfig)
    eval: ReconEvalConfig = field(default_factory=ReconEvalConfig)  # run on the held-out split at the end
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    data_root: str = MISSING  # folder of the scene shards (rendered there when missing; resumable)
    output_dir: str = MISSING  # the run directory (Hydra's output dir): checkpoints/, model/, figures.json
    latest_link: str = "outputs/train_recon/latest"  # symlink pointed at output_dir at the end; "": none


@dataclass
class EvalReconConfig:
    """Evaluation of a saved reconstruction model on held-out twin scenes (policies/recon/evaluate.py)."""

    model: str = "outputs/train_recon/latest/model"  # a save_recon folder (model.safetensors, config.json)
    eval: ReconEvalConfig = field(default_factory=ReconEvalConfig)
    data_root: str = MISSING  # scripts/train_recon.py's data_root: <data_root>/<split>/shard_*.npz
    output_dir: str = MISSING  # the run directory (Hydra's output dir): figures.json


def register_configs() -> None:
    """Registers ``train_recon_schema`` and ``eval_recon_schema``."""
    store = ConfigStore.instance()
    store.store(name="train_recon_schema", node=TrainReconConfig)
    store.store(name="eval_recon_schema", node=EvalReconConfig)
