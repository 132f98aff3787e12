"""The vision-language-action policy: cameras + instruction + proprioception -> flow-matching action chunks."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from policies.base import Policy
from policies.common.flow import euler_sample, flow_matching_loss
from policies.common.inputs import check_observation_steps
from policies.normalize import image_chw
from policies.vla.config import PRIVILEGED_KEYS, VLAConfig
from policies.vla.execution import TemporalEnsembler
from policies.vla.expert import ActionExpert, AuxHead
from policies.vla.tokenizer import WordTokenizer

TASK_KEY = "task"


class VLAPolicy(Policy):
    """pi0 / SmolVLA-shaped policy: a trunk over image, word and state tokens; an action expert cross-attending to it.

    Inputs (the only ones, at training and at evaluation): ``observation.images.*`` ``(B, To, C, H, W)`` float in
    [0, 1], the instruction ``task`` (``list[str]`` of length B) and ``observation.state`` ``(B, To, S)``.
    ``input_keys`` additionally lists ``aux_key`` (privileged state) when the auxiliary head is on, so that the
    trainer's windows carry it as a target; ``model_keys`` are what inference reads: ``select_action`` and
    ``predict_action_chunk`` never look at ``aux_key``.

    Loss: flow matching on the normalised chunk (:func:`policies.common.flow.flow_matching_loss`) plus
    ``aux_weight`` times the MSE of the auxiliary head's prediction of the latest normalised ``aux_key``.
    Execution (``config.execution``): ``receding`` runs ``n_action_steps`` of each chunk; ``ensemble`` replans
    every step and averages all predictions of the current step (ACT's temporal ensembling).

    Args:
        config, features, stats: as :class:`policies.base.Policy`.
        tokenizer: the native backbone's word tokenizer; ``None`` builds it from ``config.task_source`` (a
            dataset's ``meta/tasks.parquet``), or an empty vocabulary without one.
        assets_dir: a saved ``pretrained_model`` directory to rebuild the ``hf`` backbone from (no hub access).

    Raises:
        ValueError: depth inputs, a camera whose feature map does not divide into ``image_token_grid``, or an hf
            model of an unsupported kind.
    """

    name: ClassVar[str] = "vla"
    config_class: ClassVar[type[VLAConfig]] = VLAConfig

    def __init__(self, config: VLAConfig, features: Mapping[str, Mapping[str, Any]],
                 stats: Mapping[str, Mapping[str, Any]] | None = None, tokenizer: WordTokenizer | None = None,
                 assets_dir: Path | None = None) -> None:
        super().__init__(config, features, stats)
        kinds = self.feature_kinds
        depth = [k for k in self.input_keys if kinds[k] == "depth"]
        if depth:
            raise ValueError(f"vla does not take depth inputs {depth}; drop them from features")
        privileged = {*PRIVILEGED_KEYS, config.aux_key}
        self.image_keys = [k for k in self.input_keys if kinds[k] == "visual"]
        self.state_keys = [k for k in self.input_keys if kinds[k] == "state" and k not in privileged]
        self.model_keys: list[str] = [*self.image_keys, *self.state_keys]
        self.aux_key = config.aux_key if config.uses_aux and config.aux_key in self.features else None
        self.input_keys = [*self.model_keys, *([self.aux_key] if self.aux_key else [])]
        self.image_shapes = {k: image_chw(k, self.features[k]) for k in self.image_keys}
        state_dim = config.n_obs_steps * sum(int(math.prod(self.features[k]["shape"])) for k in self.state_keys)
        self.backbone = self._build_backbone(config, state_dim, tokenizer, assets_dir)
        hidden = self.backbone.hidden_dim
        self.expert = ActionExpert(self.action_dim, config.horizon, config.expert_dim, config.expert_layers,
                                   config.expert_heads, config.mlp_ratio, hidden)
        self.aux_head = None
        if self.aux_key is not None:
            self.aux_head = AuxHead(hidden, int(math.prod(self.features[self.aux_key]["shape"])))
        self._ensembler = TemporalEnsembler(config.ensemble_decay, config.horizon)

    def _build_backbone(self, config: VLAConfig, state_dim: int, tokenizer: WordTokenizer | None,
                        assets_dir: Path | None) -> nn.Module:
        if config.backbone.type == "hf":
            from policies.vla.hf import ASSETS_DIR, HFBackbone  # transformers is imported only for this backbone

            if assets_dir is not None:
                return HFBackbone(config, state_dim, path=str(Path(assets_dir) / ASSETS_DIR), load_weights=False)
            return HFBackbone(config, state_dim)
        from policies.vla.native import NativeBackbone

        if tokenizer is None:
            if config.task_source:
                tokenizer = WordTokenizer.from_dataset(config.task_source, config.max_length)
            else:
                tokenizer = WordTokenizer([], config.max_length)
        cameras = [(k, self.image_shapes[k]) for k in self.image_keys]
        return NativeBackbone(config, cameras, state_dim, tokenizer)

    # ------------------------------------------------------------------------------------------- artifact
    def save_assets(self, directory: Path) -> None:
        """Write the tokenizer (``tokenizer.json``, or the hf model's config and tokenizer under ``backbone/``)."""
        if self.config.backbone.type == "hf":
            self.backbone.save_assets(directory)
        else:
            self.backbone.tokenizer.save(directory)

    @classmethod
    def from_assets(cls, config: VLAConfig, features: Mapping[str, Mapping[str, Any]], directory: Path) -> VLAPolicy:
        """The untrained policy of a ``pretrained_model`` dir, with its saved tokenizer (never the dataset's)."""
        if config.backbone.type == "hf":
            return cls(config, features, stats=None, assets_dir=directory)
        return cls(config, features, stats=None, tokenizer=WordTokenizer.load(directory))

    # ---------------------------------------------------------------------------------------------- model
    def _tasks(self, obs: Mapping[str, Any], batch_size: int) -> list[str]:
        """The instructions of a batch as ``list[str]`` of length B (a single string is broadcast)."""
        if TASK_KEY not in obs:
            raise KeyError(f"batch has no {TASK_KEY!r} (the instructions, list[str]); the vla needs it")
        tasks = obs[TASK_KEY]
        if isinstance(tasks, str):
            tasks = [tasks] * batch_size
        tasks = [str(t) for t in tasks]
        if len(tasks) != batch_size:
            raise ValueError(f"{TASK_KEY!r} holds {len(tasks)} instructions for a batch of {batch_size}")
        return tasks

    def _check_obs(self, obs: Mapping[str, Any]) -> int:
        """Check each model input is ``(B, To, ...)`` and each image has the feature's (C, H, W); return B."""
        check_observation_steps(obs, self.model_keys, self.image_shapes, self.config.n_obs_steps,
                                f"{self.model_keys} and {TASK_KEY!r}", image_shapes=self.image_shapes)
        if not self.model_keys:
            return len(self._tasks(obs, len(obs[TASK_KEY])))
        return int(obs[self.model_keys[0]].shape[0])

    def encode(self, norm: Mapping[str, Any]) -> tuple[Tensor, Tensor]:
        """Trunk tokens ``(B, L, hidden)`` and validity mask ``(B, L)`` of a normalised batch (+ ``task``)."""
        batch_size = self._check_obs(norm)
        tasks = self._tasks(norm, batch_size)
        images = {k: norm[k][:, -self.config.image_history:] for k in self.image_keys}
        state = torch.cat([norm[k].flatten(2) for k in self.state_keys], dim=-1).flatten(1) if self.state_keys else None
        return self.backbone(images, tasks, state)

    def forward(self, batch: Mapping[str, Any]) -> tuple[Tensor, dict[str, float]]:
        """Flow-matching (+ auxiliary) loss of an un-normalised batch; logs ``loss``, ``flow_loss``, ``aux_loss``.

        ``sample_weights`` (reward-aligned BC) weights the flow (action) loss only: the auxiliary head regresses the
        observed block and target poses, which are right whatever the quality of the demonstrated action.
        """
        if "action" not in batch:
            raise KeyError("batch has no 'action'")
        norm = self.normalizer.normalize({**batch, "action": self.to_relative(batch["action"], batch)})
        tokens, mask = self.encode(norm)
        actions = norm["action"]
        expected = (tokens.shape[0], self.config.horizon, self.action_dim)
        if tuple(actions.shape) != expected:
            raise ValueError(f"'action': expected shape {expected} (B, horizon, action_dim), got {tuple(actions.shape)}")
        memory = self.expert.memory(tokens)
        flow = flow_matching_loss(lambda x, t: self.expert(x, t, memory, mask), actions, self.config.time_sampling,
                                  batch.get("action_is_pad"), batch.get("sample_weights"))
        logs = {"flow_loss": flow.item()}
        loss = flow
        if self.aux_head is not None:
            if self.aux_key not in norm:
                raise KeyError(f"batch has no {self.aux_key!r}, the auxiliary target (set aux_weight=0 to train "
                               "without it)")
            target = norm[self.aux_key][:, -1].flatten(1)
            aux = F.mse_loss(self.aux_head(tokens[:, -1]), target)
            loss = loss + self.config.aux_weight * aux
            logs["aux_loss"] = aux.item()
        logs["loss"] = loss.item()
        return loss, logs

    @torch.no_grad()
    def predict_action_chunk(self, obs: Mapping[str, Any], generator: torch.Generator | None = None) -> Tensor:
        """Sample ``(B, horizon, action_dim)`` actions in world units from un-normalised ``(B, To, ...)`` inputs + ``task``.

        Reads only ``model_keys`` and ``task``. Deterministic for a given ``generator`` state.
        """
        model_obs = {k: obs[k] for k in self.model_keys if k in obs}
        model_obs[TASK_KEY] = obs.get(TASK_KEY)
        if model_obs[TASK_KEY] is None:
            raise KeyError(f"observation has no {TASK_KEY!r} (the instructions, list[str]); the vla needs it")
        tokens, mask = self.encode(self.normalizer.normalize(model_obs))
        memory = self.expert.memory(tokens)
        shape = (tokens.shape[0], self.config.horizon, self.action_dim)
        x = euler_sample(lambda x, t: self.expert(x, t, memory, mask), shape, self.config.num_inference_steps,
                         generator, tokens.device, tokens.dtype)
        if self.config.clip_sample and self.normalizer.modes.get("action") == "min_max":
            x = x.clamp(-1.0, 1.0)
        return self.to_absolute(self.normalizer.unnormalize_action(x), obs)

    # --------------------------------------------------------------------------------------------- control
    def reset(self) -> None:
        """Clear the observation history, pending actions and the temporal ensemble; call at every episode start."""
        super().reset()
        self._ensembler.reset()

    def _prepare_observation(self, obs: Mapping[str, Any]) -> dict[str, Tensor]:
        """The base preparation restricted to ``model_keys``: privileged keys are neither needed nor read."""
        keys, self.input_keys = self.input_keys, self.model_keys
        try:
            return super()._prepare_observation(obs)
        finally:
            self.input_keys = keys

    @torch.no_grad()
    def select_action(self, obs: Mapping[str, Any], generator: torch.Generator | None = None) -> Tensor:
        """The action ``(B, action_dim)`` to execute now from single-step inputs ``(B, ...)`` and ``task`` (list[str]).

        Replans every ``n_action_steps`` calls (``receding``) or every call (``ensemble``); the instruction of the
        latest call is used. Put the policy in ``eval()`` mode first.
        """
        step = self._prepare_observation(obs)
        batch_size = int(next(iter(step.values())).shape[0]) if step else len(obs[TASK_KEY])
        tasks = self._tasks(obs, batch_size)
        if not self._obs_queues:
            to = self.config.n_obs_steps
            self._obs_queues = {k: deque([v] * to, maxlen=to) for k, v in step.items()}
        else:
            for key, value in step.items():
                self._obs_queues[key].append(value)
        replan = self.config.execution == "ensemble" or not self._action_queue
        if replan:
            history: dict[str, Any] = {k: torch.stack(list(q), dim=1) for k, q in self._obs_queues.items()}
            history[TASK_KEY] = tasks
            chunk = self.predict_action_chunk(history, generator=generator)
            if self.config.execution == "ensemble":
                return self._ensembler.update(chunk)
            self._action_queue.extend(chunk[:, : self.config.n_action_steps].unbind(dim=1))
        return self._action_queue.popleft()

