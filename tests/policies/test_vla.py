"""The vision-language-action policy (policies/vla): shapes, masks, training, checkpoints, backbones and its errors."""

from __future__ import annotations

import math

import pyarrow.parquet as pq
import pytest
import torch

from policies.checkpoint import CheckpointError, load_policy, save_checkpoint
from policies.datasets.tables import tasks_table
from policies.flow_matching import FlowMatchingConfig, FlowMatchingPolicy
from policies.registry import registered_policies
from policies.vla import BackboneConfig, VLAConfig, VLAPolicy, WordTokenizer
from policies.vla.execution import TemporalEnsembler, ensemble_weights
from policies.vla.tokenizer import perturb_instructions

IMAGE = "observation.images.overhead"
ENV_STATE = "observation.environment_state"
TASKS = ["push the T onto the red target", "push the T onto the blue target", "move the block to the green pad",
         "yellow"]
FEATURES = {
    "observation.state": {"dtype": "float32", "shape": [2], "names": None},
    ENV_STATE: {"dtype": "float32", "shape": [6], "names": None},
    IMAGE: {"dtype": "video", "shape": [32, 32, 3], "names": ["height", "width", "channels"]},
    "action": {"dtype": "float32", "shape": [2], "names": None},
}
STATS = {"observation.state": {"min": [0.0, 0.0], "max": [1.0, 1.0]}, "action": {"min": [0.0, 0.0], "max": [1.0, 1.0]},
         ENV_STATE: {"min": [-1.0] * 6, "max": [1.0] * 6}}
TINY = {"dim": 32, "num_heads": 2, "trunk_layers": 1, "expert_dim": 32, "expert_heads": 2, "expert_layers": 1,
        "vision_channels": (8, 16), "image_token_grid": (2, 2), "max_length": 8, "num_inference_steps": 3,
        "mlp_ratio": 2, "keypoints": 0}


def _policy(**overrides) -> VLAPolicy:
    torch.manual_seed(0)
    config = VLAConfig(**{**TINY, **overrides})
    return VLAPolicy(config, FEATURES, STATS, tokenizer=WordTokenizer.from_texts(TASKS, config.max_length))


def _batch(size: int = 4, seed: int = 0, to: int = 2, horizon: int = 16) -> dict:
    gen = torch.Generator().manual_seed(seed)
    return {
        "observation.state": torch.rand(size, to, 2, generator=gen),
        ENV_STATE: torch.rand(size, to, 6, generator=gen) * 2 - 1,
        IMAGE: torch.rand(size, to, 3, 32, 32, generator=gen),
        "action": torch.rand(size, horizon, 2, generator=gen),
        "action_is_pad": torch.zeros(size, horizon, dtype=torch.bool),
        "task": [TASKS[i % len(TASKS)] for i in range(size)],
    }


def _obs(batch: dict) -> dict:
    return {k: v for k, v in batch.items() if k.startswith("observation.") or k == "task"}


