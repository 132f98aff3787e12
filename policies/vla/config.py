"""Configuration of the vision-language-action policy (registry name ``vla``) and of its backbone.

Compute budget of the ``native`` preset (``policy=vla_tiny``: one 64x64 camera, d = 128, MLP ratio 2), forward
multiply-adds (MAC; a FLOP is 2 of them) per training sample, for a 9-word instruction (26 trunk tokens: padding
columns no instruction of the batch reaches are cut; ``word_insert`` pads half the training instructions with <unk>
up to 16 words, which makes the trunk ~25% dearer in training):

======================================================  =======  ==============================================
part                                                     MMAC     shape
======================================================  =======  ==============================================
image encoder: 3x3 stem 3->16 (s2) + basic block (s2)    4.2      64x64 -> 32x32 (16 ch) -> 16x16 (32 ch)
image tokens: 4x4 patch merge 32 -> 128                  1.0      16x16 map -> 4x4 = 16 tokens
keypoint token: 1x1 conv 32 -> 32, spatial softmax, linear 0.3      16x16 map -> 32 (x, y) -> 1 token
words: embedding lookup (ids cached per instruction)     0        9 tokens (max_length 16)
trunk: 2 pre-LN layers over 17 + 9 + 1 = 27 tokens        7.5      27 x 2 x (8 d^2 + 2 x 27 d)
expert: 2 layers, 16 action tokens, self + cross attn    6.2      16 x 2 x 10 d^2, memory K/V 27 x 2 x 2 d^2, time MLP
state token, aux head                                    <0.1
total (measured with torch.utils.flop_counter)          ~20.8    41.6 MFLOP forward, ~125 MFLOP fwd + bwd
======================================================  =======  ==============================================

At batch 64 that is ~8 GFLOP per optimiser step: 7.5-7.7 steps/s measured on the idle 2-core CPU without instruction
noise, 6.4 with it (longer instructions, a per-row perturbation), so the default 16k steps take 42 min (DESIGN.md 4b's
reference, a 4-layer d=128 transformer over 24 tokens, is ~95 ms a step).
Inference: the trunk once per chunk, the expert ``num_inference_steps`` times over memory keys/values computed once
(149 MFLOP a chunk with 10 steps).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from policies.base import PolicyConfig
from policies.common.flow import TIME_SAMPLINGS

BACKBONES = ("native", "hf")
EXECUTIONS = ("receding", "ensemble")
PRIVILEGED_KEYS = ("observation.environment_state",)  # simulator state: a training target only, never an input


@dataclasses.dataclass
class BackboneConfig:
    """Which trunk turns images + instruction + state into tokens for the action expert.

    ``native``: everything from scratch (conv image tokens, word embeddings, a small transformer), sized by the
    fields of :class:`VLAConfig`. ``hf``: a transformers vision-language model (SmolVLM / Idefics3 class:
    ``vision_model`` -> ``connector`` -> a causal text model) loaded from ``path`` (a hub id or a local directory).
    """

    type: str | None = None  # "native" | "hf"; None: "hf" when a path is given, else "native"
    path: str | None = None  # hf: hub id or local dir of the vision-language model (AutoModelForImageTextToText)
    num_layers: int | None = None  # hf: keep only the first N text layers (SmolVLA keeps half); None: all
    train_last_n_layers: int = 0  # hf: fine-tune the last N kept text layers (and the final norm); 0: frozen
    train_vision: bool = False  # hf: also fine-tune the vision encoder and connector
    dtype: str = "float32"  # hf: dtype of the frozen backbone weights ("float32" | "bfloat16" | "float16")

    def __post_init__(self) -> None:
        if self.type is None:
            self.type = "hf" if self.path else "native"
        if self.type not in BACKBONES:
            raise ValueError(f"backbone.type must be one of {BACKBONES}, got {self.type!r}")
        if self.type == "hf" and not self.path:
            raise ValueError("backbone.path must name a hub id or a local directory when backbone.type is 'hf'")
        if self.num_layers is not None and int(self.num_layers) < 1:
            raise ValueError(f"backbone.num_layers must be None or >= 1, got {self.num_layers!r}")
        if int(self.train_last_n_layers) < 0:
            raise ValueError(f"backbone.train_last_n_layers must be >= 0, got {self.train_last_n_layers!r}")
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"backbone.dtype must be float32, bfloat16 or float16, got {self.dtype!r}")


@dataclasses.dataclass
class VLAConfig(PolicyConfig):
    """Vision-language-action policy: images + instruction + proprioception -> a flow-matching action chunk.

    Inputs are the ``observation.images.*`` cameras, the instruction (``task``) and low-dim proprioception
    (``observation.state``); privileged simulator state (``aux_key``, ``observation.environment_state``) is only
    a training target of an auxiliary head and can never be an input (``observation_keys`` naming it is refused).
    Timeline fields and ``normalization_mapping`` come from :class:`PolicyConfig`.
    """

    n_obs_steps: int = 2  # state history (the pusher's velocity); images: the last `image_history` of them
    horizon: int = 16
    # replan every step: the run-5 checkpoint placed the T in 0.695 of 200 episodes so, 0.62 / 0.47 of 100 with 4 / 8
    # (each plan is 16 ms p99 on one core, well inside the 100 ms control period)
    n_action_steps: int = 1
    image_history: int = 1  # camera frames per camera fed to the trunk (the latest ones), <= n_obs_steps

    backbone: BackboneConfig = dataclasses.field(default_factory=BackboneConfig)

    # --- native backbone ---------------------------------------------------------------------------------------------
    dim: int = 128  # token width of the trunk
    trunk_layers: int = 2
    num_heads: int = 4
    mlp_ratio: int = 2  # MLP width / token width, trunk and expert
    vision_channels: tuple[int, int] = (16, 32)  # ResNet stem / stage channels (policies.common.vision)
    vision_full_resolution_block: bool = False  # the encoder's residual block at H/2 (doubles its compute)
    image_token_grid: tuple[int, int] = (4, 4)  # image tokens per frame (rows, cols): the feature map merged to it
    keypoints: int = 32  # spatial-softmax keypoints of the feature map, as one extra token per frame (0: none)
    film: bool = True  # condition the image encoder on the instruction (FiLM after its stem and stage; RT-1)
    # training-time instruction noise (policies.vla.tokenizer.perturb_instructions): per word, the probability of
    # <unk>; per instruction, the probabilities of shuffling its words and of inserting <unk>s up to max_length. Run 6
    # (dropout only) kept 0.71 on the held-out paraphrase naming the colour at a trained position (word 6) but
    # 0.53 / 0.57 where it comes at word 1 / 9, never seen in training (200 episodes, base 0.765)
    word_dropout: float = 0.1
    word_shuffle: float = 0.5
    word_insert: float = 0.5

    # --- instruction tokenizer ---------------------------------------------------------------------------------------
    max_length: int = 16  # instruction tokens; a longer instruction raises ValueError
    task_source: str | None = None  # native: a LeRobot dataset root whose meta/tasks.parquet gives the vocabulary

    # --- action expert (flow matching) ------------------------------------------------------------------------------
    expert_dim: int = 128
    expert_layers: int = 2
    expert_heads: int = 4
    time_sampling: str = "beta"  # see policies.common.flow.sample_flow_time
    num_inference_steps: int = 10
    clip_sample: bool = True  # clip sampled actions to [-1, 1] when the action is min_max normalised

    # --- execution ---------------------------------------------------------------------------------------------------
    execution: str = "receding"  # "receding": replan every n_action_steps; "ensemble": replan every step and average
    ensemble_decay: float = 0.01  # ensemble weight exp(-decay * age) per earlier prediction of a step (ACT's m)

    # --- privileged auxiliary target (training only) ----------------------------------------------------------------
    aux_key: str | None = "observation.environment_state"  # predicted from the trunk's state token; None: no head
    aux_weight: float = 0.1  # weight of its MSE (normalised units) in the loss; 0: no head

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.backbone, dict) or not isinstance(self.backbone, BackboneConfig):
            self.backbone = BackboneConfig(**_as_dict(self.backbone))
        self.vision_channels = tuple(int(c) for c in self.vision_channels)
        self.image_token_grid = tuple(int(c) for c in self.image_token_grid)
        self._check_inputs()
        for field in ("image_history", "dim", "trunk_layers", "num_heads", "mlp_ratio", "max_length", "expert_dim",
                      "expert_layers", "expert_heads", "num_inference_steps"):
            if int(getattr(self, field)) < 1:
                raise ValueError(f"{field} must be >= 1, got {getattr(self, field)!r}")
        if self.image_history > self.n_obs_steps:
            raise ValueError(f"image_history ({self.image_history}) must be <= n_obs_steps ({self.n_obs_steps})")
        for width, heads in (("dim", "num_heads"), ("expert_dim", "expert_heads")):
            if getattr(self, width) % getattr(self, heads):
                raise ValueError(f"{width} ({getattr(self, width)}) must be divisible by {heads} "
                                 f"({getattr(self, heads)})")
        if len(self.vision_channels) != 2 or len(self.image_token_grid) != 2 or min(self.image_token_grid) < 1:
            raise ValueError(f"vision_channels and image_token_grid need 2 positive entries, got "
                             f"{self.vision_channels!r}, {self.image_token_grid!r}")
        if self.time_sampling not in TIME_SAMPLINGS:
            raise ValueError(f"time_sampling must be one of {TIME_SAMPLINGS}, got {self.time_sampling!r}")
        if self.execution not in EXECUTIONS:
            raise ValueError(f"execution must be one of {EXECUTIONS}, got {self.execution!r}")
        if int(self.keypoints) < 0:
            raise ValueError(f"keypoints must be >= 0, got {self.keypoints!r}")
        if not 0.0 <= self.word_dropout < 1.0:
            raise ValueError(f"word_dropout must be in [0, 1), got {self.word_dropout!r}")
        for field in ("word_shuffle", "word_insert"):
            if not 0.0 <= getattr(self, field) <= 1.0:
                raise ValueError(f"{field} must be in [0, 1], got {getattr(self, field)!r}")
        if self.ensemble_decay < 0 or self.aux_weight < 0:
            raise ValueError(f"ensemble_decay and aux_weight must be >= 0, got {self.ensemble_decay}, {self.aux_weight}")

    def _check_inputs(self) -> None:
        """Privileged state is never an input: refuse observation_keys naming it (or the aux target)."""
        if self.aux_key is not None and not str(self.aux_key).startswith("observation."):
            raise ValueError(f"aux_key must be an observation.* key or None, got {self.aux_key!r}")
        forbidden = {*PRIVILEGED_KEYS, *([self.aux_key] if self.aux_key else [])}
        bad = sorted(set(self.observation_keys or ()) & forbidden)
        if bad:
            raise ValueError(f"observation_keys must not contain privileged state {bad}: the VLA's inputs are "
                             "images, the instruction and observation.state only")

    @property
    def uses_aux(self) -> bool:
        """Whether the auxiliary head is built and trained."""
        return self.aux_key is not None and self.aux_weight > 0


def _as_dict(value: Any) -> dict[str, Any]:
    """A backbone given as a dataclass (e.g. Hydra's schema instance) or mapping, as plain keyword arguments."""
    if dataclasses.is_dataclass(value):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    return dict(value)
