"""Training at scale, in one process: the batch layout, shard seeding, augmentation and the trainer's start-up checks."""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import sim
from policies import distributed
from policies.augment import augment_batch, random_crop_resize, random_shift
from policies.distributed import BatchLayout, DistContext
from policies.train_config import register_configs
from policies.trainer import EnvFactories, Trainer
from tests.conftest import CONF_DIR

sim.register_configs()
register_configs()


# ------------------------------------------------------------------------------------------------------ batch layout
def test_the_shards_of_all_ranks_partition_the_global_batch_in_order():
    global_indices = torch.arange(24)
    parts = [BatchLayout.for_run(12, 2, DistContext(rank=r, world_size=3)) for r in range(3)]
    assert [p.n_shards for p in parts] == [6, 6, 6] and parts[0].shard_size == 4
    assert parts[1].shards == [1, 4]  # shard k runs on rank k % 3 as its micro-batch k // 3
    taken = torch.cat([p.rank_indices(global_indices) for p in parts]).sort().values
    assert torch.equal(taken, global_indices)
    assert torch.equal(BatchLayout.for_run(12, 1, DistContext()).rank_indices(global_indices[:12]), global_indices[:12])


def test_a_batch_size_the_processes_cannot_share_is_refused_naming_both():
    with pytest.raises(ValueError, match=r"optim.batch_size=15 must be divisible by the number of processes \(2"):
        BatchLayout.for_run(15, 1, DistContext(world_size=2))


def test_a_resumed_layout_is_kept_when_the_new_process_count_divides_it(capsys):
    two_procs = BatchLayout.for_run(16, 1, DistContext(), n_shards=2)  # a 2-process run resumed on one
    assert (two_procs.n_shards, two_procs.shard_size, two_procs.shards) == (2, 8, [0, 1])
    one_proc = BatchLayout.for_run(16, 1, DistContext(rank=1, world_size=2), n_shards=1)  # not divisible: re-laid
    assert (one_proc.n_shards, one_proc.shards) == (2, [1])
    assert "continuing with 2 shards" in capsys.readouterr().out


def test_shard_draws_depend_on_seed_step_and_shard_only_and_leave_the_global_stream_alone():
    layout = BatchLayout(global_batch=8, n_shards=2)
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    with distributed.shard_rng(layout, seed=0, step=5, shard=1, device=torch.device("cpu")):
        first = torch.randn(4)
    with distributed.shard_rng(layout, seed=0, step=5, shard=1, device=torch.device("cpu")):
        again = torch.randn(4)
    with distributed.shard_rng(layout, seed=0, step=5, shard=0, device=torch.device("cpu")):
        other = torch.randn(4)
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert torch.equal(torch.rand(3), expected_next)  # the global generator continues as if nothing had been drawn
    torch.manual_seed(7)
    with distributed.shard_rng(BatchLayout(8, 1), seed=0, step=5, shard=0, device=torch.device("cpu")):
        single = torch.rand(2)
    torch.manual_seed(7)
    assert torch.equal(single, torch.rand(2))  # one shard: the global stream, as a plain loop draws it


def test_one_process_collectives_are_identities():
    ctx = DistContext()
    assert distributed.broadcast("x", ctx) == "x" and distributed.mean_over_ranks({"a": 1.5}, ctx) == {"a": 1.5}
    distributed.check_same_on_all_ranks({"w": torch.ones(2)}, "weights", ctx)
    with pytest.raises(ValueError, match=r"RANK=2 must be in \[0, WORLD_SIZE=2\)"):
        distributed.world_from_env({"RANK": "2", "WORLD_SIZE": "2"})
    assert distributed.world_from_env({}) == (0, 0, 1)


# ------------------------------------------------------------------------------------------------------ augmentation
def _unique_images(b: int = 3, to: int = 2, c: int = 3, h: int = 8, w: int = 10) -> torch.Tensor:
    frame = torch.arange(b * c * h * w, dtype=torch.float32).reshape(b, 1, c, h, w) / (b * c * h * w)
    return frame.expand(b, to, c, h, w).clone()


