"""Policy contract, normaliser, flow-matching policy (learning, queues, images) and EMA."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import pytest
import torch
from omegaconf import OmegaConf

from policies.base import Policy, PolicyConfig
from policies.common.vision import crop_images
from policies.ema import EMA
from policies.flow_matching import FlowMatchingConfig, FlowMatchingPolicy
from policies.normalize import Normalizer, image_chw
from policies.registry import make_policy, policy_class

LOW, HIGH = torch.tensor([0.25, -0.32]), torch.tensor([0.85, 0.32])  # PushT workspace (m)
GOAL = torch.tensor([0.55, 0.0])


def lowdim_features() -> dict[str, dict]:
    return {
        "observation.state": {"dtype": "float32", "shape": [2], "names": ["x", "y"]},
        "action": {"dtype": "float32", "shape": [2], "names": ["x", "y"]},
        "timestamp": {"dtype": "float32", "shape": [1], "names": None},  # LeRobot bookkeeping: ignored
    }


def workspace_stats() -> dict[str, dict]:
    box = {"min": LOW.tolist(), "max": HIGH.tolist(), "mean": ((LOW + HIGH) / 2).tolist(), "std": [0.17, 0.18]}
    return {"observation.state": dict(box), "action": dict(box)}


def small_config(**overrides) -> FlowMatchingConfig:
    base = {"mlp_hidden_dim": 128, "mlp_num_blocks": 2, "time_embed_dim": 64}
    return FlowMatchingConfig(**{**base, **overrides})


def sample_states(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    return LOW + (HIGH - LOW) * torch.rand(n, 2, generator=generator)


def linear_chunk(state: torch.Tensor, horizon: int) -> torch.Tensor:
    """Straight line from the state towards GOAL: a linear function of the state, (B, H, 2)."""
    frac = torch.linspace(0.0, 1.0, horizon)[None, :, None]
    return state[:, None, :] + frac * (GOAL - state)[:, None, :]


def train(policy: Policy, make_batch, steps: int, lr: float = 3e-3) -> list[float]:
    optimizer = torch.optim.AdamW(policy.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: 1.0 - 0.9 * i / steps)
    policy.train()
    losses = []
    for _ in range(steps):
        loss, logs = policy(make_batch())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(logs["loss"])
    return losses


# ------------------------------------------------------------------------------------------- contract
def test_subclass_without_name_fails_at_class_creation():
    with pytest.raises(TypeError, match="name"):

        class NoName(FlowMatchingPolicy):
            name = ""


def test_subclass_without_config_class_fails_at_class_creation():
    with pytest.raises(TypeError, match="config_class"):

        class NoConfig(Policy):
            name: ClassVar[str] = "no_config_test"

            def predict_action_chunk(self, obs, generator=None):
                raise NotImplementedError

            def forward(self, batch):
                raise NotImplementedError


def test_abstract_intermediate_class_needs_no_name():
    class Intermediate(Policy):
        def forward(self, batch):
            raise NotImplementedError

    with pytest.raises(TypeError, match="abstract.*predict_action_chunk"):
        Intermediate(PolicyConfig(), lowdim_features(), workspace_stats())


def test_registry_builds_by_name_and_names_unknown_policies():
    assert policy_class("flow_matching") is FlowMatchingPolicy
    policy = make_policy("flow_matching", lowdim_features(), workspace_stats(), {"mlp_hidden_dim": 64})
    assert isinstance(policy, FlowMatchingPolicy) and policy.config.mlp_hidden_dim == 64
    assert policy.input_keys == ["observation.state"]  # timestamp ignored
    with pytest.raises(KeyError, match="no_such_policy"):
        policy_class("no_such_policy")
    with pytest.raises(TypeError, match="not_a_field"):
        make_policy("flow_matching", lowdim_features(), workspace_stats(), {"not_a_field": 1})


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"n_action_steps": 17}, "n_action_steps"),
        ({"n_obs_steps": 0}, "n_obs_steps"),
        ({"network": "transformer"}, "network"),
        ({"time_sampling": "cosine"}, "time_sampling"),
        ({"network": "unet", "horizon": 10, "n_action_steps": 4}, "horizon"),
        ({"normalization_mapping": {"state": "zscore"}}, "normalization_mapping"),
        ({"crop_shape": (0, 8)}, "crop_shape"),
    ],
)
def test_config_rejects_bad_fields_by_name(overrides, field):
    with pytest.raises(ValueError, match=field):
        FlowMatchingConfig(**overrides)


def test_config_is_a_valid_hydra_structured_config():
    node = OmegaConf.structured(FlowMatchingConfig)
    config = FlowMatchingConfig(**OmegaConf.to_container(node))
    assert config == FlowMatchingConfig()
    assert config.action_delta_indices == list(range(16))  # as ChunkWindowDataset: actions t..t+H-1
    assert config.observation_delta_indices == [-1, 0]


# ------------------------------------------------------------------------------------------- normaliser
@pytest.mark.parametrize("mode", ["min_max", "mean_std"])
def test_normalizer_round_trip(mode):
    features = {"action": {"dtype": "float32", "shape": [2], "names": None}}
    stats = {"action": {"min": LOW, "max": HIGH, "mean": [0.5, 0.1], "std": [0.2, 0.3]}}
    norm = Normalizer(features, {"action": mode}, stats)
    x = sample_states(64).reshape(8, 8, 2)
    y = norm.normalize({"action": x, "other": x})["action"]
    torch.testing.assert_close(norm.unnormalize_action(y), x, atol=1e-6, rtol=0)
    if mode == "min_max":
        ends = norm.normalize({"action": torch.stack([LOW, HIGH])})["action"]
        torch.testing.assert_close(ends, torch.tensor([[-1.0, -1.0], [1.0, 1.0]]))
    else:
        torch.testing.assert_close(y, (x - torch.tensor([0.5, 0.1])) / torch.tensor([0.2, 0.3]))


def test_normalizer_zero_range_does_not_divide_by_zero():
    features = {"observation.state": {"dtype": "float32", "shape": [2], "names": None}}
    stats = {"observation.state": {"min": [0.3, 1.0], "max": [0.3, 2.0], "mean": [0.3, 1.5], "std": [0.0, 0.5]}}
    for mode in ("min_max", "mean_std"):
        norm = Normalizer(features, {"observation.state": mode}, stats)
        x = torch.tensor([[0.3, 1.0], [0.3, 2.0]])
        y = norm.normalize({"observation.state": x})["observation.state"]
        assert torch.isfinite(y).all()
        assert torch.equal(y[:, 0], torch.zeros(2))  # the constant dimension maps to 0
        torch.testing.assert_close(norm.unnormalize("observation.state", y), x)


def test_normalizer_missing_stats_name_the_key():
    features = lowdim_features()
    with pytest.raises(KeyError, match="observation.state"):
        Normalizer(features, {"observation.state": "min_max"}, {"action": workspace_stats()["action"]})
    with pytest.raises(KeyError, match="'std'"):
        Normalizer(features, {"action": "mean_std"}, {"action": {"mean": [0.0, 0.0]}})


def test_normalizer_placeholders_refuse_use_until_a_state_dict_fills_them():
    features = lowdim_features()
    modes = {"observation.state": "min_max", "action": "min_max"}
    trained = Normalizer(features, modes, workspace_stats())
    empty = Normalizer(features, modes, stats=None)
    x = {"action": sample_states(4)}
    with pytest.raises(RuntimeError, match="placeholder"):
        empty.normalize(x)
    empty.load_state_dict(trained.state_dict())
    assert "stats.observation__state.min" in trained.state_dict()
    torch.testing.assert_close(empty.normalize(x)["action"], trained.normalize(x)["action"])


def test_image_feature_layout_is_read_from_names_or_shape():
    assert image_chw("cam", {"shape": [96, 64, 3], "names": ["height", "width", "channels"]}) == (3, 96, 64)
    assert image_chw("cam", {"shape": [3, 96, 64], "names": None}) == (3, 96, 64)
    with pytest.raises(ValueError, match="cam"):
        image_chw("cam", {"shape": [96, 64], "names": None})


# ------------------------------------------------------------------------------------------- flow matching
def test_flow_matching_learns_a_linear_conditional_chunk():
    torch.manual_seed(0)
    config = small_config()
    policy = FlowMatchingPolicy(config, lowdim_features(), workspace_stats())

    def make_batch():
        state = sample_states(128)
        history = torch.stack([state + 0.01 * torch.randn_like(state), state], dim=1)
        return {"observation.state": history, "action": linear_chunk(state, config.horizon)}

    losses = train(policy, make_batch, steps=600)
    start, end = sum(losses[:10]) / 10, sum(losses[-20:]) / 20
    assert end < 0.05 * start, (start, end)

    policy.eval()
    test_state = sample_states(256, torch.Generator().manual_seed(1))
    obs = {"observation.state": torch.stack([test_state, test_state], dim=1)}
    chunk = policy.predict_action_chunk(obs, generator=torch.Generator().manual_seed(2))
    error = (chunk - linear_chunk(test_state, config.horizon)).abs()  # metres
    assert chunk.shape == (256, config.horizon, 2)
    worst_per_sample = error.amax(dim=(1, 2))
    assert error.mean() < 0.01 and torch.quantile(worst_per_sample, 0.9) < 0.03, (error.mean(), worst_per_sample)


def test_flow_matching_keeps_the_modes_of_a_bimodal_target_apart():
    torch.manual_seed(0)
    config = small_config(time_sampling="logit_normal")
    policy = FlowMatchingPolicy(config, lowdim_features(), workspace_stats())
    offset = torch.tensor([0.0, 0.2])  # go left or right of the state, 0.2 m, with equal probability

    def targets(state: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
        return (state + sign[:, None] * offset)[:, None, :].expand(-1, config.horizon, -1)

    def make_batch():
        state = LOW + (HIGH - LOW) * (0.3 + 0.4 * torch.rand(128, 2))  # keep both modes inside the workspace
        sign = torch.randint(0, 2, (128,)).float() * 2 - 1
        return {"observation.state": torch.stack([state, state], dim=1), "action": targets(state, sign)}

    train(policy, make_batch, steps=1000)
    policy.eval()
    state = ((LOW + HIGH) / 2).expand(200, 2)
    chunk = policy.predict_action_chunk({"observation.state": torch.stack([state, state], dim=1)},
                                        generator=torch.Generator().manual_seed(0))
    dist = torch.stack([(chunk - targets(state, torch.full((200,), s))).norm(dim=-1).mean(-1) for s in (-1.0, 1.0)])
    nearest, mode = dist.min(dim=0)
    assert (nearest < 0.03).float().mean() > 0.8  # samples land on a mode (averaging would be 0.2 m off both)
    assert 0.25 < mode.float().mean() < 0.75  # and both modes are used


def test_predictions_are_deterministic_given_a_generator():
    policy = FlowMatchingPolicy(small_config(), lowdim_features(), workspace_stats()).eval()
    obs = {"observation.state": sample_states(3).unsqueeze(1).expand(-1, 2, -1)}
    first = policy.predict_action_chunk(obs, generator=torch.Generator().manual_seed(7))
    second = policy.predict_action_chunk(obs, generator=torch.Generator().manual_seed(7))
    other = policy.predict_action_chunk(obs, generator=torch.Generator().manual_seed(8))
    assert torch.equal(first, second) and not torch.equal(first, other)


def test_select_action_replans_once_every_n_action_steps_and_reset_clears():
    config = small_config(n_obs_steps=2, horizon=16, n_action_steps=8)
    policy = FlowMatchingPolicy(config, lowdim_features(), workspace_stats()).eval()
    calls: list[tuple[dict, torch.Tensor]] = []
    predict = policy.predict_action_chunk

    def spy(obs, generator=None):
        chunk = predict(obs, generator=generator)
        calls.append((obs, chunk))
        return chunk

    policy.predict_action_chunk = spy
    states = [torch.full((2, 2), 0.3 + 0.01 * i) for i in range(20)]
    actions = [policy.select_action({"observation.state": s}) for s in states[:16]]
    assert len(calls) == 2 and all(a.shape == (2, 2) for a in actions)
    first_obs, first_chunk = calls[0]
    assert torch.equal(first_obs["observation.state"], torch.stack([states[0], states[0]], dim=1))  # padded
    assert torch.equal(calls[1][0]["observation.state"], torch.stack([states[7], states[8]], dim=1))
    assert torch.equal(torch.stack(actions[:8], dim=1), first_chunk[:, :8])  # the first Ta actions, in order
    policy.select_action({"observation.state": states[16]})
    assert len(calls) == 3
    policy.reset()
    policy.select_action({"observation.state": states[17]})
    assert len(calls) == 4
    assert torch.equal(calls[3][0]["observation.state"], torch.stack([states[17], states[17]], dim=1))
    with pytest.raises(KeyError, match="observation.state"):
        policy.select_action({"observation.environment_state": states[0]})


def image_features(cameras: tuple[str, ...]) -> dict[str, dict]:
    features = lowdim_features()
    for cam in cameras:
        features[f"observation.images.{cam}"] = {
            "dtype": "video", "shape": [32, 32, 3], "names": ["height", "width", "channels"]
        }
    return features


@pytest.mark.parametrize("network", ["mlp", "unet"])
def test_image_conditioned_policy_trains_end_to_end(network):
    torch.manual_seed(0)
    cameras = ("top", "wrist")
    config = small_config(network=network, unet_down_dims=(16, 32), vision_channels=(16, 16),
                          spatial_softmax_num_keypoints=8, image_feature_dim=16, crop_shape=(28, 28))
    policy = FlowMatchingPolicy(config, image_features(cameras), workspace_stats())
    batch = {f"observation.images.{c}": torch.rand(4, 2, 3, 32, 32) for c in cameras}
    batch["observation.state"] = sample_states(8).reshape(4, 2, 2)
    batch["action"] = sample_states(64).reshape(4, 16, 2)
    batch["action_is_pad"] = torch.zeros(4, 16, dtype=torch.bool)
    loss, logs = policy(batch)
    loss.backward()
    assert torch.isfinite(loss) and logs["loss"] == pytest.approx(loss.item())
    for cam in cameras:
        grads = [p.grad for p in policy.image_encoders[f"observation__images__{cam}"].parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        assert sum(g.abs().sum() for g in grads) > 0

    policy.eval()
    obs = {k: v for k, v in batch.items() if k.startswith("observation.")}
    out = policy.predict_action_chunk(obs, generator=torch.Generator().manual_seed(0))
    obs["observation.images.top"] = 1.0 - obs["observation.images.top"]
    changed = policy.predict_action_chunk(obs, generator=torch.Generator().manual_seed(0))
    assert out.shape == (4, 16, 2) and not torch.allclose(out, changed)  # the images condition the actions


def test_select_action_accepts_uint8_hwc_images():
    config = small_config(vision_channels=(16, 16), spatial_softmax_num_keypoints=8, image_feature_dim=16)
    policy = FlowMatchingPolicy(config, image_features(("top",)), workspace_stats()).eval()
    image = torch.randint(0, 256, (2, 32, 32, 3), dtype=torch.uint8)
    state = sample_states(2)
    raw = policy.select_action({"observation.images.top": image, "observation.state": state},
                               generator=torch.Generator().manual_seed(0))
    policy.reset()
    chw = image.permute(0, 3, 1, 2).float() / 255
    ref = policy.select_action({"observation.images.top": chw, "observation.state": state},
                               generator=torch.Generator().manual_seed(0))
    assert torch.equal(raw, ref)


def test_padded_actions_get_no_loss_gradient():
    policy = FlowMatchingPolicy(small_config(), lowdim_features(), workspace_stats())
    state = sample_states(4)
    batch = {"observation.state": torch.stack([state, state], 1), "action": linear_chunk(state, 16),
             "action_is_pad": torch.arange(16).expand(4, 16) >= 10}
    outputs = []
    policy.net.register_forward_hook(lambda _module, _inputs, out: outputs.append(out) or out.retain_grad())
    loss, _ = policy(batch)
    loss.backward()
    grad = outputs[0].grad  # d loss / d predicted velocity, (B, H, A)
    assert torch.equal(grad[:, 10:], torch.zeros_like(grad[:, 10:]))
    assert (grad[:, :10] != 0).all()


def test_depth_inputs_and_bad_batches_raise_clear_errors():
    features = dict(lowdim_features(), **{"observation.depth.top": {"dtype": "float32", "shape": [8, 8], "names": None}})
    with pytest.raises(ValueError, match="observation.depth.top"):
        FlowMatchingPolicy(small_config(), features, workspace_stats())
    policy = FlowMatchingPolicy(small_config(observation_keys=("observation.state",)), features, workspace_stats())
    assert policy.input_keys == ["observation.state"]
    with pytest.raises(ValueError, match="observation.state"):
        policy({"observation.state": sample_states(4), "action": torch.zeros(4, 16, 2)})
    with pytest.raises(ValueError, match="'action'"):
        policy({"observation.state": torch.zeros(4, 2, 2), "action": torch.zeros(4, 8, 2)})


# ------------------------------------------------------------------------------------------- EMA
def test_ema_decay_schedule_matches_diffusion_policy_formula():
    ema = EMA(torch.nn.Linear(2, 2), decay=0.999, power=0.75)
    assert ema.get_decay(0) == 0.0 and ema.get_decay(1) == 0.0
    assert ema.get_decay(101) == pytest.approx(1 - 101 ** -0.75)
    assert ema.get_decay(10**6) == 0.999  # capped at the final decay
    with pytest.raises(ValueError, match="decay"):
        EMA(torch.nn.Linear(2, 2), decay=1.0)


def test_ema_averages_and_applied_swaps_weights_back():
    model = torch.nn.Linear(3, 1)
    ema = EMA(model, decay=0.5, power=1.0)
    for value in (1.0, 2.0, 3.0, 4.0):
        with torch.no_grad():
            model.weight.fill_(value)
        ema.step(model)
    # decays: 0, 0, then min(1 - 2 ** -1, 0.5) = 0.5 twice -> ((2 * 0.5 + 3 * 0.5) * 0.5 + 4 * 0.5) = 3.25
    with ema.applied(model):
        assert torch.allclose(model.weight, torch.full((1, 3), 3.25))
    assert torch.equal(model.weight, torch.full((1, 3), 4.0))
    restored = EMA(model, decay=0.5, power=1.0)
    restored.load_state_dict(ema.state_dict())
    assert restored.num_updates == 4 and torch.equal(restored.shadow["weight"], ema.shadow["weight"])
    with pytest.raises(ValueError, match="missing"):
        ema.step(torch.nn.Linear(3, 2, bias=False))


def test_policy_config_round_trips_through_a_dict():
    config = small_config(crop_shape=(28, 28), observation_keys=("observation.state",))
    assert FlowMatchingConfig(**dataclasses.asdict(config)) == config


def test_random_crop_takes_windows_of_the_image():
    images = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).reshape(2, 1, 6, 6)
    crops = crop_images(images, (4, 4), random=True)
    assert crops.shape == (2, 1, 4, 4)
    for i in range(2):
        windows = images[i, 0].unfold(0, 4, 1).unfold(1, 4, 1).reshape(-1, 4, 4)
        assert any(torch.equal(crops[i, 0], w) for w in windows)
    assert torch.equal(crop_images(images, (4, 4), random=False), images[:, :, 1:5, 1:5])


def test_relative_actions_resolve_small_offsets_finer_than_absolute_ones():
    """Offsets from the state, normalised per chunk index, give millimetre precision where absolute actions don't."""
    horizon = 8
    step = torch.tensor([0.004, -0.002])  # a slow push: 4.5 mm per step

    def target(state: torch.Tensor) -> torch.Tensor:
        return state[:, None, :] + step * torch.arange(1, horizon + 1)[None, :, None]

    def make_batch(g=None):
        state = sample_states(128, g)
        return {"observation.state": state[:, None, :], "action": target(state)}

    offsets = target(torch.zeros(1, 2))[0]
    relative_stats = {
        "observation.state": workspace_stats()["observation.state"],
        "action": {"min": (offsets - 0.01).tolist(), "max": (offsets + 0.01).tolist()},
    }
    errors = {}
    for name, key, stats in (("absolute", None, workspace_stats()), ("relative", "observation.state", relative_stats)):
        torch.manual_seed(0)
        config = small_config(n_obs_steps=1, horizon=horizon, n_action_steps=4, relative_action_key=key)
        policy = FlowMatchingPolicy(config, lowdim_features(), stats)
        train(policy, make_batch, steps=300)
        policy.eval()
        batch = make_batch(torch.Generator().manual_seed(3))
        chunk = policy.predict_action_chunk(batch, generator=torch.Generator().manual_seed(4))
        errors[name] = (chunk - batch["action"]).norm(dim=-1).mean().item()
    assert errors["relative"] < 0.002, errors
    assert errors["relative"] < 0.5 * errors["absolute"], errors
    with pytest.raises(ValueError, match="relative_action_key"):
        FlowMatchingPolicy(small_config(relative_action_key="observation.nope"), lowdim_features(), workspace_stats())