def _chunk(policy: VLAPolicy, obs: dict, seed: int = 7) -> torch.Tensor:
    return policy.predict_action_chunk(obs, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------------------- shapes and masks
def test_vla_is_registered_and_gives_tokens_chunks_and_losses_of_the_documented_shapes():
    assert "vla" in registered_policies()
    policy = _policy()
    assert policy.model_keys == [IMAGE, "observation.state"] and policy.input_keys[-1] == ENV_STATE
    batch = _batch()
    tokens, mask = policy.eval().encode(policy.normalizer.normalize(batch))  # eval: no instruction noise
    longest = max(len(t.split()) for t in batch["task"])  # 7: word columns past the longest instruction are cut
    assert tokens.shape == (4, 2 * 2 + longest + 1, 32) and mask.shape == (4, 12)  # 2x2 image tokens, words, state
    assert mask[:, :4].all() and mask[:, -1].all()
    assert mask[:, 4:-1].sum(dim=1).tolist() == [len(t.split()) for t in batch["task"]]  # the rest is padding
    loss, logs = policy.train()(batch)
    assert loss.ndim == 0 and math.isfinite(loss.item())
    assert logs["loss"] == pytest.approx(logs["flow_loss"] + 0.1 * logs["aux_loss"], rel=1e-5)
    policy.eval()
    assert _chunk(policy, _obs(batch)).shape == (4, 16, 2)


def test_keypoints_add_one_token_per_frame_that_follows_a_bright_spot():
    policy = _policy(keypoints=4).eval()
    batch = _batch()
    tokens, mask = policy.eval().encode(policy.normalizer.normalize(batch))  # eval: no instruction noise
    longest = max(len(t.split()) for t in batch["task"])
    assert tokens.shape == (4, 2 * 2 + 1 + longest + 1, 32) and mask[:, :5].all()  # grid cells + the keypoint token
    backbone = policy.backbone
    images = torch.zeros(2, 1, 3, 32, 32)
    images[0, 0, :, 2:6, 2:6] = 1.0  # a spot top-left ...
    images[1, 0, :, 26:30, 26:30] = 1.0  # ... and bottom-right: the expected keypoint positions differ
    name = IMAGE.replace(".", "__")
    keypoints = backbone.keypoints[name][0](backbone.encoders[name].feature_map(images[:, 0]))
    assert keypoints.shape == (2, 8) and keypoints.abs().max() <= 1.0
    assert not torch.allclose(keypoints[0], keypoints[1], atol=1e-3)
    with pytest.raises(ValueError, match="keypoints must be >= 0"):
        VLAConfig(keypoints=-1)


def test_a_padded_token_changes_nothing_and_a_word_does(monkeypatch):
    policy = _policy().eval()
    obs = _obs(_batch())
    expected = _chunk(policy, obs)
    tokenizer = policy.backbone.tokenizer
    encode = tokenizer.encode

    def garbage_in_padding(texts, device="cpu"):
        ids, mask = encode(texts, device)
        return torch.where(mask, ids, torch.full_like(ids, 3)), mask

    monkeypatch.setattr(tokenizer, "encode", garbage_in_padding)
    torch.testing.assert_close(_chunk(policy, obs), expected, rtol=0, atol=1e-6)
    monkeypatch.setattr(tokenizer, "encode", encode)
    other = dict(obs, task=[TASKS[1], TASKS[0], TASKS[3], TASKS[2]])  # another instruction per sample
    assert not torch.allclose(_chunk(policy, other), expected, atol=1e-4)


def test_privileged_state_is_never_an_input():
    with pytest.raises(ValueError, match="observation_keys must not contain privileged state"):
        VLAConfig(observation_keys=(IMAGE, ENV_STATE))
    policy = _policy().eval()
    obs = _obs(_batch())
    expected = _chunk(policy, obs)
    changed = dict(obs, **{ENV_STATE: torch.full_like(obs[ENV_STATE], 0.9)})
    assert torch.equal(_chunk(policy, changed), expected)
    without = {k: v for k, v in obs.items() if k != ENV_STATE}
    assert torch.equal(_chunk(policy, without), expected)
    step = {"observation.state": torch.rand(4, 2), IMAGE: torch.randint(0, 256, (4, 32, 32, 3), dtype=torch.uint8),
            "task": TASKS}  # what an env gives at evaluation, without privileged state
    assert policy.select_action(step).shape == (4, 2)


# ----------------------------------------------------------------------------------------------------- training
def test_loss_falls_when_overfitting_one_batch():
    policy = _policy().train()
    batch = _batch(size=8)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        torch.manual_seed(1)  # the same noise and flow times each step: one fixed objective
        loss, _ = policy(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


# -------------------------------------------------------------------------------------------------- checkpoints
def test_checkpoint_round_trip_gives_identical_actions_with_the_saved_tokenizer(tmp_path):
    dataset = tmp_path / "dataset"
    (dataset / "meta").mkdir(parents=True)
    pq.write_table(tasks_table(TASKS), dataset / "meta" / "tasks.parquet")
    torch.manual_seed(0)
    policy = VLAPolicy(VLAConfig(**TINY, task_source=str(dataset)), FEATURES, STATS)
    assert policy.backbone.tokenizer.vocab[:2] == ["<pad>", "<unk>"] and "red" in policy.backbone.tokenizer.vocab
    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-3)
    policy(_batch())[0].backward()
    optimizer.step()
    checkpoint = save_checkpoint(tmp_path / "run", 1, policy, optimizer)
    assert (checkpoint / "pretrained_model" / "tokenizer.json").is_file()
    (dataset / "meta" / "tasks.parquet").unlink()  # the artifact alone must rebuild the tokenizer
    loaded = VLAPolicy.from_pretrained(checkpoint / "pretrained_model")
    assert loaded.backbone.tokenizer.vocab == policy.backbone.tokenizer.vocab and loaded.config == policy.config
    obs = _obs(_batch(seed=3))
    policy.eval()
    assert torch.equal(_chunk(loaded, obs), _chunk(policy, obs))


def test_loading_a_checkpoint_of_another_policy_type_names_both_types(tmp_path):
    vla = _policy()
    vla_ckpt = save_checkpoint(tmp_path / "vla", 1, vla, torch.optim.AdamW(vla.parameters()))
    features = {k: v for k, v in FEATURES.items() if k != IMAGE}
    fm = FlowMatchingPolicy(FlowMatchingConfig(mlp_hidden_dim=16, mlp_num_blocks=1, time_embed_dim=8), features, STATS)
    fm_ckpt = save_checkpoint(tmp_path / "fm", 1, fm, torch.optim.AdamW(fm.parameters()))
    with pytest.raises(CheckpointError, match="holds a 'flow_matching' policy, not a 'vla' one"):
        VLAPolicy.from_pretrained(fm_ckpt / "pretrained_model")
    with pytest.raises(CheckpointError, match="holds a 'vla' policy, not a 'flow_matching' one"):
        FlowMatchingPolicy.from_pretrained(vla_ckpt)
    assert type(load_policy(vla_ckpt)) is VLAPolicy  # without an expected type any policy loads


# ------------------------------------------------------------------------------------------------------- errors
def test_an_image_of_the_wrong_size_names_the_key_and_both_shapes():
    policy = _policy().eval()
    obs = _obs(_batch())
    obs[IMAGE] = torch.rand(4, 2, 3, 24, 32)
    with pytest.raises(ValueError, match=r"observation\.images\.overhead.*\(3, 32, 32\).*\(3, 24, 32\)"):
        policy.predict_action_chunk(obs)


def test_an_instruction_longer_than_the_tokenizer_limit_names_both_lengths():
    policy = _policy().eval()
    obs = _obs(_batch())
    obs["task"] = ["push the T onto the red target and then all the way back home"] + TASKS[1:]
    with pytest.raises(ValueError, match="has 14 tokens, more than the tokenizer's max_length 8"):
        policy.predict_action_chunk(obs)
    with pytest.raises(KeyError, match="task"):
        policy.predict_action_chunk({k: v for k, v in obs.items() if k != "task"})


def test_word_tokenizer_pads_maps_unknown_words_and_round_trips_as_json(tmp_path):
    tokenizer = WordTokenizer.from_texts(TASKS, max_length=6)
    ids, mask = tokenizer.encode(["Push the PURPLE!"])
    assert ids.shape == (1, 6) and mask.tolist() == [[True, True, True, False, False, False]]
    assert ids[0, 2].item() == 1 and ids[0, 3:].tolist() == [0, 0, 0]  # unknown word -> <unk>, padding -> <pad>
    tokenizer.save(tmp_path)
    assert WordTokenizer.load(tmp_path).vocab == tokenizer.vocab



def test_instruction_noise_shuffles_inserts_unknowns_and_drops_words_only_where_asked():
    ids = torch.tensor([[5, 6, 7, 8, 0, 0, 0, 0], [9, 4, 0, 0, 0, 0, 0, 0]])
    gen = torch.Generator().manual_seed(0)
    assert torch.equal(perturb_instructions(ids, generator=gen), ids)  # no noise asked: unchanged
    shuffled = [perturb_instructions(ids, shuffle=1.0, generator=gen) for _ in range(20)]
    for out in shuffled:  # the same words in the same row, padding still last
        assert [sorted(row[row != 0].tolist()) for row in out] == [[5, 6, 7, 8], [4, 9]]
        assert (out[:, 4:] == 0).all() and (out[1, 2:] == 0).all()
    assert len({tuple(out[0].tolist()) for out in shuffled}) > 5
    lengths = set()
    for _ in range(30):
        out = perturb_instructions(ids, insert=1.0, generator=gen)
        for row, words in zip(out, ([5, 6, 7, 8], [9, 4])):
            kept = row[(row != 0) & (row != 1)].tolist()
            assert kept == words  # order kept, only <unk> (id 1) added
            n = int((row != 0).sum())
            assert (row[:n] != 0).all() and len(words) <= n <= 8
            lengths.add(n)
    assert {4, 8} <= lengths  # from nothing inserted up to the full width
    dropped = perturb_instructions(ids.repeat(200, 1), dropout=0.25, generator=gen)
    assert (dropped == 0).sum() == (ids == 0).sum() * 200  # padding is never a word
    assert 0.2 < (dropped == 1).sum() / (ids != 0).sum() / 200 < 0.3
    with pytest.raises(ValueError, match="shuffle must be in"):
        perturb_instructions(ids, shuffle=1.5)
    with pytest.raises(ValueError, match="word_insert must be in"):
        VLAConfig(word_insert=-0.1)


def test_the_trunk_perturbs_instructions_in_training_only():
    obs = _obs(_batch())
    quiet = _policy(word_dropout=0.0, word_shuffle=0.0, word_insert=0.0)
    expected = quiet.eval().encode(obs)
    assert all(torch.equal(a, b) for a, b in zip(quiet.train().encode(obs), expected))  # no other training noise
    noisy = _policy(word_shuffle=1.0, word_insert=1.0).eval()
    torch.manual_seed(1)
    assert all(torch.equal(a, b) for a, b in zip(noisy.encode(obs), expected))  # same weights (seed 0), no noise
    tokens, mask = noisy.train().encode(obs)
    assert mask.shape != expected[1].shape or not torch.allclose(tokens, expected[0])


# ---------------------------------------------------------------------------------------------------- execution
def test_temporal_ensembling_weights_earlier_predictions_by_exp_minus_decay_times_age():
    ensembler = TemporalEnsembler(decay=0.5, horizon=3)
    first = ensembler.update(torch.tensor([[[1.0], [2.0], [3.0]]]))
    second = ensembler.update(torch.tensor([[[10.0], [20.0], [30.0]]]))
    w = ensemble_weights(0.5, 2)
    assert first.item() == pytest.approx(1.0)
    assert second.item() == pytest.approx((w[0] * 2.0 + w[1] * 10.0) / (w[0] + w[1]))


@pytest.mark.parametrize(("execution", "expected_calls"), [("ensemble", 5), ("receding", 1)])
def test_ensemble_execution_replans_every_step_and_receding_every_n_action_steps(monkeypatch, execution,
                                                                                 expected_calls):
    policy = _policy(execution=execution, n_action_steps=8).eval()
    calls = []
    predict = policy.predict_action_chunk
    monkeypatch.setattr(policy, "predict_action_chunk", lambda obs, generator=None: calls.append(1) or predict(obs))
    step = {"observation.state": torch.rand(2, 2), IMAGE: torch.rand(2, 3, 32, 32), "task": TASKS[:2]}
    actions = [policy.select_action(step) for _ in range(5)]
    assert len(calls) == expected_calls and all(a.shape == (2, 2) for a in actions)


# ---------------------------------------------------------------------------------------------------- hf backbone
def _tiny_vlm(directory) -> None:
    """Save a randomly initialised Idefics3 (SmolVLM's class) with a word-level tokenizer: nothing downloaded."""
    from policies.vla.hf import import_transformers

    transformers = import_transformers()
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    words = ["<pad>", "<unk>", "<image>", *sorted({w for t in TASKS for w in t.lower().split()})]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>")
    config = transformers.Idefics3Config(
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": 32, "patch_size": 8},
        text_config={"model_type": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 3,
                     "num_attention_heads": 2, "num_key_value_heads": 1, "vocab_size": len(words),
                     "max_position_embeddings": 64, "pad_token_id": 0},
        scale_factor=2, image_token_id=2)
    torch.manual_seed(0)
    transformers.Idefics3ForConditionalGeneration(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)


def test_hf_backbone_trains_through_a_tiny_local_model_and_round_trips_without_it(tmp_path):
    source = tmp_path / "tiny_vlm"
    _tiny_vlm(source)
    overrides = {k: v for k, v in TINY.items() if k not in ("dim", "num_heads", "trunk_layers", "vision_channels",
                                                             "image_token_grid")}
    config = VLAConfig(**overrides, backbone=BackboneConfig(path=str(source), num_layers=2, train_last_n_layers=1))
    assert config.backbone.type == "hf"
    torch.manual_seed(0)
    policy = VLAPolicy(config, FEATURES, STATS)
    assert len(policy.backbone.text.layers) == 2
    frozen = policy.backbone.text.layers[0].mlp.down_proj.weight
    tuned = policy.backbone.text.layers[1].mlp.down_proj.weight
    assert not frozen.requires_grad and tuned.requires_grad
    before = frozen.detach().clone(), tuned.detach().clone()
    optimizer = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=1e-3)
    batch = _batch()
    losses = []
    for _ in range(3):
        loss, _ = policy(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert torch.equal(frozen, before[0]) and not torch.equal(tuned, before[1])

    checkpoint = save_checkpoint(tmp_path / "run", 3, policy, optimizer)
    assert (checkpoint / "pretrained_model" / "backbone" / "config.json").is_file()
    for file in source.iterdir():  # the artifact alone rebuilds the backbone (config, tokenizer) and its weights
        file.unlink()
    loaded = VLAPolicy.from_pretrained(checkpoint)
    policy.eval()
    obs = _obs(_batch(seed=5))
    assert torch.equal(_chunk(loaded, obs), _chunk(policy, obs))
    with pytest.raises(ValueError, match="more than the tokenizer's max_length 8"):
        loaded.predict_action_chunk(dict(obs, task=["push the t onto the red target " * 2] * 4))
