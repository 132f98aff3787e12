"""Evaluator, Wilson interval and eval_info.json, on a small self-contained 2-D point-reaching env."""

from __future__ import annotations

import json
from functools import partial
from typing import ClassVar

import av
import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode
from scipy.stats import binomtest

from policies.evaluation import EvalEnvs, Evaluator, obs_to_torch, save_eval_info
from policies.stats_utils import wilson_interval
from policies.train_config import EvalConfig, EvalRunConfig

IMAGE = 16  # rendered frame is IMAGE x IMAGE pixels
SPEED = 0.25  # max point displacement per step (m)


class PointReachEnv(gym.Env):
    """A point in [-1, 1]^2 moves towards the commanded target xy (at most SPEED per step) to reach a random goal.

    Success when within 0.1 m of the goal (the episode terminates); ``coverage`` = 1 - distance / 2.83.
    """

    metadata: ClassVar[dict] = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, render_mode: str | None = "rgb_array"):
        self.render_mode = render_mode
        box = partial(spaces.Box, -1.0, 1.0, dtype=np.float32)
        self.observation_space = spaces.Dict(
            {
                "observation.state": box(shape=(2,)),
                "observation.environment_state": box(shape=(2,)),
                "observation.images.top": spaces.Box(0, 255, (IMAGE, IMAGE, 3), np.uint8),
            }
        )
        self.action_space = box(shape=(2,))

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.pos = self.np_random.uniform(-1, 1, 2)
        self.goal = self.np_random.uniform(-1, 1, 2)
        return self._obs(), self._info()

    def step(self, action):
        delta = np.clip(action, -1, 1) - self.pos
        self.pos = self.pos + delta * min(1.0, SPEED / max(np.linalg.norm(delta), 1e-9))
        info = self._info()
        return self._obs(), float(info["coverage"]), info["is_success"], False, info

    def render(self):
        frame = np.zeros((IMAGE, IMAGE, 3), np.uint8)
        for xy, colour in ((self.goal, (255, 0, 0)), (self.pos, (255, 255, 255))):
            col, row = np.clip(((xy + 1) / 2 * IMAGE).astype(int), 0, IMAGE - 1)
            frame[row, col] = colour
        return frame

    def _obs(self):
        return {
            "observation.state": self.pos.astype(np.float32),
            "observation.environment_state": self.goal.astype(np.float32),
            "observation.images.top": self.render(),
        }

    def _info(self):
        dist = float(np.linalg.norm(self.pos - self.goal))
        return {"is_success": dist < 0.1, "coverage": 1.0 - dist / (2 * np.sqrt(2))}


gym.register("test/PointReach-v0", entry_point=PointReachEnv, max_episode_steps=20)


class HalfPlanePolicy:
    """Goes to the goal only when the goal is in the right half (x > 0); else stays put, plus optional noise."""

    def __init__(self, noise: float = 0.0):
        self.noise = noise
        self.resets = 0

    def reset(self) -> None:
        self.resets += 1

    def select_action(self, obs: dict) -> torch.Tensor:
        assert not torch.is_grad_enabled()
        image = obs["observation.images.top"]
        assert image.dtype == torch.float32 and image.shape[1:] == (3, IMAGE, IMAGE) and float(image.max()) <= 1.0
        state, goal = obs["observation.state"], obs["observation.environment_state"]
        action = torch.where(goal[:, :1] > 0, goal, state)
        return action + self.noise * torch.randn_like(action)


def make_envs(num_envs: int, mode: AutoresetMode = AutoresetMode.NEXT_STEP, asynchronous: bool = False):
    """A vector env factory for the evaluator."""
    fns = [lambda: gym.make("test/PointReach-v0") for _ in range(num_envs)]
    if asynchronous:
        return lambda: gym.vector.AsyncVectorEnv(fns, autoreset_mode=mode, context="fork")
    return lambda: gym.vector.SyncVectorEnv(fns, autoreset_mode=mode)