def test_random_shift_moves_each_sample_by_whole_pixels_the_same_for_every_observation_step():
    images, pad = _unique_images(), 2
    torch.manual_seed(0)
    shifted = random_shift(images, pad)
    assert shifted.shape == images.shape and torch.equal(shifted[:, 0], shifted[:, 1])
    padded = torch.nn.functional.pad(images[:, 0], (pad,) * 4, mode="replicate")
    for b in range(images.shape[0]):
        matches = [(dy, dx) for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)
                   if torch.equal(shifted[b, 0], padded[b, :, dy:dy + 8, dx:dx + 10])]
        assert len(matches) == 1
    assert random_shift(images, 0) is images


def test_random_crop_resize_zooms_in_keeping_range_and_steps_consistent():
    images = _unique_images()
    torch.manual_seed(0)
    cropped = random_crop_resize(images, min_area=0.5)
    assert cropped.shape == images.shape and torch.equal(cropped[:, 0], cropped[:, 1])
    assert not torch.allclose(cropped, images) and cropped.min() >= 0 and cropped.max() <= 1
    # a crop spans less of the image: the spread of values within a sample shrinks (it is a zoom, not a blur)
    assert (cropped.amax(dim=(2, 3, 4)) - cropped.amin(dim=(2, 3, 4)) < images.amax(dim=(2, 3, 4))).all()
    assert random_crop_resize(images, 1.0) is images


def test_augment_batch_touches_only_image_keys():
    batch = {"observation.images.top": _unique_images(), "observation.state": torch.ones(3, 2, 2)}
    out = augment_batch(batch, ["observation.images.top"], shift=1, crop_scale=0.8)
    assert out["observation.state"] is batch["observation.state"]
    assert not torch.equal(out["observation.images.top"], batch["observation.images.top"])
    with pytest.raises(ValueError, match="observation.state.*expects \\(B, To, C, H, W\\)"):
        augment_batch(batch, ["observation.state"], shift=1, crop_scale=1.0)


# ------------------------------------------------------------------------------------------------ trainer settings
def _trainer(tmp_path, *overrides: str) -> Trainer:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"output_dir={tmp_path / 'run'}", f"dataset.root={tmp_path / 'demos'}",
                                          "logger.mode=disabled", "device=cpu", *overrides])
    run = OmegaConf.to_object(cfg)
    envs = EnvFactories(make_env=lambda: None, make_vector_env=lambda n: None, make_expert=lambda env: None, fps=10,
                        max_episode_steps=300, metric_keys=())
    return Trainer(run, OmegaConf.to_container(cfg, resolve=True), envs)


@pytest.mark.parametrize(("overrides", "message"), [
    (["optim.amp=fp16"], r"optim.amp=fp16 needs a CUDA device, but the run is on cpu"),
    (["optim.amp=bf16"], r"optim.amp=bf16 on cpu is refused by default .* optim.amp_on_cpu=true"),
])
def test_mixed_precision_the_device_cannot_run_is_refused_at_start(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        _trainer(tmp_path, *overrides)


@pytest.mark.parametrize(("override", "message"), [
    ("optim.amp=fp32", "optim.amp must be one of"),
    ("optim.grad_accum_steps=0", "optim.grad_accum_steps must be >= 1"),
    ("augment.random_shift=-1", "augment.random_shift must be >= 0"),
    ("augment.crop_scale=0", r"augment.crop_scale must be in \(0, 1\]"),
])
def test_bad_scale_settings_fail_at_start_naming_the_key(tmp_path, override, message):
    with pytest.raises(Exception, match=message):
        _trainer(tmp_path, override)


# ------------------------------------------------------------------------------------- the trainer on real demos
def _real_trainer(tmp_path, demos, *overrides: str) -> Trainer:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[
            f"output_dir={tmp_path / 'run'}", f"dataset.root={demos}", "dataset.n_episodes=2", "optim.steps=4",
            "optim.warmup_steps=1", "policy.mlp_hidden_dim=32", "policy.mlp_num_blocks=1", "logger.mode=disabled",
            "device=cpu", *overrides])
    run = OmegaConf.to_object(cfg)
    env_cfg = run.env
    envs = EnvFactories(
        make_env=lambda: sim.make_env(env_cfg, render_mode=None),
        make_vector_env=lambda n: sim.make_vector_env(env_cfg, n, asynchronous=False),
        make_expert=lambda env: sim.make_expert(env, env_cfg), fps=10, max_episode_steps=300,
        metric_keys=tuple(env_cfg.metric_keys))
    return Trainer(run, OmegaConf.to_container(cfg, resolve=True), envs)


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    """Two scripted-expert demonstrations of the default (state) env."""
    root = tmp_path_factory.mktemp("demos") / "expert"
    _real_trainer(tmp_path_factory.mktemp("collect"), root).prepare_dataset()
    return root


