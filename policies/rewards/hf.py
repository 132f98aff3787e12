"""TOPReward's ``hf`` backend: a transformers Qwen2-VL / Qwen2.5-VL / Qwen3-VL model scores the final ``True``.

The sequence for a prefix of ``n`` frames is, with no chat template and the user turn left open::

    [<|vision_start|> <|image_pad|> x m <|vision_end|>] x n   + tokens(PROMPT)   (the last token: ``True``)

**Prefix-stable.** Each frame enters as its own image (``image_grid_thw`` row ``[1, h, w]``), so frame ``i``'s
``m + 2`` tokens, its vision-tower output (the tower attends within one image only) and its M-RoPE positions
(``get_rope_index`` walks the sequence left to right: a block's positions depend only on the blocks before it) are
the same in every prefix that holds it. Hence the token sequence of prefix ``n_k`` (without the prompt) is a strict
prefix of prefix ``n_{k+1}``'s, and so are its keys and values in every layer (causal attention). The prompt's text
positions continue from the prefix's max position + 1, which is ``get_rope_index``'s rule for text after an image
block. (A video input, by contrast, merges frame pairs into one temporal patch: not prefix-stable.) The constructor
checks this on the tokenizer: two frame blocks and the prompt tokenised as one string give the concatenation of
their ids.

**Cached path** (default): the frames of the longest prefix go through the model once (vision tower and language
model, one call) into a ``DynamicCache``, with the M-RoPE positions of ``get_rope_index`` over the full longest
sequence. Then the K prompts (without ``True``) run in one more call on top of that cache, side by side: a 4D
additive mask lets prompt ``k`` see the cache only up to the end of prefix ``k``'s frames and, causally, its own
tokens only, and its positions start at prefix ``k``'s max position + 1. That is the cache cropped to each prefix,
without copying or cropping it. A trajectory costs one forward over its longest prefix plus K prompt lengths.
**Naive path** (reference): one full forward of the standard model call per prefix.

Frames are patchified here exactly as ``Qwen2VLImageProcessor`` lays them out (its ``preprocessor_config.json`` read
for patch/merge sizes, pixel budget, mean/std), so neither PIL nor torchvision is needed; a frame whose size the
pixel budget changes is resized with torch's antialiased bicubic (close to, not bit-equal to, PIL's).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from policies.rewards.protocol import PROMPT, score_batch_by_loop
from policies.rewards.topreward import check_instruction, check_video

__all__ = ["HFScorer", "VisionSpec", "patchify"]

_OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
_OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class VisionSpec:
    """What ``Qwen2VLImageProcessor`` does to a frame: patch/merge sizes, pixel budget, rescale and normalisation."""

    patch_size: int = 14
    temporal_patch_size: int = 2
    merge_size: int = 2
    min_pixels: int = 56 * 56
    max_pixels: int = 28 * 28 * 1280
    mean: tuple[float, ...] = _OPENAI_CLIP_MEAN
    std: tuple[float, ...] = _OPENAI_CLIP_STD
    rescale_factor: float = 1 / 255

    @classmethod
    def from_dict(cls, cfg: dict) -> VisionSpec:
        """From a ``preprocessor_config.json`` (``size: {shortest_edge, longest_edge}`` or ``min/max_pixels``)."""
        size = cfg.get("size") or {}
        return cls(patch_size=int(cfg.get("patch_size", 14)), temporal_patch_size=int(cfg.get("temporal_patch_size", 2)),
                   merge_size=int(cfg.get("merge_size", 2)),
                   min_pixels=int(size.get("shortest_edge", cfg.get("min_pixels", 56 * 56))),
                   max_pixels=int(size.get("longest_edge", cfg.get("max_pixels", 28 * 28 * 1280))),
                   mean=tuple(cfg.get("image_mean", _OPENAI_CLIP_MEAN)), std=tuple(cfg.get("image_std", _OPENAI_CLIP_STD)),
                   rescale_factor=float(cfg.get("rescale_factor", 1 / 255)))

    def resized(self, height: int, width: int) -> tuple[int, int]:
        """Qwen's ``smart_resize``: sides multiples of patch*merge, area within ``[min_pixels, max_pixels]``."""
        f = self.patch_size * self.merge_size
        h, w = max(f, round(height / f) * f), max(f, round(width / f) * f)
        if h * w > self.max_pixels:
            beta = math.sqrt(height * width / self.max_pixels)
            h, w = max(f, math.floor(height / beta / f) * f), max(f, math.floor(width / beta / f) * f)
        elif h * w < self.min_pixels:
            beta = math.sqrt(self.min_pixels / (height * width))
            h, w = math.ceil(height * beta / f) * f, math.ceil(width * beta / f) * f
        return h, w