def reference_episode(seed: int, max_steps: int) -> dict:
    """The same episode, run in a single non-vector env with a plain loop (the reference)."""
    env, policy = gym.make("test/PointReach-v0"), HalfPlanePolicy()
    obs, _ = env.reset(seed=seed)
    best = -np.inf
    for length in range(1, max_steps + 1):  # noqa: B007  (the last value is returned)
        batch = obs_to_torch({k: np.asarray(v)[None] for k, v in obs.items()})
        with torch.no_grad():
            action = policy.select_action(batch)[0].numpy()
        obs, _, terminated, truncated, info = env.step(action)
        best = max(best, info["coverage"])
        if terminated or truncated:
            break
    return {"seed": seed, "success": bool(info["is_success"]), "length": length,
            "metrics": {"coverage": info["coverage"], "max_coverage": best}}


@pytest.mark.parametrize("successes,n", [(0, 1), (0, 10), (3, 10), (10, 10), (41, 50), (500, 1000)])
@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_wilson_interval_matches_scipy(successes, n, confidence):
    ci = binomtest(successes, n).proportion_ci(confidence_level=confidence, method="wilson")
    assert wilson_interval(successes, n, confidence) == pytest.approx((ci.low, ci.high), abs=1e-12)


@pytest.mark.parametrize(("args", "field"), [((1, 0), "n must be"), ((-1, 5), "successes must be"),
                                             ((6, 5), "successes must be"), ((1, 5, 1.0), "confidence must be"),
                                             ((1, 5, 0.0), "confidence must be")])
def test_wilson_interval_rejects_bad_input(args, field):
    with pytest.raises(ValueError, match=field):
        wilson_interval(*args)
    with pytest.raises(TypeError, match="successes"):
        wilson_interval(1.5, 5)


