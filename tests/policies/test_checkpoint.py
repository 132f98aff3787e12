"""Checkpoints: layout, exact reload of the policy, exact resume of training, and clear errors on damage."""

from __future__ import annotations

import json
import os
import random
import shutil

import numpy as np
import pytest
import torch

from policies.checkpoint import (
    CheckpointError,
    check_resume_compatible,
    find_last_checkpoint,
    load_model_state,
    load_policy,
    load_train_config,
    load_training_state,
    load_training_weights,
    save_checkpoint,
    with_execution,
)
from policies.ema import EMA
from policies.flow_matching import FlowMatchingConfig, FlowMatchingPolicy

LOW, HIGH = torch.tensor([0.25, -0.32]), torch.tensor([0.85, 0.32])
FEATURES = {
    "observation.state": {"dtype": "float32", "shape": [2], "names": ["x", "y"]},
    "observation.environment_state": {"dtype": "float32", "shape": [4], "names": None},
    "action": {"dtype": "float32", "shape": [2], "names": ["x", "y"]},
}
STATS = {
    "observation.state": {"min": LOW.tolist(), "max": HIGH.tolist()},
    "observation.environment_state": {"min": [0.2, -0.4, -1.0, -1.0], "max": [0.9, 0.4, 1.0, 1.0]},
    "action": {"min": LOW.tolist(), "max": HIGH.tolist()},
}
TRAIN_CONFIG = {"seed": 0, "policy": {"name": "flow_matching", "horizon": 16}, "optim": {"steps": 100, "lr": 1e-3}}


def make_policy() -> FlowMatchingPolicy:
    config = FlowMatchingConfig(mlp_hidden_dim=64, mlp_num_blocks=2, time_embed_dim=32)
    return FlowMatchingPolicy(config, FEATURES, STATS)


def make_training(policy: FlowMatchingPolicy):
    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-3, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / 5))
    return optimizer, scheduler, EMA(policy, decay=0.99)


def random_batch(size: int = 16) -> dict[str, torch.Tensor]:
    """Draws from the torch, numpy and python RNGs, so restoring all three is part of an exact resume."""
    state = LOW + (HIGH - LOW) * torch.rand(size, 2, 2)
    angle = torch.from_numpy(np.random.uniform(0.0, 2 * np.pi, (size, 2, 1)).astype(np.float32))
    env = torch.cat([LOW + (HIGH - LOW) * torch.rand(size, 2, 2), angle.cos(), angle.sin()], dim=-1)
    action = LOW + (HIGH - LOW) * torch.rand(size, 16, 2) * random.uniform(0.9, 1.0)
    return {"observation.state": state, "observation.environment_state": env, "action": action}


def train_steps(policy, optimizer, scheduler, ema, n: int) -> list[float]:
    losses = []
    policy.train()
    for _ in range(n):
        loss, _ = policy(random_batch())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        ema.step(policy)
        losses.append(loss.item())
    return losses


def test_layout_and_exact_reload(tmp_path):
    torch.manual_seed(0)
    policy = make_policy()
    optimizer, scheduler, ema = make_training(policy)
    train_steps(policy, optimizer, scheduler, ema, 3)
    ckpt = save_checkpoint(tmp_path, 3, policy, optimizer, scheduler, ema, train_config=TRAIN_CONFIG)

    assert ckpt == tmp_path / "checkpoints" / "000003"
    for rel in ("pretrained_model/config.json", "pretrained_model/model.safetensors", "pretrained_model/train_config.yaml",
                "training_state/model.safetensors",
                "training_state/optimizer.pt", "training_state/scheduler.pt", "training_state/ema.safetensors",
                "training_state/rng_state.pt", "training_state/training_step.json"):
        assert (ckpt / rel).is_file(), rel
    assert (tmp_path / "checkpoints" / "last").resolve() == ckpt.resolve()
    assert find_last_checkpoint(tmp_path) == ckpt
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".tmp")]
    meta = json.loads((ckpt / "pretrained_model" / "config.json").read_text())
    assert meta["type"] == "flow_matching" and meta["features"] == FEATURES

    def predict(p):
        return p.predict_action_chunk(obs, generator=torch.Generator().manual_seed(4))

    policy.eval()
    obs = {k: v for k, v in random_batch(5).items() if k != "action"}
    raw = load_policy(ckpt, use_ema=False)
    assert not raw.training and raw.config == policy.config
    assert torch.equal(predict(raw), predict(policy))  # weights and normaliser stats travelled in model.safetensors
    with ema.applied(policy):
        expected_ema = predict(policy)
    assert not torch.equal(expected_ema, predict(policy))
    for source in (ckpt, tmp_path, tmp_path / "checkpoints" / "last"):
        assert torch.equal(predict(load_policy(source)), expected_ema)  # EMA weights by default
    exported = shutil.copytree(ckpt / "pretrained_model", tmp_path / "export")  # copied alone: no training_state
    assert torch.equal(predict(load_policy(exported)), expected_ema)  # the evaluated policy travels on its own
    with pytest.raises(CheckpointError, match="training_state"):
        load_policy(exported, use_ema=False)  # the raw weights stay with the run
    assert set(load_model_state(ckpt)) == set(policy.state_dict())


