"""A tiny randomly initialised Qwen2.5-VL (or Qwen3-VL) in a local folder: what the tests and ``bench.py reward`` use.

No hub is reachable here, so everything is built locally: a byte-level BPE tokenizer trained on the TOPReward prompt
and a few instructions (so ``" True"`` is one token, as in Qwen's own vocabulary) with Qwen's vision special tokens,
a ``Qwen2VLImageProcessor`` config with a small pixel budget (a 56x56 frame is 4x4 patches of 14 px, merged 2x2 into 4
image tokens), and the model (2 text layers of width 64, a 1-block vision tower). The folder loads with
``AutoTokenizer`` / ``AutoModelForImageTextToText`` like a hub checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from policies.rewards.protocol import PROMPT

__all__ = ["PREPROCESSOR", "SPECIAL_TOKENS", "TINY_INSTRUCTIONS", "build_tiny_qwen2_5_vl", "build_tiny_qwen3_vl",
           "build_tiny_tokenizer"]

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                  "<|image_pad|>", "<|video_pad|>")
# Qwen2VLImageProcessor's config, written by hand (its class needs PIL and torchvision, absent here): a frame is
# resized into 28*28..56*56 pixels, 14-px patches, 2x2 merged.
PREPROCESSOR = {"image_processor_type": "Qwen2VLImageProcessor", "processor_class": "Qwen2_5_VLProcessor",
                "do_resize": True, "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
                "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
                "patch_size": 14, "temporal_patch_size": 2, "merge_size": 2,
                "size": {"shortest_edge": 28 * 28, "longest_edge": 56 * 56}}
TINY_INSTRUCTIONS = ("push the T-shaped block onto the goal", "pick up the red cube", "open the drawer",
                     "push the T onto the red target")


def build_tiny_tokenizer(with_true: bool = True, vocab_size: int = 400):
    """A byte-level BPE ``PreTrainedTokenizerFast`` trained on the TOPReward prompt (exact decode round trip).

    ``with_true=False`` trains it on a corpus without the word ``True``, so ``" True"`` splits into several tokens
    (for the error test).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = [PROMPT.format(instruction=i) + " False" for i in TINY_INSTRUCTIONS] * 20
    if not with_true:
        corpus = [c.replace("True", "Yes") for c in corpus]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>",
                                   clean_up_tokenization_spaces=False)


def build_tiny_qwen2_5_vl(directory: str | Path, seed: int = 0, with_true: bool = True, hidden: int = 64,
                          layers: int = 2) -> Path:
    """Saves a randomly initialised tiny Qwen2.5-VL, its tokenizer and processor to ``directory``; returns it."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    directory = Path(directory)
    tokenizer = build_tiny_tokenizer(with_true=with_true)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    config = Qwen2_5_VLConfig(
        text_config={"vocab_size": len(tokenizer), "hidden_size": hidden, "intermediate_size": 2 * hidden,
                     "num_hidden_layers": layers, "num_attention_heads": 4, "num_key_value_heads": 2,
                     "max_position_embeddings": 4096, "bos_token_id": ids["<|endoftext|>"],
                     "eos_token_id": ids["<|im_end|>"], "pad_token_id": ids["<|endoftext|>"],
                     "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]}},
        vision_config={"depth": 1, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "out_hidden_size": hidden,
                       "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2, "window_size": 56,
                       "fullatt_block_indexes": [0]},
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
    return _save(Qwen2_5_VLForConditionalGeneration, config, tokenizer, PREPROCESSOR, directory, seed)


def build_tiny_qwen3_vl(directory: str | Path, seed: int = 0, hidden: int = 64, layers: int = 2) -> Path:
    """Saves a randomly initialised tiny Qwen3-VL (16-px patches, deepstack into text layer 0, interleaved M-RoPE),
    its tokenizer and processor config to ``directory``; returns it. A 64x64 frame is 4 image tokens."""
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    tokenizer = build_tiny_tokenizer()
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    config = Qwen3VLConfig(
        text_config={"vocab_size": len(tokenizer), "hidden_size": hidden, "intermediate_size": 2 * hidden,
                     "num_hidden_layers": layers, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
                     "max_position_embeddings": 4096, "pad_token_id": ids["<|endoftext|>"],
                     "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3],
                                         "mrope_interleaved": True}},
        vision_config={"depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "out_hidden_size": hidden,
                       "patch_size": 16, "spatial_merge_size": 2, "temporal_patch_size": 2,
                       "num_position_embeddings": 16, "deepstack_visual_indexes": [0]},
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
    preprocessor = {**PREPROCESSOR, "image_processor_type": "Qwen2VLImageProcessorFast", "processor_class":
                    "Qwen3VLProcessor", "patch_size": 16, "image_mean": [0.5] * 3, "image_std": [0.5] * 3,
                    "size": {"shortest_edge": 32 * 32, "longest_edge": 64 * 64}}
    return _save(Qwen3VLForConditionalGeneration, config, tokenizer, preprocessor, Path(directory), seed)


def _save(model_class, config, tokenizer, preprocessor: dict, directory: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    model = model_class(config)
    with torch.no_grad():  # random init is near-uniform; larger weights make the log-probs vary with the frames
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.2)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    (directory / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=2))
    return directory