def test_accumulation_draws_the_same_global_batch_and_logs_the_mean_of_its_shard_losses(tmp_path, demos):
    plain = _real_trainer(tmp_path / "plain", demos, "optim.batch_size=16")
    plain.build(plain.prepare_dataset())
    accum = _real_trainer(tmp_path / "accum", demos, "optim.batch_size=8", "optim.grad_accum_steps=2")
    accum.build(accum.prepare_dataset())
    assert accum.layout.n_shards == 2 and plain.layout.n_shards == 1
    batch = accum.sample_batch(3)
    same = {k: torch.equal(batch[k], v) if isinstance(v, torch.Tensor) else batch[k] == v
            for k, v in plain.sample_batch(3).items()}
    assert same and all(same.values()), same
    accum.step = 3
    shard_losses = []
    for shard in (0, 1):  # what each micro-batch's forward gives, before the optimiser step changes the weights
        micro = {k: v[shard * 8:(shard + 1) * 8] for k, v in batch.items()}
        with distributed.shard_rng(accum.layout, 0, 3, shard, accum.device), torch.no_grad():
            accum.policy.train()
            shard_losses.append(accum.policy(micro)[0].item())
    logs = accum.train_step(batch)
    assert logs["loss"] == pytest.approx(sum(shard_losses) / 2, rel=1e-6)
    assert shard_losses[0] != pytest.approx(shard_losses[1], rel=1e-3)  # two distinct shards, not one counted twice


def test_augmentation_for_a_policy_without_images_is_refused(tmp_path, demos):
    trainer = _real_trainer(tmp_path, demos, "augment.random_shift=4")
    with pytest.raises(ValueError, match=r"augment.random_shift=4 .* the policy takes no image input"):
        trainer.build(trainer.prepare_dataset())


def test_bf16_on_cpu_when_asked_trains_float32_weights(tmp_path, demos):
    trainer = _real_trainer(tmp_path, demos, "optim.amp=bf16", "optim.amp_on_cpu=true", "optim.batch_size=8")
    trainer.build(trainer.prepare_dataset())
    before = [p.detach().clone() for p in trainer.policy.parameters()]
    logs = trainer.train_step(trainer.sample_batch(0))
    assert torch.isfinite(torch.tensor(logs["loss"])) and logs["loss"] > 0
    assert all(p.dtype == torch.float32 for p in trainer.policy.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.policy.parameters()))


@pytest.mark.slow
def test_compiled_training_gives_the_eager_losses(tmp_path, demos, monkeypatch):
    import torch._inductor.config

    monkeypatch.setattr(torch._inductor.config, "fallback_random", True)  # eager's noise draws, not inductor's own
    losses = {}
    for compiled in (False, True):
        trainer = _real_trainer(tmp_path / str(compiled), demos, f"compile={str(compiled).lower()}", "optim.batch_size=8")
        torch.manual_seed(0)
        trainer.build(trainer.prepare_dataset())
        losses[compiled] = []
        for step in range(3):
            trainer.step = step
            losses[compiled].append(trainer.train_step(trainer.sample_batch(step))["loss"])
        assert (trainer.train_module is not trainer.policy) == compiled
    assert losses[True] == pytest.approx(losses[False], rel=1e-4)