def _to_format_1(ckpt) -> None:
    """Rewrite a checkpoint into the format 1 layout: raw weights in pretrained_model, EMA only in training_state."""
    state = ckpt / "training_state"
    os.replace(state / "model.safetensors", ckpt / "pretrained_model" / "model.safetensors")
    meta_file = ckpt / "pretrained_model" / "config.json"
    meta_file.write_text(json.dumps({**json.loads(meta_file.read_text()), "format_version": 1}))


def test_format_1_checkpoint_still_loads_and_resumes(tmp_path):
    torch.manual_seed(0)
    policy = make_policy()
    optimizer, scheduler, ema = make_training(policy)
    train_steps(policy, optimizer, scheduler, ema, 3)
    obs = {k: v for k, v in random_batch(5).items() if k != "action"}

    def predict(p):
        return p.predict_action_chunk(obs, generator=torch.Generator().manual_seed(4))

    policy.eval()
    expected_raw = predict(policy)
    with ema.applied(policy):
        expected_ema = predict(policy)
    raw_state = {k: v.clone() for k, v in policy.state_dict().items()}
    ckpt = save_checkpoint(tmp_path, 3, policy, optimizer, scheduler, ema, train_config=TRAIN_CONFIG)
    continued = train_steps(policy, optimizer, scheduler, ema, 2)
    _to_format_1(ckpt)
    assert not (ckpt / "training_state" / "model.safetensors").exists()

    assert torch.equal(predict(load_policy(ckpt)), expected_ema)  # EMA applied from training_state
    assert torch.equal(predict(load_policy(ckpt, use_ema=False)), expected_raw)
    raw = load_training_weights(ckpt)
    assert all(torch.equal(raw[k], v) for k, v in raw_state.items())
    resumed = make_policy()
    resumed.load_state_dict(raw)
    r_opt, r_sched, r_ema = make_training(resumed)
    assert load_training_state(ckpt, r_opt, r_sched, r_ema) == 3
    assert train_steps(resumed, r_opt, r_sched, r_ema, 2) == continued


@pytest.mark.parametrize(("rel", "content", "reader", "message"), [
    ("pretrained_model/config.json", "{not json", "policy", "config.json.*not valid JSON"),
    ("pretrained_model/config.json", "[]", "policy", "config.json.*JSON dict"),
    ("training_state/training_step.json", "[]", "state", "training_step.json.*JSON dict"),
    ("pretrained_model/train_config.yaml", "", "config", "train_config.yaml.*no 'env'"),
    ("pretrained_model/train_config.yaml", "- a\n- b\n", "config", "train_config.yaml.*mapping"),
])
def test_malformed_checkpoint_files_are_named(tmp_path, rel, content, reader, message):
    policy = make_policy()
    optimizer, scheduler, ema = make_training(policy)
    ckpt = save_checkpoint(tmp_path, 0, policy, optimizer, scheduler, ema, train_config={"env": {}, **TRAIN_CONFIG})
    (ckpt / rel).write_text(content)
    read = {"policy": lambda: load_policy(ckpt), "config": lambda: load_train_config(ckpt),
            "state": lambda: load_training_state(ckpt, optimizer, scheduler, ema)}[reader]
    with pytest.raises(CheckpointError, match=message):
        read()


def test_resume_reproduces_the_uninterrupted_losses(tmp_path):
    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)
    policy = make_policy()
    optimizer, scheduler, ema = make_training(policy)
    train_steps(policy, optimizer, scheduler, ema, 4)
    ckpt = save_checkpoint(tmp_path, 4, policy, optimizer, scheduler, ema, train_config=TRAIN_CONFIG)
    continued = train_steps(policy, optimizer, scheduler, ema, 3)
    final_ema = {k: v.clone() for k, v in ema.shadow.items()}

    torch.manual_seed(123)  # scramble the RNGs: the checkpoint must restore them
    random.seed(123)
    np.random.seed(123)
    resumed_policy = make_policy()
    resumed_policy.load_state_dict(load_training_weights(ckpt))
    resumed_opt, resumed_sched, resumed_ema = make_training(resumed_policy)
    assert load_training_state(ckpt, resumed_opt, resumed_sched, resumed_ema) == 4
    assert resumed_ema.num_updates == 4 and resumed_sched.last_epoch == 4
    resumed = train_steps(resumed_policy, resumed_opt, resumed_sched, resumed_ema, 3)

    assert resumed == continued  # bitwise: same weights, optimizer moments, LR, RNG draws
    for name, value in final_ema.items():
        assert torch.equal(resumed_ema.shadow[name], value), name


