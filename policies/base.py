"""The policy interface: a stateful wrapper (queues, normalisation) around a pure network.

Every concrete policy declares ``name`` (also its registry name and folder, ``policies/<name>/``) and
``config_class`` (a :class:`PolicyConfig` dataclass). Both are checked when the class is defined, so a
policy missing either fails at import time, not halfway through a training run.
"""

from __future__ import annotations

import dataclasses
import os
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from policies.normalize import NORM_MODES, Normalizer, feature_kind

_REGISTRY: dict[str, type[Policy]] = {}


@dataclasses.dataclass
class PolicyConfig:
    """Fields every policy shares: the observation/action timeline and the normalisation per feature kind."""

    # --- timeline (steps at the control rate, fps = 10 for PushT) -------------------------------------------------
    n_obs_steps: int = 2  # To: observations the policy sees (the current one and To - 1 before it)
    horizon: int = 16  # H: actions predicted per chunk, the first one for the current step
    n_action_steps: int = 4  # Ta: actions executed from each chunk before replanning

    # --- normalisation mode per feature kind ("min_max" -> [-1, 1], "mean_std", "identity") -----------------------
    normalization_mapping: dict[str, str] = dataclasses.field(
        default_factory=lambda: {"visual": "identity", "state": "min_max", "env": "min_max", "action": "min_max"}
    )

    # --- inputs ------------------------------------------------------------------------------------------------------
    observation_keys: tuple[str, ...] | None = None  # observation.* features to use; None: every one in `features`
    # Predict actions as offsets from the latest value of this observation (e.g. observation.state, the pusher xy),
    # normalised per chunk index: near-term actions get the resolution that precise pushing needs. The action
    # stats given to the policy must then be those of the offsets, shape (horizon, action_dim): see
    # ``relative_action_stats``. None: absolute actions.
    relative_action_key: str | None = None

    def __post_init__(self) -> None:
        self.normalization_mapping = dict(self.normalization_mapping)
        if self.observation_keys is not None:
            self.observation_keys = tuple(str(k) for k in self.observation_keys)
            bad = [k for k in self.observation_keys if not k.startswith("observation.")]
            if bad or not self.observation_keys:
                raise ValueError(f"observation_keys must be non-empty observation.* keys, got {self.observation_keys!r}")
        for field in ("n_obs_steps", "horizon", "n_action_steps"):
            if int(getattr(self, field)) < 1:
                raise ValueError(f"{field} must be >= 1, got {getattr(self, field)!r}")
        if self.n_action_steps > self.horizon:
            raise ValueError(
                f"n_action_steps must be <= horizon (actions executed per chunk), got "
                f"n_action_steps={self.n_action_steps}, horizon={self.horizon}"
            )
        for kind, mode in self.normalization_mapping.items():
            if mode not in NORM_MODES:
                raise ValueError(f"normalization_mapping[{kind!r}] must be one of {NORM_MODES}, got {mode!r}")
        for kind in ("visual", "state", "env", "action"):
            if kind not in self.normalization_mapping:
                raise ValueError(f"normalization_mapping has no entry for feature kind {kind!r}")

    @property
    def observation_delta_indices(self) -> list[int]:
        """Frame offsets of the observations in one training sample: ``[1 - To, ..., 0]``."""
        return list(range(1 - self.n_obs_steps, 1))

    @property
    def action_delta_indices(self) -> list[int]:
        """Frame offsets of the action chunk in one training sample: ``[0, ..., H - 1]``."""
        return list(range(self.horizon))