def patchify(frames: np.ndarray, spec: VisionSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """``(pixel_values (N*gh*gw, 3*tp*p*p) float32, image_grid_thw (N, 3))`` of ``N`` frames, each its own image,
    in ``Qwen2VLImageProcessor``'s layout (each frame repeated over the temporal patch)."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()  # (N, 3, H, W), 0..255
    h, w = spec.resized(x.shape[2], x.shape[3])
    if (h, w) != tuple(x.shape[2:]):
        x = F.interpolate(x, size=(h, w), mode="bicubic", antialias=True, align_corners=False).clamp(0, 255)
    mean, std = torch.tensor(spec.mean).view(1, 3, 1, 1), torch.tensor(spec.std).view(1, 3, 1, 1)
    x = (x * spec.rescale_factor - mean) / std
    n, c, p, m, tp = x.shape[0], x.shape[1], spec.patch_size, spec.merge_size, spec.temporal_patch_size
    gh, gw = h // p, w // p
    x = x.reshape(n, c, gh // m, m, p, gw // m, m, p).permute(0, 2, 5, 3, 6, 1, 4, 7)  # (n, gh/m, gw/m, m, m, c, p, p)
    x = x.unsqueeze(6).expand(*x.shape[:6], tp, p, p)  # the frame repeated over the temporal patch
    grid = torch.tensor([[1, gh, gw]] * n, dtype=torch.long)
    return x.reshape(n * gh * gw, c * tp * p * p).contiguous(), grid


def _load(path: str, device: str, dtype: str):
    """``(tokenizer, model, vision spec)`` of ``path`` (hub id or local dir). Raises: ValueError naming the path."""
    import transformers

    if path.startswith((".", "/", "~")) and not Path(path).expanduser().is_dir():
        raise ValueError(f"reward model path {path!r} does not exist")
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(path)
        model = transformers.AutoModelForImageTextToText.from_pretrained(path, dtype=getattr(torch, dtype),
                                                                          use_kernels=False)
        spec_file = transformers.utils.cached_file(path, "preprocessor_config.json")
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot load an image-text-to-text model from {path!r}: {err}") from err
    return tokenizer, model.to(device).eval(), VisionSpec.from_dict(json.loads(Path(spec_file).read_text()))


class HFScorer:
    """:class:`~policies.rewards.protocol.TrueScorer` of a transformers Qwen-VL-class model (hub id or local dir).

    ``dtype``: ``float32`` or ``bfloat16`` (bf16 on GPU); log-softmax is taken in float32. ``cached``: the KV-cache
    path (default) or the naive full-forward-per-prefix reference.

    Raises (at construction): ValueError: missing path (named); the tokenizer's ``True`` (after the prompt's space)
    is not a single token; the tokenizer changes the prompt on a round trip or adds template tokens around it;
    frame blocks and prompt do not tokenise independently (not prefix-stable).
    """

    def __init__(self, path: str, device: str = "cpu", dtype: str = "float32", cached: bool = True) -> None:
        if dtype not in ("float32", "bfloat16"):
            raise ValueError(f"dtype must be float32 or bfloat16, got {dtype!r}")
        self.path, self.device, self.cached = str(path), torch.device(device), cached
        self.tokenizer, self.model, self.spec = _load(self.path, device, dtype)
        cfg = self.model.config
        self.image_id, self.start_id, self.end_id = cfg.image_token_id, cfg.vision_start_token_id, cfg.vision_end_token_id
        self.true_id = self._prompt_ids("do the task")[-1]
        self._check_prefix_stable()

    # ------------------------------------------------------------------------------------------- tokenisation
    @lru_cache(maxsize=256)  # noqa: B019  (one scorer lives as long as its model; instructions repeat)
    def _prompt_ids(self, instruction: str) -> tuple[int, ...]:
        """Token ids of the prompt for ``instruction``, checked: exact round trip, no template, single ``True``."""
        text = PROMPT.format(instruction=instruction)
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        decoded = self.tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
        if decoded != text:
            raise ValueError(f"the tokenizer of {self.path!r} changes the prompt on a round trip (decoded "
                             f"{decoded[-80:]!r}); TOPReward needs the exact prompt text")
        if self.tokenizer(text)["input_ids"] != ids:
            raise ValueError(f"the tokenizer of {self.path!r} adds template/special tokens around the prompt; "
                             "TOPReward scores the raw prompt with no chat template")
        head = self.tokenizer(text[: -len("True")].rstrip(" "), add_special_tokens=False)["input_ids"]
        if head != ids[:-1] or ids[-1] == self.tokenizer.unk_token_id:
            raise ValueError(f"the vocabulary of {self.path!r} has no single token for ' True' after the prompt "
                             f"(tokenised as {self.tokenizer.convert_ids_to_tokens(ids[len(head):])})")
        return tuple(ids)

    def _block(self, tokens_per_frame: int) -> list[int]:
        return [self.start_id] + [self.image_id] * tokens_per_frame + [self.end_id]

    def _check_prefix_stable(self) -> None:
        vocab = self.tokenizer.convert_ids_to_tokens([self.start_id, self.image_id, self.end_id])
        text = "".join(vocab) * 2 + PROMPT.format(instruction="do the task")
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if ids != self._block(1) * 2 + list(self._prompt_ids("do the task")):
            raise ValueError(f"the tokenizer of {self.path!r} does not tokenise frame blocks and the prompt "
                             "independently: the prefixes would not be prefix-stable")

    def _sequence(self, n_frames: int, tokens_per_frame: int, prompt: Sequence[int]) -> torch.Tensor:
        ids = self._block(tokens_per_frame) * n_frames + list(prompt)
        return torch.tensor([ids], dtype=torch.long, device=self.device)

    # ------------------------------------------------------------------------------------------------ scoring
    def _inputs(self, frames: np.ndarray, instruction: str, lengths: Sequence[int]):
        frames, instruction = check_video(frames), check_instruction(instruction)
        lengths = [int(n) for n in lengths]
        if not lengths or lengths[0] < 1 or lengths[-1] > len(frames) or np.any(np.diff(lengths) <= 0):
            raise ValueError(f"prefix_lengths must be increasing within 1..{len(frames)}, got {lengths}")
        pixels, grid = patchify(frames[: lengths[-1]], self.spec)
        return pixels.to(self.device), grid.to(self.device), self._prompt_ids(instruction), lengths

    @torch.inference_mode()
    def naive_log_probs(self, frames: np.ndarray, instruction: str, prefix_lengths: Sequence[int]) -> np.ndarray:
        """Reference: per prefix, one full standard forward over its frames + prompt; log-softmax before ``True``."""
        pixels, grid, prompt, lengths = self._inputs(frames, instruction, prefix_lengths)
        per_frame = int(grid[0].prod())
        m = per_frame // self.spec.merge_size**2
        out = []
        for n in lengths:
            ids = self._sequence(n, m, prompt)
            logits = self.model(input_ids=ids, pixel_values=pixels[: n * per_frame], image_grid_thw=grid[:n],
                                mm_token_type_ids=(ids == self.image_id).int(), use_cache=False).logits
            out.append(float(torch.log_softmax(logits[0, -2].float(), dim=-1)[self.true_id]))
        return np.asarray(out, dtype=np.float64)

    def _suffix_mask(self, ends: Sequence[int], suffix_len: int, dtype: torch.dtype) -> torch.Tensor:
        """Additive 4D mask ``(1, 1, K*S, L + K*S)``: suffix ``k``'s ``S`` tokens see the cache up to ``ends[k]``
        (the vision part of its prefix) and, causally, their own suffix only: K independent prefixes in one pass."""
        n_cache, n_query = ends[-1], len(ends) * suffix_len
        ends_q = torch.tensor(ends, device=self.device).repeat_interleave(suffix_len)  # (K*S,)
        which = torch.arange(n_query, device=self.device) // suffix_len
        keys = torch.arange(n_cache, device=self.device)
        sees_cache = keys[None, :] < ends_q[:, None]
        q = torch.arange(n_query, device=self.device)
        sees_suffix = (which[:, None] == which[None, :]) & (q[None, :] <= q[:, None])
        allowed = torch.cat([sees_cache, sees_suffix], dim=1)
        mask = torch.zeros(allowed.shape, dtype=dtype, device=self.device).masked_fill(~allowed, torch.finfo(dtype).min)
        return mask[None, None]

    @torch.inference_mode()
    def cached_log_probs(self, frames: np.ndarray, instruction: str, prefix_lengths: Sequence[int]) -> np.ndarray:
        """The KV-cache path (see the module docstring); equals :meth:`naive_log_probs` to float tolerance."""
        from transformers import DynamicCache

        pixels, grid, prompt, lengths = self._inputs(frames, instruction, prefix_lengths)
        block = int(grid[0].prod()) // self.spec.merge_size**2 + 2
        ids = self._sequence(lengths[-1], block - 2, prompt)
        n_vision = lengths[-1] * block
        positions, _ = self.model.model.get_rope_index(ids, mm_token_type_ids=(ids == self.image_id).int(),
                                                       image_grid_thw=grid)
        cache = DynamicCache(config=self.model.config.get_text_config())
        self.model.model(input_ids=ids[:, :n_vision], pixel_values=pixels, image_grid_thw=grid,
                         position_ids=positions[:, :, :n_vision], cache=cache, use_cache=True)
        suffix = ids[:, n_vision:-1]  # the prompt without its final True, once per prefix
        ends = [n * block for n in lengths]
        starts = torch.stack([positions[:, :, :end].max() + 1 for end in ends])  # text continues at max + 1
        steps = torch.arange(suffix.shape[1], device=self.device)
        suffix_positions = (starts[:, None] + steps[None, :]).reshape(1, 1, -1).expand(3, 1, -1)
        hidden = self.model.model(input_ids=suffix.repeat(1, len(lengths)), position_ids=suffix_positions,
                                  attention_mask=self._suffix_mask(ends, suffix.shape[1], self.model.dtype),
                                  cache=cache, use_cache=True).last_hidden_state
        last = hidden[0, suffix.shape[1] - 1:: suffix.shape[1]]  # (K, hidden): each suffix's last position
        logits = self.model.get_output_embeddings()(last).float()
        return torch.log_softmax(logits, dim=-1)[:, self.true_id].double().cpu().numpy()

    @torch.inference_mode()
    def generate(self, frames: np.ndarray, text: str, max_new_tokens: int = 256) -> str:
        """Greedy continuation of ``[frame blocks of frames] + tokens(text)`` (no chat template), decoded: what the
        GVL baseline reads its per-frame percentages from.

        Raises: ValueError: bad frames.
        """
        frames = check_video(frames)
        pixels, grid = patchify(frames, self.spec)
        m = int(grid[0].prod()) // self.spec.merge_size**2
        ids = self._sequence(len(frames), m, self.tokenizer(text, add_special_tokens=False)["input_ids"])
        out = self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=pixels.to(self.device),
                                  image_grid_thw=grid.to(self.device), mm_token_type_ids=(ids == self.image_id).int(),
                                  max_new_tokens=max_new_tokens, do_sample=False)
        return self.tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)

    def true_log_probs(self, frames: np.ndarray, instruction: str, prefix_lengths: Sequence[int]) -> np.ndarray:
        """``(K,)`` log p(True) per prefix length: the cached path, or the naive one when ``cached=False``.

        Raises: ValueError: empty video, missing instruction, mixed sizes / not uint8, bad prefix lengths.
        """
        score = self.cached_log_probs if self.cached else self.naive_log_probs
        return score(frames, instruction, prefix_lengths)

    def true_log_probs_batch(self, videos: Sequence[np.ndarray], instructions: Sequence[str],
                             prefix_lengths: Sequence[Sequence[int]]) -> list[np.ndarray]:
        """:meth:`true_log_probs` per video (one KV cache per trajectory)."""
        return score_batch_by_loop(self, videos, instructions, prefix_lengths)