def test_truncated_safetensors_raise_checkpoint_error_naming_the_file(tmp_path):
    policy = make_policy()
    optimizer, scheduler, ema = make_training(policy)
    ckpt = save_checkpoint(tmp_path, 0, policy, optimizer, scheduler, ema)
    for rel in ("pretrained_model/model.safetensors", "training_state/ema.safetensors"):
        file = ckpt / rel
        data = file.read_bytes()
        file.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_policy(ckpt)
    with pytest.raises(CheckpointError, match="ema.safetensors"):
        load_training_state(ckpt, optimizer, scheduler, ema)


def test_missing_files_and_dirs_raise_checkpoint_error_naming_them(tmp_path):
    policy = make_policy()
    optimizer, scheduler, ema = make_training(policy)
    ckpt = save_checkpoint(tmp_path, 0, policy, optimizer, scheduler, ema)
    (ckpt / "training_state" / "rng_state.pt").unlink()
    with pytest.raises(CheckpointError, match="rng_state.pt"):
        load_training_state(ckpt, optimizer, scheduler, ema)
    (ckpt / "pretrained_model" / "config.json").unlink()
    with pytest.raises(CheckpointError, match="config.json"):
        load_policy(ckpt)
    with pytest.raises(CheckpointError, match="nowhere"):
        load_policy(tmp_path / "nowhere")
    assert find_last_checkpoint(tmp_path / "nowhere") is None


def test_incompatible_state_is_refused(tmp_path):
    policy = make_policy()
    optimizer, scheduler, ema = make_training(policy)
    ckpt = save_checkpoint(tmp_path, 0, policy, optimizer, scheduler, ema, train_config=TRAIN_CONFIG)
    other = FlowMatchingPolicy(FlowMatchingConfig(mlp_hidden_dim=32, mlp_num_blocks=1, time_embed_dim=32),
                               FEATURES, STATS)
    with pytest.raises(CheckpointError, match="optimizer.pt"):
        load_training_state(ckpt, torch.optim.AdamW(other.parameters()))
    check_resume_compatible(ckpt, {**TRAIN_CONFIG, "optim": {"steps": 500, "lr": 1e-3}})  # more steps: allowed
    changed = {**TRAIN_CONFIG, "policy": {"name": "flow_matching", "horizon": 8}}
    with pytest.raises(CheckpointError, match="policy"):
        check_resume_compatible(ckpt, changed)


def test_keep_last_prunes_and_resaving_a_step_replaces_it(tmp_path):
    policy = make_policy()
    optimizer, _, _ = make_training(policy)
    for step in (10, 20, 30):
        save_checkpoint(tmp_path, step, policy, optimizer, keep_last=2)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["000020", "000030", "last"]
    with torch.no_grad():
        next(policy.parameters()).add_(1.0)
    save_checkpoint(tmp_path, 30, policy, optimizer, keep_last=2)
    reloaded = load_model_state(tmp_path)
    name, param = next(iter(policy.named_parameters()))
    assert torch.equal(reloaded[name], param.detach())
    assert load_training_state(tmp_path / "checkpoints" / "000030", optimizer) == 30


def test_with_execution_changes_how_chunks_run_not_the_weights_and_names_a_bad_field(tmp_path):
    policy = make_policy()
    weights = {k: v.clone() for k, v in policy.state_dict().items()}
    obs = {"observation.state": torch.tensor([[0.5, 0.0]]), "observation.environment_state": torch.zeros(1, 4)}
    policy.eval()
    with_execution(policy, {"n_action_steps": 2, "num_inference_steps": None})
    assert policy.config.n_action_steps == 2 and policy.config.num_inference_steps == FlowMatchingConfig().num_inference_steps
    policy.reset()
    policy.select_action(obs)
    assert len(policy._action_queue) == 1  # a chunk planned, 2 of its actions queued, 1 executed
    assert all(torch.equal(v, weights[k]) for k, v in policy.state_dict().items())
    with pytest.raises(ValueError, match="policy_execution.execution"):  # flow matching has no execution mode
        with_execution(policy, {"execution": "ensemble"})
    with pytest.raises(ValueError, match="n_action_steps must be <= horizon"):
        with_execution(policy, {"n_action_steps": 99})
