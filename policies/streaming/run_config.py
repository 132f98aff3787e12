"""The typed configs of ``scripts/train_streaming.py`` and ``scripts/eval_streaming.py`` (conf/train_streaming.yaml,
conf/eval_streaming.yaml), registered in Hydra's ConfigStore with the model's (``streaming/streaming_schema``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from perception.streaming import StreamingConfig
from policies.streaming.clips import ClipConfig
from policies.streaming.data import StreamDataConfig
from policies.streaming.evaluate import StreamEvalConfig
from policies.streaming.train import StreamTrainConfig
from policies.train_config import LoggerConfig


@dataclass
class TrainStreamingConfig:
    """A streaming-model run: collect labelled twin videos if missing, train on clips, evaluate held-out streams."""

    env: Any = MISSING  # env group (its own schema, e.g. env/pusht_targets_schema), with pushes on the block
    streaming: StreamingConfig = field(default_factory=StreamingConfig)  # conf/streaming/*.yaml
    data: StreamDataConfig = field(default_factory=StreamDataConfig)  # splits, agent mix, labels
    clips: ClipConfig = field(default_factory=ClipConfig)  # clip length, frozen / replay injection
    train: StreamTrainConfig = field(default_factory=StreamTrainConfig)
    eval: StreamEvalConfig = field(default_factory=StreamEvalConfig)  # run on the held-out split at the end
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    data_root: str = MISSING  # folder of the videos (collected there when missing; resumable)
    output_dir: str = MISSING  # the run directory (Hydra's output dir): checkpoints/, model/, figures.json
    latest_link: str = "outputs/train_streaming/latest"  # symlink pointed at output_dir at the end; "": none


@dataclass
class EvalStreamingConfig:
    """Evaluation of a saved streaming model on held-out twin videos (policies/streaming/evaluate.py)."""

    model: str = "outputs/train_streaming/latest/model"  # a save_streaming folder (model.safetensors, config.json)
    eval: StreamEvalConfig = field(default_factory=StreamEvalConfig)
    data_root: str = MISSING  # scripts/train_streaming.py's data_root: <data_root>/<split>/episode_*.npz
    output_dir: str = MISSING  # the run directory (Hydra's output dir): figures.json


def register_configs() -> None:
    """Registers ``train_streaming_schema``, ``eval_streaming_schema`` and ``streaming/streaming_schema``."""
    store = ConfigStore.instance()
    store.store(name="train_streaming_schema", node=TrainStreamingConfig)
    store.store(name="eval_streaming_schema", node=EvalStreamingConfig)
    store.store(group="streaming", name="streaming_schema", node=StreamingConfig)