def _plain_spec(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON-safe part of a feature spec: ``dtype``, ``shape`` (ints) and ``names`` (list or None)."""
    names = spec.get("names")
    if isinstance(names, Mapping):  # LeRobot allows {"motors": [...]}
        names = {str(k): [str(n) for n in v] for k, v in names.items()}
    elif names is not None:
        names = [str(n) for n in names]
    return {"dtype": str(spec["dtype"]), "shape": [int(s) for s in spec["shape"]], "names": names}


def _is_abstract(cls: type) -> bool:
    """Whether ``cls`` still has abstract methods (``ABCMeta`` sets that flag only after ``__init_subclass__``)."""
    if any(getattr(v, "__isabstractmethod__", False) for v in vars(cls).values()):
        return True
    inherited = {name for base in cls.__bases__ for name in getattr(base, "__abstractmethods__", ())}
    return any(getattr(getattr(cls, name, None), "__isabstractmethod__", False) for name in inherited)


class Policy(nn.Module, ABC):
    """Base of all policies: normalisation inside the module, observation and action queues for control.

    Timeline with To = ``n_obs_steps`` = 2, H = ``horizon`` = 16, Ta = ``n_action_steps`` = 4 (the defaults); the
    policy replans at step ``t`` (the same alignment as ``ChunkWindowDataset``: obs t-To+1..t, actions t..t+H-1)::

        step:       t-1  t    t+1  t+2  t+3  t+4  ...  t+15
        observed:   o    o                                      <- To observations (oldest first)
        chunk:           a0   a1   a2   a3   a4   ...  a15      <- H actions; a0 is the action for step t
        executed:        a0   a1   a2   a3                      <- the first Ta actions
        next plan:                                t+4: sees o(t+3), o(t+4), executes its a0..a3

    ``select_action`` keeps the last To observations and the Ta pending actions; it calls
    ``predict_action_chunk`` only when the action queue is empty, i.e. once every Ta calls. ``reset``
    clears both queues; right after it the history is padded with copies of the first observation.

    Subclasses must set ``name: ClassVar[str]`` and ``config_class: ClassVar[type[PolicyConfig]]`` and
    implement ``predict_action_chunk`` and ``forward``.

    Args:
        config: an instance of ``config_class``.
        features: LeRobot info.json-style ``{key: {"dtype", "shape", "names"}}`` of the inputs and the action
            this policy uses; bookkeeping keys (``timestamp``, ``task``, ...) are ignored.
        stats: ``meta/stats.json`` content ``{key: {"min", "max", "mean", "std"}}``, or ``None`` to build
            placeholders that ``load_state_dict`` fills (loading a checkpoint).

    Raises:
        TypeError: ``config`` is not a ``config_class``.
        ValueError: a malformed feature spec, or ``features`` lacks ``action``.
        KeyError: ``stats`` lacks a key its normalisation mode needs.
    """

    name: ClassVar[str]
    config_class: ClassVar[type[PolicyConfig]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if _is_abstract(cls):
            return
        name = cls.__dict__.get("name")
        if not isinstance(name, str) or not name:
            raise TypeError(f"policy class {cls.__qualname__} must define `name: ClassVar[str]` (its registry name)")
        config_class = getattr(cls, "config_class", None)
        if not (isinstance(config_class, type) and issubclass(config_class, PolicyConfig)):
            raise TypeError(
                f"policy class {cls.__qualname__} must define `config_class`, a PolicyConfig dataclass subclass"
            )
        if name in _REGISTRY and _REGISTRY[name].__qualname__ != cls.__qualname__:
            raise TypeError(f"policy name {name!r} is already used by {_REGISTRY[name].__qualname__}")
        _REGISTRY[name] = cls

    def __init__(
        self,
        config: PolicyConfig,
        features: Mapping[str, Mapping[str, Any]],
        stats: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(config, self.config_class):
            raise TypeError(f"{type(self).__name__} needs a {self.config_class.__name__}, got {type(config).__name__}")
        self.config = config
        if config.observation_keys is not None:
            missing = [k for k in config.observation_keys if k not in features]
            if missing:
                raise ValueError(f"observation_keys {missing} are not in features {sorted(features)}")
            features = {k: v for k, v in features.items() if not k.startswith("observation.") or k in config.observation_keys}
        kinds = {key: feature_kind(key, spec) for key, spec in features.items()}
        self.features: dict[str, dict[str, Any]] = {k: _plain_spec(features[k]) for k, v in kinds.items() if v}
        self.feature_kinds: dict[str, str] = {k: v for k, v in kinds.items() if v}
        if "action" not in self.features:
            raise ValueError("features must contain 'action'")
        self.input_keys: list[str] = [k for k in self.features if k != "action"]
        modes = {
            key: config.normalization_mapping.get(kind, "identity") for key, kind in self.feature_kinds.items()
        }
        norm_features = self.features
        if config.relative_action_key is not None:
            key = config.relative_action_key
            if key not in self.input_keys or list(self.features[key]["shape"]) != list(self.features["action"]["shape"]):
                raise ValueError(
                    f"relative_action_key {key!r} must be an input feature shaped like 'action' "
                    f"{self.features['action']['shape']}; inputs are {self.input_keys}"
                )
            chunk_shape = [config.horizon, *self.features["action"]["shape"]]
            norm_features = {**self.features, "action": {**self.features["action"], "shape": chunk_shape}}
        self.normalizer = Normalizer(norm_features, modes, stats)
        self._obs_queues: dict[str, deque[Tensor]] = {}
        self._action_queue: deque[Tensor] = deque()

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> Policy:
        """Load a saved policy of this class (:func:`policies.checkpoint.load_policy`), in eval mode.

        Raises ``CheckpointError`` naming both types when ``path`` holds another policy type, and as
        ``load_policy`` for a missing or damaged checkpoint.
        """
        from policies.checkpoint import load_policy  # checkpoint imports this module

        return load_policy(path, device=device, expected_type=cls.name)

    @classmethod
    def from_assets(cls, config: PolicyConfig, features: Mapping[str, Mapping[str, Any]], directory: Path) -> Policy:
        """An untrained policy of a saved ``pretrained_model`` directory, before its weights are loaded.

        ``directory`` holds what :meth:`save_assets` wrote (e.g. a tokenizer); the normaliser stats come with the
        weights. The default needs no file.
        """
        return cls(config, features, stats=None)

    def save_assets(self, directory: Path) -> None:
        """Write what rebuilding this policy needs besides its config and weights into ``directory`` (default: nothing).

        :func:`policies.checkpoint.save_checkpoint` calls it with the ``pretrained_model`` directory.
        """

    @property
    def action_dim(self) -> int:
        """Size of one action vector (2 for PushT's pusher xy)."""
        return int(self.features["action"]["shape"][0])

    @property
    def device(self) -> torch.device:
        """Device of the policy's parameters (or buffers, for a parameter-free policy)."""
        tensor = next(self.parameters(), None)
        if tensor is None:
            tensor = next(self.buffers())
        return tensor.device

    def reset(self) -> None:
        """Clear the observation history and pending actions; call at the start of every episode."""
        self._obs_queues = {}
        self._action_queue = deque()

    def _prepare_observation(self, obs: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Pick the input keys, move them to the policy's device and turn uint8 BxHxWxC images into float BxCxHxW."""
        out = {}
        for key in self.input_keys:
            if key not in obs:
                raise KeyError(f"observation has no {key!r}; the policy needs {self.input_keys}")
            value = torch.as_tensor(obs[key]).to(self.device)
            if self.feature_kinds[key] == "visual" and value.dtype == torch.uint8:
                if value.ndim != 4:
                    raise ValueError(f"{key!r}: expected a uint8 (B, H, W, C) image batch, got shape {tuple(value.shape)}")
                value = value.permute(0, 3, 1, 2).float() / 255.0
            elif value.is_floating_point():
                value = value.float()
            out[key] = value
        return out

    @torch.no_grad()
    def select_action(self, obs: Mapping[str, Tensor], generator: torch.Generator | None = None) -> Tensor:
        """Return the action ``(B, action_dim)`` to execute now, in world units (metres for PushT).

        ``obs`` holds single-step tensors ``(B, ...)`` for every input key; images may be uint8
        ``(B, H, W, C)`` or float ``(B, C, H, W)`` in [0, 1]. Replans when the action queue is empty (see the
        class docstring for the timeline). Put the policy in ``eval()`` mode first. Raises ``KeyError``
        naming a missing input key.
        """
        step = self._prepare_observation(obs)
        if not self._obs_queues:
            self._obs_queues = {k: deque([v] * self.config.n_obs_steps, maxlen=self.config.n_obs_steps) for k, v in step.items()}
        else:
            for key, value in step.items():
                self._obs_queues[key].append(value)
        if not self._action_queue:
            history = {key: torch.stack(list(queue), dim=1) for key, queue in self._obs_queues.items()}
            chunk = self.predict_action_chunk(history, generator=generator)
            self._action_queue.extend(chunk[:, : self.config.n_action_steps].unbind(dim=1))
        return self._action_queue.popleft()

    def to_relative(self, actions: Tensor, obs: Mapping[str, Tensor]) -> Tensor:
        """Action chunk ``(B, H, A)`` as offsets from the latest ``relative_action_key`` observation (no-op if unset)."""
        key = self.config.relative_action_key
        return actions if key is None else actions - obs[key][:, -1:]

    def to_absolute(self, actions: Tensor, obs: Mapping[str, Tensor]) -> Tensor:
        """Inverse of :meth:`to_relative`: offsets ``(B, H, A)`` back to world-frame actions."""
        key = self.config.relative_action_key
        return actions if key is None else actions + obs[key][:, -1:]

    @abstractmethod
    def predict_action_chunk(self, obs: Mapping[str, Tensor], generator: torch.Generator | None = None) -> Tensor:
        """Predict ``(B, horizon, action_dim)`` actions in world units from ``(B, n_obs_steps, ...)`` observations.

        Deterministic for a given ``generator`` state.
        """

    @abstractmethod
    def forward(self, batch: Mapping[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        """Return the training loss (scalar tensor) and floats to log, from an un-normalised training batch.

        An optional ``sample_weights`` ``(B,)`` entry (reward-aligned BC) weights each sample's action loss
        (:func:`policies.common.flow.flow_matching_loss`); without it every sample counts the same.
        """
