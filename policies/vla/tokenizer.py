"""Instruction tokenizers: a word-level one built from a dataset's task strings, saved as JSON in the artifact.

Both tokenizers of the VLA (this one and the transformers one of the ``hf`` backbone, :mod:`policies.vla.hf`) give
fixed-length ids ``(B, max_length)`` and a validity mask, and refuse an instruction longer than ``max_length``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from torch import Tensor

from policies.datasets.tables import read_tasks

PAD, UNK = "<pad>", "<unk>"
UNK_ID = 1  # the id of <unk> in every vocabulary
TOKENIZER_FILE = "tokenizer.json"
_WORD = re.compile(r"[a-z0-9]+")


def split_words(text: str) -> list[str]:
    """Lower-cased alphanumeric words of ``text`` (punctuation and spaces separate them)."""
    return _WORD.findall(text.lower())


def perturb_instructions(ids: Tensor, *, dropout: float = 0.0, shuffle: float = 0.0, insert: float = 0.0,
                         generator: torch.Generator | None = None) -> Tensor:
    """Training-time noise on padded instruction ids ``(B, L)`` (0 is padding, words first): a new tensor, same shape.

    Per row, in this order: with probability ``shuffle`` its words are permuted; with probability ``insert`` a
    number of ``<unk>`` drawn uniformly from 0 to the free length ``L - words`` is inserted at random places; then each
    word becomes ``<unk>`` with probability ``dropout``. Shuffling and insertion put every word at every position and
    length the tokenizer allows, so a paraphrase that names the colour early, late or among unseen words is a familiar
    input (EDA's random swap and insertion, Wei & Zou 2019); dropout makes an unseen word one.

    Raises:
        ValueError: a probability outside [0, 1].
    """
    for name, p in (("dropout", dropout), ("shuffle", shuffle), ("insert", insert)):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"instruction noise {name} must be in [0, 1], got {p!r}")
    out = ids.clone()
    width = ids.shape[1]
    if shuffle > 0 or insert > 0:
        draws = torch.rand(ids.shape[0], 2, generator=generator, device=ids.device)
        for row in range(ids.shape[0]):
            words = ids[row][ids[row] != 0]
            if draws[row, 0] < shuffle:
                words = words[torch.randperm(len(words), generator=generator, device=ids.device)]
            if draws[row, 1] < insert and len(words) < width:
                n_new = int(torch.randint(0, width - len(words) + 1, (1,), generator=generator, device=ids.device))
                is_unk = torch.zeros(len(words) + n_new, dtype=torch.bool, device=ids.device)
                is_unk[torch.randperm(len(is_unk), generator=generator, device=ids.device)[:n_new]] = True
                grown = torch.full((len(is_unk),), UNK_ID, dtype=ids.dtype, device=ids.device)
                grown[~is_unk] = words
                words = grown
            out[row] = 0
            out[row, : len(words)] = words
    if dropout > 0:
        dropped = (torch.rand(ids.shape, generator=generator, device=ids.device) < dropout) & (out != 0)
        out = out.masked_fill(dropped, UNK_ID)
    return out


def check_length(text: str, n_tokens: int, max_length: int) -> None:
    """Raise ``ValueError`` naming both lengths when an instruction has more than ``max_length`` tokens."""
    if n_tokens > max_length:
        raise ValueError(f"instruction {text!r} has {n_tokens} tokens, more than the tokenizer's max_length "
                         f"{max_length}: shorten it or raise max_length (and retrain)")


class WordTokenizer:
    """Word-level tokenizer: id 0 is ``<pad>``, 1 ``<unk>`` (a word not seen in training), then the vocabulary.

    Args:
        words: the vocabulary (duplicates and the special tokens are dropped; order kept).
        max_length: tokens per instruction; every encoding is padded to it.

    Raises:
        ValueError: ``max_length < 1``.
    """

    def __init__(self, words: Iterable[str], max_length: int) -> None:
        if max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {max_length}")
        self.max_length = int(max_length)
        vocab = [PAD, UNK]
        vocab.extend(w for w in dict.fromkeys(words) if w not in (PAD, UNK))
        self.vocab: list[str] = vocab
        self._ids = {w: i for i, w in enumerate(vocab)}
        self._cache: dict[str, list[int]] = {}

    @classmethod
    def from_texts(cls, texts: Iterable[str], max_length: int) -> WordTokenizer:
        """The sorted words of ``texts`` as vocabulary (deterministic whatever the order of the texts)."""
        return cls(sorted({w for text in texts for w in split_words(text)}), max_length)

    @classmethod
    def from_dataset(cls, root: str | Path, max_length: int) -> WordTokenizer:
        """The vocabulary of a LeRobot dataset's ``meta/tasks.parquet``; ``DatasetError`` names a bad file.

        Every task is checked against ``max_length`` here, before training starts (``ValueError`` naming both).
        """
        texts = list(read_tasks(Path(root) / "meta" / "tasks.parquet").values())
        tokenizer = cls.from_texts(texts, max_length)
        for text in texts:
            tokenizer.ids(text)
        return tokenizer

    def __len__(self) -> int:
        return len(self.vocab)

    def ids(self, text: str) -> list[int]:
        """Token ids of one instruction (no padding); ``ValueError`` if longer than ``max_length``."""
        cached = self._cache.get(text)
        if cached is None:
            cached = [self._ids.get(w, 1) for w in split_words(text)]
            check_length(text, len(cached), self.max_length)
            self._cache[text] = cached
        return cached

    def encode(self, texts: Sequence[str], device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
        """``(ids, mask)``: long ``(B, max_length)`` ids padded with 0 and bool ``(B, max_length)``, True on words."""
        ids = torch.zeros(len(texts), self.max_length, dtype=torch.long)
        for row, text in enumerate(texts):
            tokens = self.ids(text)
            ids[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
        ids = ids.to(device)
        return ids, ids != 0

    def to_dict(self) -> dict[str, object]:
        """JSON-ready content: ``{"type": "word", "max_length", "vocab"}``."""
        return {"type": "word", "max_length": self.max_length, "vocab": self.vocab}

    def save(self, directory: str | Path) -> Path:
        """Write ``<directory>/tokenizer.json``; returns its path."""
        path = Path(directory) / TOKENIZER_FILE
        path.write_text(json.dumps(self.to_dict(), indent=1))
        return path

    @classmethod
    def load(cls, directory: str | Path) -> WordTokenizer:
        """Read ``<directory>/tokenizer.json``; ``FileNotFoundError``/``ValueError`` name a missing or bad file."""
        path = Path(directory) / TOKENIZER_FILE
        data = json.loads(path.read_text())
        if not isinstance(data, dict) or data.get("type") != "word" or not isinstance(data.get("vocab"), list):
            raise ValueError(f"{path} is not a word tokenizer file (type 'word' with a vocab list)")
        if data["vocab"][:2] != [PAD, UNK]:
            raise ValueError(f"{path}: the vocabulary must start with {PAD!r}, {UNK!r}")
        return cls(data["vocab"][2:], int(data["max_length"]))
