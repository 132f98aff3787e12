"""The ``hf`` VLA trunk: a transformers vision-language model (SmolVLM / Idefics3 class) over images + text + state.

The model is loaded with ``AutoModelForImageTextToText`` and its tokenizer with ``AutoTokenizer`` from a hub id or a
local directory. Images skip the processor (no PIL/torchvision here, and its tiling is not wanted): each camera frame
is resized to the vision encoder's ``image_size``, normalised with the checkpoint's ``image_mean``/``image_std``
(SigLIP's 0.5/0.5 when it has no ``preprocessor_config.json``), and run through ``vision_model`` and ``connector``.
Token sequence: ``[image tokens | instruction (padding masked) | state]`` as input embeddings of the (optionally
truncated) causal text model; the state token comes last and so attends to everything. The action expert
cross-attends to the text model's last hidden states.

The artifact stores the model's config and tokenizer under ``pretrained_model/backbone/`` and its weights in the
policy's state dict, so a checkpoint rebuilds without the hub (:meth:`HFBackbone.save_assets`).
"""

from __future__ import annotations

import importlib.metadata
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from policies.vla.config import VLAConfig
from policies.vla.tokenizer import check_length

ASSETS_DIR = "backbone"  # inside pretrained_model/: the VLM's config.json and tokenizer files
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def import_transformers() -> Any:
    """``transformers``, checked not to share the name ``kernels`` with this project.

    transformers installs Hugging Face's ``kernels`` distribution, whose top-level package has the name of the
    project's ``kernels/`` (Warp kernels) and hides it from scripts run as ``python scripts/<name>.py``; the
    Makefile removes it (the VLA never loads hub kernels: models load with ``use_kernels=False``).

    Raises:
        ImportError: Hugging Face's ``kernels`` distribution is installed (names the command that removes it).
    """
    try:
        importlib.metadata.version("kernels")
    except importlib.metadata.PackageNotFoundError:
        import transformers

        return transformers
    raise ImportError("Hugging Face's `kernels` distribution (a transformers dependency) is installed and shadows "
                      "this project's kernels/ package: `pip uninstall kernels` (the Makefile does it)")


def _image_stats(path: str) -> tuple[list[float], list[float]]:
    """``image_mean``/``image_std`` from a local ``preprocessor_config.json``, else SigLIP's 0.5/0.5."""
    file = Path(path) / "preprocessor_config.json"
    if file.is_file():
        data = json.loads(file.read_text())
        if "image_mean" in data and "image_std" in data:
            return [float(v) for v in data["image_mean"]], [float(v) for v in data["image_std"]]
    return [0.5, 0.5, 0.5], [0.5, 0.5, 0.5]


