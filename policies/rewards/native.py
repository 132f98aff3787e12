"""The ``native`` TOPReward backend: a small vision-language model of our own, trained on twin rollouts.

Layout of one scored video (``T`` frames at 2 FPS, ``K`` prefixes, ``L`` text tokens)::

    [f0 f0' f1 f1' ... f(T-1) f(T-1)'] [text copy 1: "the above video ... the answer is"] ... [text copy K]
     frame tokens (P per frame)         attends to frames < n_1 and to its own earlier words     (frames < n_K)

A per-frame conv encoder (:class:`~policies.common.vision.FeatureMapEncoder`, GroupNorm; 64x64 RGB -> 16x16 map ->
spatial-softmax keypoints + mean-pooled features -> ``P`` tokens; with ``film``, its stem and block are FiLM-modulated
by the mean embedding of the instruction's words) and a word embedding feed one causal transformer
decoder with rotary positions: a frame token sits at ``f * P + p``, text token ``j`` of the copy for prefix ``n_k`` at
``n_k * P + j``, exactly where it would sit if that prefix were the whole video. The output at the last text position
(the word before the final "True") is a distribution over the vocabulary; the reward is its log-probability of
"True". Frames are encoded once per video and all K prefixes are scored in one forward (a per-copy attention mask),
and because attention is causal a prefix's score never depends on later frames (prefix-stable).

Compute (the default :class:`NativeVLMConfig`, 0.90 M parameters; FLOPs = 2 x multiply-adds, forward, per video;
:meth:`NativeVLM.forward_flops` computes them): the encoder costs ~8.2 MFLOP a 64x64 frame (stem 16 ch at 32x32:
0.9 M; one basic block 16->32 ch at 16x16: 7.3 M); the decoder (d=128, 4 layers) ~0.39 MFLOP per token per layer
plus attention. A 40-frame video (20 s, the longest episode) with the K=4 prefixes sampled in training and the
32-word prompt: ~0.71 GFLOP forward, ~2.1 GFLOP with backward; scoring K=15 prefixes: ~1.4 GFLOP (measured ~50 ms on
one core). At the ~50-100 GFLOP/s of two cores (DESIGN.md section 4b) and ~25 frames per rollout on average, a
15-minute run trains on ~30k-60k rollouts in theory; measured with another job on both cores, a step of 16 rollouts
(~24 frames each, 4 prefixes) takes 2.2 s, so conf/train_reward.yaml runs 1200 steps of 12.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from policies.common.vision import FeatureMapEncoder, SpatialSoftmax
from policies.datasets.atomic import atomic_path, atomic_write_json
from policies.rewards.protocol import PROMPT
from policies.vla.tokenizer import TOKENIZER_FILE, UNK_ID, WordTokenizer, split_words

TRUE_WORD, FALSE_WORD = "true", "false"  # the word tokenizer lower-cases: "True" is the token "true"
PROMPT_HEAD = PROMPT[: -len("True")]  # the text the model reads; the final "True" is what it scores


@dataclass
class NativeVLMConfig:
    """Architecture of :class:`NativeVLM` (sizes in pixels, tokens and channels)."""

    image_size: int = 64  # frames are resized to image_size x image_size RGB
    channels: tuple[int, int] = (16, 32)  # conv encoder widths: stem (at 1/2 resolution), block (at 1/4)
    num_keypoints: int = 16  # spatial-softmax keypoints per frame (where things are)
    tokens_per_frame: int = 2  # P: decoder tokens per frame
    d_model: int = 128  # decoder width
    n_layers: int = 4  # decoder blocks
    n_heads: int = 4  # attention heads (d_model must divide by it; head width even for rotary positions)
    mlp_ratio: int = 4  # MLP hidden width / d_model
    max_frames: int = 64  # longest video (frames at 2 FPS: 32 s)
    max_text_tokens: int = 64  # longest prompt text (words) before the final "True"
    dropout: float = 0.0  # in attention outputs and MLPs, training only
    film: bool = True  # the frame encoder conditioned on the instruction (FiLM after its stem and block; RT-1), so
    # each frame is encoded for the pad the instruction names, as the VLA's encoder is

    def __post_init__(self) -> None:
        self.channels = tuple(int(c) for c in self.channels)
        positive = ("image_size", "num_keypoints", "tokens_per_frame", "d_model", "n_layers", "n_heads", "mlp_ratio",
                    "max_frames", "max_text_tokens")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"reward_model.{name} must be >= 1, got {getattr(self, name)}")
        if len(self.channels) != 2 or min(self.channels) < 1:
            raise ValueError(f"reward_model.channels must be two positive widths, got {self.channels}")
        if self.image_size < 16:
            raise ValueError(f"reward_model.image_size must be >= 16 (the encoder downsamples 4x), got {self.image_size}")
        if self.d_model % self.n_heads or (self.d_model // self.n_heads) % 2:
            raise ValueError(f"reward_model.d_model ({self.d_model}) must be n_heads ({self.n_heads}) x an even head width")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"reward_model.dropout must be in [0, 1), got {self.dropout}")


def build_tokenizer(instructions: Iterable[str], max_length: int = 64) -> WordTokenizer:
    """A word tokenizer whose vocabulary holds the prompt's words, the instructions' words, "true" and "false"."""
    words = split_words(PROMPT_HEAD) + [w for text in instructions for w in split_words(text)]
    return WordTokenizer(sorted({*words, TRUE_WORD, FALSE_WORD}), max_length)


def answer_ids(tokenizer: WordTokenizer) -> tuple[int, int]:
    """The ids of "True" and "False"; ``ValueError`` when the vocabulary lacks either as one token."""
    ids = tokenizer.ids(f"{TRUE_WORD} {FALSE_WORD}")
    if len(ids) != 2 or UNK_ID in ids:
        raise ValueError("the tokenizer's vocabulary has no single 'True' and 'False' token: build it with "
                         "policies.rewards.native.build_tokenizer")
    return ids[0], ids[1]


def prompt_ids(tokenizer: WordTokenizer, instruction: str) -> list[int]:
    """Token ids of PROMPT's text before its final "True" for ``instruction`` (unknown words -> <unk>).

    Raises:
        ValueError: an empty instruction, or a prompt longer than the tokenizer's ``max_length``.
    """
    if not isinstance(instruction, str) or not split_words(instruction):
        raise ValueError(f"instruction is empty (no words): {instruction!r}")
    return tokenizer.ids(PROMPT_HEAD.format(instruction=instruction))


def _rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotary position embedding of ``(B, H, S, hd)`` with ``cos``/``sin`` ``(B, 1, S, hd/2)``."""
    x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)
    return torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).flatten(-2)