@pytest.mark.parametrize(
    "num_envs,mode,asynchronous",
    [(1, AutoresetMode.NEXT_STEP, False), (4, AutoresetMode.NEXT_STEP, False),
     (4, AutoresetMode.SAME_STEP, False), (3, AutoresetMode.NEXT_STEP, True)],
)
def test_episodes_match_a_plain_single_env_loop(num_envs, mode, asynchronous):
    """Per-episode results do not depend on batching, padding, autoreset mode or sync/async."""
    n_episodes, max_steps = 10, 12  # 12 < the env's own 20-step limit: some episodes end by the cap
    evaluator = Evaluator(make_envs(num_envs, mode, asynchronous), n_episodes=n_episodes, start_seed=1000,
                          max_steps=max_steps, metric_keys=["coverage"], progress=False)
    policy = HalfPlanePolicy()
    result = evaluator.run(policy)
    expected = [reference_episode(1000 + i, max_steps) for i in range(n_episodes)]
    assert result["episodes"] == expected
    assert policy.resets == -(-n_episodes // num_envs)  # reset once per batch
    successes = sum(e["success"] for e in expected)
    assert 0 < successes < n_episodes  # the set holds both outcomes, so the check above has teeth
    assert result["success_rate"] == successes / n_episodes
    assert (result["success_ci_low"], result["success_ci_high"]) == wilson_interval(successes, n_episodes)
    assert result["n_episodes"] == n_episodes
    assert result["mean_episode_length"] == pytest.approx(np.mean([e["length"] for e in expected]))
    assert result["mean_coverage"] == pytest.approx(np.mean([e["metrics"]["coverage"] for e in expected]))
    assert result["max_coverage"] == pytest.approx(np.mean([e["metrics"]["max_coverage"] for e in expected]))
    assert max(e["length"] for e in expected) == max_steps > min(e["length"] for e in expected)


class FixedLengthEnv(gym.Env):
    """Ends each episode after a set number of steps: ``(2 * seed) % 3 + 1`` after a seeded reset, 2 after an
    unseeded one (a vector env's autoreset), so an unseeded restart shows in the episode length."""

    observation_space = spaces.Dict({"observation.state": spaces.Box(-1.0, 1.0, (1,), np.float32)})
    action_space = spaces.Box(-1.0, 1.0, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.left = 2 if seed is None else (2 * seed) % 3 + 1
        return {"observation.state": np.zeros(1, np.float32)}, {}

    def step(self, action):
        self.left -= 1
        return {"observation.state": np.zeros(1, np.float32)}, 0.0, self.left == 0, False, {"is_success": self.left == 0}


class ZeroPolicy:
    """Always the zero action."""

    def reset(self) -> None:
        """Memoryless."""

    def select_action(self, obs: dict) -> torch.Tensor:
        return torch.zeros(len(obs["observation.state"]), 1)


def test_async_env_without_shared_memory_restarts_each_batch_from_its_seeds():
    """Batch 1: seed 0 ends at step 1, restarts unseeded and ends again at step 4, the step that clears pending
    autoresets after seed 1 ended at step 3; that sub-env must still start batch 2 from seed 2, not restart."""
    fns = [FixedLengthEnv for _ in range(2)]
    evaluator = Evaluator(lambda: gym.vector.AsyncVectorEnv(fns, shared_memory=False, context="fork"), n_episodes=4,
                          start_seed=0, max_steps=5, progress=False)
    result = evaluator.run(ZeroPolicy())
    assert [e["length"] for e in result["episodes"]] == [(2 * seed) % 3 + 1 for seed in range(4)]


def test_same_seeds_give_identical_results_with_a_stochastic_policy():
    kwargs = {"n_episodes": 6, "start_seed": 7, "max_steps": 15, "metric_keys": ["coverage"], "progress": False}
    torch.manual_seed(123)
    outside = torch.rand(1)
    runs = [Evaluator(make_envs(3), **kwargs).run(HalfPlanePolicy(noise=0.2)) for _ in range(2)]
    assert runs[0] == runs[1]
    torch.manual_seed(123)
    assert torch.equal(torch.rand(1), outside)  # the caller's RNG stream is unchanged by run()
    other = Evaluator(make_envs(3), **{**kwargs, "start_seed": 8}).run(HalfPlanePolicy(noise=0.2))
    assert [e["seed"] for e in other["episodes"]] == list(range(8, 14))
    assert other["episodes"][0] != runs[0]["episodes"][1]  # seed 8: same env start, different policy noise


@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP])
def test_videos_film_the_first_episodes(tmp_path, mode):
    evaluator = Evaluator(make_envs(2, mode), n_episodes=5, start_seed=50, max_steps=20, n_videos=3,
                          video_dir=tmp_path / "videos", fps=10, progress=False)
    result = evaluator.run(HalfPlanePolicy())
    assert result["video_paths"] == [str(tmp_path / "videos" / f"episode_{s}.mp4") for s in (50, 51, 52)]
    assert sorted(p.name for p in (tmp_path / "videos").iterdir()) == ["episode_50.mp4", "episode_51.mp4",
                                                                     "episode_52.mp4"]
    for path, episode in zip(result["video_paths"], result["episodes"]):
        with av.open(path) as container:
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
            rate = container.streams.video[0].average_rate
        # initial state + one frame per step; SAME_STEP has already reset the sub-env when the terminal frame is due
        assert len(frames) == episode["length"] + (1 if mode is AutoresetMode.NEXT_STEP else 0)
        assert frames[0].shape == (IMAGE, IMAGE, 3) and rate == 10


def test_from_config_builds_the_evaluator_a_config_describes(tmp_path):
    made = []

    def make_vector_env(n: int) -> gym.vector.VectorEnv:
        made.append(n)
        return make_envs(n)()

    envs = EvalEnvs(make_vector_env, max_episode_steps=12, fps=5, metric_keys=("coverage",))
    cfg = EvalConfig(n_episodes=5, start_seed=40, n_envs=2, n_videos=1)
    evaluator = Evaluator.from_config(cfg, envs, output_dir=tmp_path / "final", progress=False)
    assert (evaluator.n_episodes, evaluator.seeds, evaluator.max_steps, evaluator.n_videos, evaluator.fps,
            evaluator.metric_keys, evaluator.video_dir) == (5, [40, 41, 42, 43, 44], 12, 1, 5, ("coverage",),
                                                            tmp_path / "final" / "videos")
    result = evaluator.run(HalfPlanePolicy())
    direct = Evaluator(make_envs(2), n_episodes=5, start_seed=40, max_steps=12, metric_keys=["coverage"],
                       progress=False).run(HalfPlanePolicy())
    assert made == [2] and result["episodes"] == direct["episodes"]
    assert result["video_paths"] == [str(tmp_path / "final" / "videos" / "episode_40.mp4")]
    # fewer episodes than envs (a short evaluation during training): only as many envs as episodes
    Evaluator.from_config(cfg, envs, output_dir=tmp_path, n_episodes=1, progress=False).run(HalfPlanePolicy())
    assert made == [2, 1]
    run_cfg = EvalRunConfig(policy_path="p", n_episodes=3, start_seed=7, n_envs=4, n_videos=0, output_dir="o")
    assert Evaluator.from_config(run_cfg, envs).seeds == [7, 8, 9]  # eval.py's config works the same
    with pytest.raises(ValueError, match="video_dir is required"):
        Evaluator.from_config(cfg, envs)  # videos but nowhere to write them