class HFTokenizer:
    """A transformers tokenizer with the word tokenizer's interface: fixed-length ids and a validity mask."""

    def __init__(self, tokenizer: Any, max_length: int) -> None:
        self.tokenizer = tokenizer
        self.max_length = int(max_length)
        pad = tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else (tokenizer.eos_token_id or 0))
        self._cache: dict[str, list[int]] = {}

    def ids(self, text: str) -> list[int]:
        """Token ids of one instruction (no special tokens); ``ValueError`` if longer than ``max_length``."""
        cached = self._cache.get(text)
        if cached is None:
            cached = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
            check_length(text, len(cached), self.max_length)
            self._cache[text] = cached
        return cached

    def encode(self, texts: Sequence[str], device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
        """``(ids, mask)`` of shape ``(B, max_length)``: right-padded ids, True on real tokens."""
        ids = torch.full((len(texts), self.max_length), self.pad_id, dtype=torch.long)
        mask = torch.zeros(len(texts), self.max_length, dtype=torch.bool)
        for row, text in enumerate(texts):
            tokens = self.ids(text)
            ids[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
            mask[row, : len(tokens)] = True
        return ids.to(device), mask.to(device)


class HFBackbone(nn.Module):
    """Images ``{key: (B, T, C, H, W)}`` in [0, 1], instructions and state ``(B, S)`` -> ``(B, L, hidden)`` tokens.

    Args:
        config: the policy config (``backbone``: path, num_layers, train_last_n_layers, train_vision, dtype).
        state_dim: size of the flattened proprioception history (0: a learned state token only).
        path: where to read the model from (default ``config.backbone.path``); ``load_weights=False`` builds it
            from its config only (the policy's state dict brings the weights).

    Raises:
        ValueError: the model is not of the vision_model / connector / text_model kind (names its class).
    """

    def __init__(self, config: VLAConfig, state_dim: int, path: str | None = None, load_weights: bool = True) -> None:
        super().__init__()
        transformers = import_transformers()
        source = str(path or config.backbone.path)
        dtype = _DTYPES[config.backbone.dtype]
        if load_weights:
            vlm = transformers.AutoModelForImageTextToText.from_pretrained(source, dtype=dtype, use_kernels=False)
        else:
            vlm_config = transformers.AutoConfig.from_pretrained(source)
            vlm = transformers.AutoModelForImageTextToText.from_config(vlm_config, dtype=dtype)
        inner = getattr(vlm, "model", vlm)
        missing = [n for n in ("vision_model", "connector", "text_model") if not hasattr(inner, n)]
        if missing:
            raise ValueError(f"backbone {source!r} ({type(vlm).__name__}) has no {missing}: the hf backbone takes "
                             "SmolVLM / Idefics3-class models (vision_model -> connector -> text_model)")
        self.vision, self.connector, self.text = inner.vision_model, inner.connector, inner.text_model
        self.vlm_config = vlm.config
        if config.backbone.num_layers is not None:
            self.text.layers = self.text.layers[: config.backbone.num_layers]
            self.text.config.num_hidden_layers = len(self.text.layers)
        self.tokenizer = HFTokenizer(transformers.AutoTokenizer.from_pretrained(source), config.max_length)
        self.hidden_dim = int(self.text.config.hidden_size)
        self.image_size = int(self.vision.config.image_size)
        mean, std = _image_stats(source)
        self.register_buffer("image_mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("image_std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.state_proj = nn.Linear(state_dim, self.hidden_dim) if state_dim else None
        self.state_token = nn.Parameter(torch.zeros(self.hidden_dim))
        self._freeze(config)

    def _freeze(self, config: VLAConfig) -> None:
        """Freeze the VLM except its last ``train_last_n_layers`` text layers (+ final norm) and, if asked, vision."""
        for module in (self.vision, self.connector, self.text):
            module.requires_grad_(False)
        n = config.backbone.train_last_n_layers
        if n:
            for layer in self.text.layers[-n:]:
                layer.requires_grad_(True)
            self.text.norm.requires_grad_(True)
        if config.backbone.train_vision:
            self.vision.requires_grad_(True)
            self.connector.requires_grad_(True)

    def image_tokens(self, images: dict[str, Tensor]) -> Tensor:
        """Vision encoder + connector tokens of every camera frame, ``(B, frames * tokens, hidden)``."""
        parts = []
        for frames in images.values():
            b, t = frames.shape[:2]
            x = frames.flatten(0, 1).float()
            if tuple(x.shape[-2:]) != (self.image_size, self.image_size):
                x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
            x = ((x - self.image_mean) / self.image_std).to(self.text.dtype)
            feats = self.connector(self.vision(pixel_values=x).last_hidden_state)
            parts.append(feats.unflatten(0, (b, t)).flatten(1, 2))
        return torch.cat(parts, dim=1)

    def forward(self, images: dict[str, Tensor], tasks: Sequence[str], state: Tensor | None) -> tuple[Tensor, Tensor]:
        """Last hidden states ``(B, L, hidden)`` (float32) and the validity mask ``(B, L)``; state token last."""
        device = self.state_token.device
        ids, word_mask = self.tokenizer.encode(tasks, device=device)
        longest = int(word_mask.sum(dim=1).max()) if len(tasks) else 0
        ids, word_mask = ids[:, :longest], word_mask[:, :longest]  # padding columns no instruction reaches
        words = self.text.get_input_embeddings()(ids)
        b = words.shape[0]
        state_tok = self.state_token.expand(b, 1, -1)
        if self.state_proj is not None and state is not None:
            state_tok = state_tok + self.state_proj(state)[:, None, :]
        parts = [words, state_tok.to(words.dtype)]
        if images:
            parts.insert(0, self.image_tokens(images).to(words.dtype))
        embeds = torch.cat(parts, dim=1)
        ones = torch.ones(b, embeds.shape[1] - ids.shape[1] - 1, dtype=torch.bool, device=device)
        mask = torch.cat([ones, word_mask, word_mask.new_ones(b, 1)], dim=1)
        out = self.text(inputs_embeds=embeds, attention_mask=mask.long(), use_cache=False)
        return out.last_hidden_state.float(), mask

    def save_assets(self, directory: Path) -> None:
        """Write the VLM's config and tokenizer to ``directory/backbone`` (the weights live in the state dict)."""
        dst = Path(directory) / ASSETS_DIR
        dst.mkdir(parents=True, exist_ok=True)
        config = self.vlm_config
        config.save_pretrained(dst)
        self.tokenizer.tokenizer.save_pretrained(dst)
        mean, std = self.image_mean.flatten().tolist(), self.image_std.flatten().tolist()
        (dst / "preprocessor_config.json").write_text(json.dumps({"image_mean": mean, "image_std": std}))