class DecoderBlock(nn.Module):
    """Pre-norm transformer block: masked self-attention with rotary positions, then a GELU MLP."""

    def __init__(self, d: int, n_heads: int, mlp_ratio: int, dropout: float) -> None:
        super().__init__()
        self.n_heads, self.dropout = n_heads, dropout
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.out = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.mlp = nn.Sequential(nn.Linear(d, mlp_ratio * d), nn.GELU(), nn.Linear(mlp_ratio * d, d), nn.Dropout(dropout))

    def forward(self, x: Tensor, mask: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        """``x`` ``(B, S, d)``; ``mask`` bool ``(B, 1, S, S)``, True where a query may attend to a key."""
        q, k, v = self.qkv(self.norm1(x)).unflatten(-1, (3, self.n_heads, -1)).permute(2, 0, 3, 1, 4)
        q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
        p = self.dropout if self.training else 0.0
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        x = x + F.dropout(self.out(attended.transpose(1, 2).flatten(2)), p, self.training)
        return x + self.mlp(self.norm2(x))


class NativeVLM(nn.Module):
    """Frames + prompt words -> next-word logits at the end of each prefix's text copy (see module doc).

    Args:
        config: the architecture.
        vocab_size: the word tokenizer's vocabulary size (ids 0 <pad>, 1 <unk>, ...).
    """

    def __init__(self, config: NativeVLMConfig, vocab_size: int) -> None:
        super().__init__()
        if vocab_size < 4:
            raise ValueError(f"vocab_size must be >= 4 (<pad>, <unk>, true, false), got {vocab_size}")
        self.config, self.vocab_size = config, int(vocab_size)
        c0, c1 = config.channels
        d, p = config.d_model, config.tokens_per_frame
        self.encoder = FeatureMapEncoder(3, (c0, c1), full_resolution_block=False)
        self.keypoints = SpatialSoftmax(c1, config.num_keypoints)
        self.frame_proj = nn.Sequential(nn.Linear(2 * config.num_keypoints + c1, 2 * d), nn.GELU(),
                                        nn.Linear(2 * d, p * d))
        self.slot_embed = nn.Parameter(torch.zeros(p, d))  # which of the frame's P tokens
        self.word_embed = nn.Embedding(self.vocab_size, d)
        self.film_sizes = (2 * c0, 2 * c1)
        self.film = nn.Linear(d, sum(self.film_sizes)) if config.film else None
        if self.film is not None:
            nn.init.zeros_(self.film.weight)  # starts as the unconditioned encoder
            nn.init.zeros_(self.film.bias)
        self.blocks = nn.ModuleList(DecoderBlock(d, config.n_heads, config.mlp_ratio, config.dropout)
                                    for _ in range(config.n_layers))
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, self.vocab_size)
        half = d // config.n_heads // 2
        self.register_buffer("inv_freq", 1.0 / (10000.0 ** (torch.arange(half, dtype=torch.float32) / half)),
                             persistent=False)

    def instruction_film(self, instruction_ids: Tensor) -> tuple[Tensor, Tensor] | None:
        """FiLM parameters ``(B, 2 c0)``, ``(B, 2 c1)`` from the mean embedding of each row's instruction words
        (long ``(B, W)``, 0-padded); ``None`` without ``film``."""
        if self.film is None:
            return None
        mask = (instruction_ids != 0).float()[..., None]
        pooled = (self.word_embed(instruction_ids) * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return tuple(self.film(pooled).split(self.film_sizes, dim=-1))

    def encode_frames(self, images: Tensor, film: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """``(N, 3, H, W)`` floats in [0, 1] (H = W = image_size) -> frame tokens ``(N, P, d)``; ``film``: per-frame
        parameters (:meth:`instruction_film` repeated per frame) or ``None``."""
        fmap = self.encoder.feature_map(images, film)
        features = torch.cat([self.keypoints(fmap), fmap.mean(dim=(2, 3))], dim=1)
        tokens = self.frame_proj(features).unflatten(1, (self.config.tokens_per_frame, self.config.d_model))
        return tokens + self.slot_embed

    def forward(self, frame_tokens: Tensor, n_frames: Tensor, text_ids: Tensor, text_len: Tensor,
                prefix_lengths: Tensor) -> Tensor:
        """Next-word logits ``(B, K, vocab)`` at the last text token of each prefix's copy.

        Args:
            frame_tokens: ``(B, F, P, d)`` from :meth:`encode_frames`, padded past each video's ``n_frames``.
            n_frames: long ``(B,)`` frames per video (>= 1).
            text_ids: long ``(B, L)`` prompt words, padded past ``text_len`` (>= 1).
            text_len: long ``(B,)``.
            prefix_lengths: long ``(B, K)`` in 1..n_frames.
        """
        b, f, p, d = frame_tokens.shape
        k, length = prefix_lengths.shape[1], text_ids.shape[1]
        text = (self.word_embed(text_ids)[:, None] * math.sqrt(d)).expand(b, k, length, d)
        x = torch.cat([frame_tokens.flatten(1, 2), text.flatten(1, 2)], dim=1)
        mask, positions = _layout(f, p, n_frames, prefix_lengths, length)
        angles = positions[:, None, :, None].float() * self.inv_freq
        cos, sin = angles.cos(), angles.sin()
        for block in self.blocks:
            x = block(x, mask, cos, sin)
        last = f * p + torch.arange(k, device=x.device) * length + (text_len[:, None] - 1)  # (B, K)
        return self.head(self.norm(x.gather(1, last[..., None].expand(b, k, d))))

    def forward_flops(self, n_frames: int, n_prefixes: int, text_len: int) -> int:
        """Approximate forward FLOPs (2 x multiply-adds) for one video: encoder, projections, attention, head."""
        cfg = self.config
        s, (c0, c1) = cfg.image_size, cfg.channels
        h0, h1 = s // 2, s // 4
        encoder = h0 * h0 * c0 * 27 + h1 * h1 * c1 * (9 * c0 + 9 * c1 + c0)
        d, tokens = cfg.d_model, n_frames * cfg.tokens_per_frame + n_prefixes * text_len
        per_token = (4 + 2 * cfg.mlp_ratio) * d * d
        attention = 2 * tokens * (n_frames * cfg.tokens_per_frame + text_len) * d  # scores + values, upper bound
        head = n_prefixes * d * self.vocab_size
        return 2 * (n_frames * encoder + cfg.n_layers * (tokens * per_token + attention) + head)


def _layout(f: int, p: int, n_frames: Tensor, prefix_lengths: Tensor, length: int) -> tuple[Tensor, Tensor]:
    """Attention mask ``(B, 1, S, S)`` and rotary positions ``(B, S)`` of ``[F*P frame tokens, K copies of L words]``.

    Frame tokens attend causally to valid frame tokens; copy ``k``'s words attend to the frames before
    ``prefix_lengths[:, k]`` and to the copy's own words up to themselves.
    """
    device, k = prefix_lengths.device, prefix_lengths.shape[1]
    slot = torch.arange(f * p + k * length, device=device)
    is_text = slot >= f * p
    frame = torch.where(is_text, -1, slot // p)  # frame index of frame tokens
    copy = torch.where(is_text, (slot - f * p) // length, -1)  # text copy of text tokens
    word = torch.where(is_text, (slot - f * p) % length, -1)
    valid_key = ~is_text[None] & (frame[None] < n_frames[:, None])  # (B, S)
    frames_causal = ~is_text[:, None] & (slot[None, :] <= slot[:, None])  # frame query -> earlier frame keys
    own_words = is_text[:, None] & is_text[None, :] & (copy[:, None] == copy[None, :]) & (word[None, :] <= word[:, None])
    prefix = prefix_lengths.gather(1, copy.clamp(min=0)[None].expand(len(n_frames), -1))  # (B, S): the query's prefix
    seen = is_text[None, :, None] & (frame[None, None, :] < prefix[:, :, None])  # text query -> frames of its prefix
    mask = (frames_causal[None] & valid_key[:, None]) | (seen & valid_key[:, None]) | own_words[None]
    positions = torch.where(is_text[None], prefix * p + word[None], slot[None])
    return mask[:, None], positions


def check_frames(frames: np.ndarray | Sequence[np.ndarray], max_frames: int) -> np.ndarray:
    """``frames`` as one ``(T, H, W, 3)`` uint8 array.

    Raises:
        ValueError: an empty video, frames of mixed sizes, not RGB uint8, or more than ``max_frames`` frames.
    """
    if len(frames) == 0:
        raise ValueError("empty video: frames must hold at least one frame")
    if not isinstance(frames, np.ndarray):
        shapes = {np.shape(frame) for frame in frames}
        if len(shapes) > 1:
            raise ValueError(f"frames of mixed sizes in one video: {sorted(shapes)}")
        frames = np.stack([np.asarray(frame) for frame in frames])
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be (T, H, W, 3) uint8 RGB, got shape {frames.shape} dtype {frames.dtype}")
    if len(frames) > max_frames:
        raise ValueError(f"video has {len(frames)} frames, more than the model's max_frames {max_frames}")
    return frames


def check_prefixes(prefix_lengths: Sequence[int], n_frames: int) -> np.ndarray:
    """``prefix_lengths`` as a long array; ``ValueError`` unless non-empty, strictly increasing and in 1..n_frames."""
    lengths = np.asarray(prefix_lengths, dtype=np.int64).reshape(-1)
    if lengths.size == 0 or lengths[0] < 1 or lengths[-1] > n_frames or np.any(np.diff(lengths) <= 0):
        raise ValueError(f"prefix_lengths must be increasing in 1..{n_frames} (the video's frames), got "
                         f"{lengths.tolist()}")
    return lengths


def images_to_tensor(frames: np.ndarray, size: int, device: torch.device | str = "cpu") -> Tensor:
    """``(T, H, W, 3)`` uint8 -> ``(T, 3, size, size)`` float in [0, 1] (area-resized when H or W differs)."""
    images = torch.from_numpy(np.ascontiguousarray(frames)).to(device).permute(0, 3, 1, 2).float() / 255.0
    if images.shape[-2:] != (size, size):
        images = F.interpolate(images, size=(size, size), mode="area")
    return images


def config_dict(config: NativeVLMConfig) -> dict:
    """The config as a JSON-ready dict (tuples as lists)."""
    return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(config).items()}


@dataclass
class NativeBatch:
    """Model inputs for a batch of videos: uint8 frames per video, prompt ids, prefix lengths (see :func:`make_batch`)."""

    frames: list[np.ndarray]  # per video (T_i, H, W, 3) uint8
    instruction_ids: Tensor  # long (B, W): the instruction's words alone, padded with 0 (the encoder's FiLM input)
    text_ids: Tensor  # long (B, L), padded with 0
    text_len: Tensor  # long (B,)
    prefix_lengths: Tensor  # long (B, K), each row increasing; short rows repeat their last length
    n_prefixes: list[int]  # K_i: the real prefixes of each row


def make_batch(tokenizer: WordTokenizer, videos: Sequence[np.ndarray | Sequence[np.ndarray]],
               instructions: Sequence[str], prefix_lengths: Sequence[Sequence[int]], max_frames: int) -> NativeBatch:
    """Checks and packs videos, instructions and prefix lengths (one list per video) for :func:`true_logits`.

    Raises:
        ValueError: different numbers of videos, instructions and prefix lists; an empty video, frames of mixed
            sizes, an empty instruction, or bad prefix lengths (each message names what is wrong).
    """
    if not len(videos) == len(instructions) == len(prefix_lengths) or not videos:
        raise ValueError(f"need one instruction and one prefix list per video, got {len(videos)} videos, "
                         f"{len(instructions)} instructions, {len(prefix_lengths)} prefix lists")
    frames = [check_frames(video, max_frames) for video in videos]
    lengths = [check_prefixes(p, len(video)) for p, video in zip(prefix_lengths, frames)]
    ids = [prompt_ids(tokenizer, text) for text in instructions]
    k = max(map(len, lengths))
    padded = [np.concatenate([p, np.full(k - len(p), p[-1])]) for p in lengths]
    return NativeBatch(frames, _pad_ids([tokenizer.ids(text) for text in instructions]), _pad_ids(ids),
                       torch.tensor([len(i) for i in ids]), torch.from_numpy(np.stack(padded)), [len(p) for p in lengths])


def _pad_ids(rows: Sequence[Sequence[int]]) -> Tensor:
    """Rows of token ids as one long ``(B, max length)`` tensor padded with 0."""
    out = torch.zeros(len(rows), max(map(len, rows)), dtype=torch.long)
    for row, ids in enumerate(rows):
        out[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    return out


def true_logits(model: NativeVLM, batch: NativeBatch) -> Tensor:
    """The model's next-word logits ``(B, K, vocab)`` at the end of each prefix's prompt (frames encoded once)."""
    device = next(model.parameters()).device
    images = images_to_tensor(np.concatenate(batch.frames), model.config.image_size, device)
    n_frames = torch.tensor([len(f) for f in batch.frames], device=device)
    film = model.instruction_film(batch.instruction_ids.to(device))
    per_frame = None if film is None else tuple(f.repeat_interleave(n_frames, dim=0) for f in film)
    tokens = model.encode_frames(images, per_frame).split([len(f) for f in batch.frames])
    frame_tokens = nn.utils.rnn.pad_sequence(list(tokens), batch_first=True)
    return model(frame_tokens, n_frames, batch.text_ids.to(device), batch.text_len.to(device),
                 batch.prefix_lengths.to(device))


class NativeScorer:
    """:class:`~policies.rewards.protocol.TrueScorer` of a :class:`NativeVLM`: log-softmax at the word before the
    final "True", read at the id of "True" (float64, one value per prefix).

    Raises:
        ValueError: the tokenizer has no single "True"/"False" token, or its vocabulary does not match the model.
    """

    def __init__(self, model: NativeVLM, tokenizer: WordTokenizer) -> None:
        if len(tokenizer) != model.vocab_size:
            raise ValueError(f"tokenizer has {len(tokenizer)} words, the model's vocab_size is {model.vocab_size}")
        self.model, self.tokenizer = model, tokenizer
        self.true_id, self.false_id = answer_ids(tokenizer)

    def true_log_probs(self, frames: np.ndarray, instruction: str, prefix_lengths: Sequence[int]) -> np.ndarray:
        """``(K,)`` log P("True") after ``frames[:n_k]`` and the prompt (see the protocol)."""
        return self.true_log_probs_batch([frames], [instruction], [prefix_lengths])[0]

    def true_log_probs_batch(self, videos: Sequence[np.ndarray], instructions: Sequence[str],
                             prefix_lengths: Sequence[Sequence[int]]) -> list[np.ndarray]:
        """:meth:`true_log_probs` of each video, in one forward."""
        batch = make_batch(self.tokenizer, videos, instructions, prefix_lengths, self.model.config.max_frames)
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                log_probs = true_logits(self.model, batch).float().log_softmax(-1)[..., self.true_id]
        finally:
            self.model.train(was_training)
        values = log_probs.double().cpu().numpy()
        return [values[row, :k] for row, k in enumerate(batch.n_prefixes)]


MODEL_FILE, CONFIG_FILE = "model.pt", "config.json"


def save_native(model: NativeVLM, tokenizer: WordTokenizer, directory: str | Path, extra: dict | None = None) -> Path:
    """Writes ``model.pt`` (weights, config, vocab size), ``tokenizer.json`` and ``config.json`` atomically.

    ``extra`` (JSON-ready, e.g. the training config) goes into ``config.json`` beside the model config.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {"state_dict": model.state_dict(), "config": config_dict(model.config), "vocab_size": model.vocab_size}
    with atomic_path(directory / MODEL_FILE) as tmp:
        torch.save(state, tmp)
    atomic_write_json(directory / TOKENIZER_FILE, tokenizer.to_dict())
    atomic_write_json(directory / CONFIG_FILE, {"model": config_dict(model.config), **(extra or {})})
    return directory


def load_native(directory: str | Path, device: str | torch.device = "cpu") -> NativeScorer:
    """The :class:`NativeScorer` saved by :func:`save_native` in ``directory`` (eval mode, on ``device``).

    Raises:
        FileNotFoundError: ``model.pt`` or ``tokenizer.json`` missing (names the path).
    """
    path = Path(directory) / MODEL_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no native reward model at {path}")
    state = torch.load(path, map_location=device, weights_only=True)
    model = NativeVLM(NativeVLMConfig(**state["config"]), state["vocab_size"]).to(device)
    model.load_state_dict(state["state_dict"])
    return NativeScorer(model.eval(), WordTokenizer.load(directory))