def test_save_eval_info_round_trip(tmp_path):
    result = Evaluator(make_envs(2), n_episodes=3, start_seed=0, max_steps=5, metric_keys=["coverage"],
                       progress=False).run(HalfPlanePolicy())
    path = save_eval_info(tmp_path / "run" / "eval_info.json", {**result, "step": np.int64(5)})
    assert json.loads(path.read_text()) == {**result, "step": 5}
    assert [p.name for p in path.parent.iterdir()] == ["eval_info.json"]  # no temp file left behind
    with pytest.raises(ValueError, match="eval_info.json"):
        save_eval_info(path, {"success_rate": float("nan")})
    assert json.loads(path.read_text())["n_episodes"] == 3  # a failed write leaves the old file intact


def test_max_steps_defaults_to_the_env_time_limit():
    result = Evaluator(make_envs(4), n_episodes=8, start_seed=1000, metric_keys=["coverage"], progress=False).run(
        HalfPlanePolicy()
    )
    assert result["episodes"] == [reference_episode(1000 + i, max_steps=10_000) for i in range(8)]
    assert max(e["length"] for e in result["episodes"]) == 20  # PointReach-v0's max_episode_steps
    no_limit = [lambda: gym.make("test/PointReach-v0", max_episode_steps=None).unwrapped]
    with pytest.raises(ValueError, match="max_steps"):
        Evaluator(lambda: gym.vector.SyncVectorEnv(no_limit), n_episodes=1, start_seed=0, progress=False).run(
            HalfPlanePolicy()
        )


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="n_episodes"):
        Evaluator(make_envs(1), n_episodes=0, start_seed=0, max_steps=5)
    with pytest.raises(ValueError, match="video_dir"):
        Evaluator(make_envs(1), n_episodes=2, start_seed=0, max_steps=5, n_videos=1)
    with pytest.raises(ValueError, match="n_videos"):
        Evaluator(make_envs(1), n_episodes=2, start_seed=0, max_steps=5, n_videos=3, video_dir=tmp_path)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            Evaluator(make_envs(1), n_episodes=2, start_seed=0, max_steps=5, device="cuda")
    with pytest.raises(KeyError, match="'success_area'.*seed 0"):
        Evaluator(make_envs(1), n_episodes=1, start_seed=0, max_steps=5, metric_keys=["success_area"],
                  progress=False).run(HalfPlanePolicy())
    with pytest.raises(ValueError, match="DISABLED"):
        Evaluator(make_envs(1, AutoresetMode.DISABLED), n_episodes=1, start_seed=0, max_steps=5,
                  progress=False).run(HalfPlanePolicy())
    wrong = HalfPlanePolicy()
    wrong.select_action = lambda obs: torch.zeros(1, 3)
    with pytest.raises(ValueError, match=r"select_action returned shape \(1, 3\)"):
        Evaluator(make_envs(1), n_episodes=1, start_seed=0, max_steps=5, progress=False).run(wrong)


def test_module_policy_is_evaluated_in_eval_mode_and_restored():
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.dropout = torch.nn.Dropout(0.5)
            self.modes = []

        def reset(self):
            pass

        def select_action(self, obs):
            self.modes.append(self.training)
            return self.dropout(obs["observation.environment_state"])

    net = Net().train()
    Evaluator(make_envs(2), n_episodes=2, start_seed=0, max_steps=3, device=torch.device("cpu"), progress=False).run(net)
    assert net.modes and not any(net.modes) and net.training
