"""A twin following a simulated "reality" in lock-step, without cameras or clocks: synthetic episode logs with known
true physics (for testing identification, and for showing what it recovers).

The reality is a second :class:`sim.pusht_env.PushTEnv` with its own friction and mass scales and its own pushes
(:class:`sim.disturbance.PushSchedule`); its arm is driven at the twin's joint targets, and at every measurement of
the twin (``twin.rate_hz``) it is stepped up to the twin's time and its true block pose (plus optional noise) is what
the twin's estimator reports. The twin corrects itself as when deployed (``pose`` correction), and an
:class:`sim.episode_log.EpisodeRecorder` logs every 20 ms.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import mujoco
import numpy as np

from perception.protocol import Estimate, Prior
from sim.disturbance import PushSchedule
from sim.episode_log import EpisodeRecorder
from sim.expert import PushTExpert
from sim.pusht_config import DomainRandomizationConfig, PushTConfig
from sim.pusht_env import PushTEnv
from sim.twin import DigitalTwin, TwinConfig, following_env


@dataclass
class SyntheticReality:
    """The true physics of a lock-step reality (factors on the MJCF's nominal values; N, s)."""

    friction_scale: float = 0.7
    block_mass_scale: float = 1.3
    push_force: float = 1.5  # N; 0: no pushes
    push_interval: tuple[float, float] = (2.0, 4.0)  # s between pushes (uniform)
    push_duration: float = 0.1  # s
    pose_noise: float = 0.0  # m (and rad / 10) std of noise on the measured pose

    def __post_init__(self) -> None:
        if self.friction_scale <= 0 or self.block_mass_scale <= 0 or self.push_force < 0 or self.pose_noise < 0:
            raise ValueError(f"SyntheticReality needs friction_scale, block_mass_scale > 0 and push_force, pose_noise "
                             f">= 0; got {self.friction_scale}, {self.block_mass_scale}, {self.push_force}, "
                             f"{self.pose_noise}")


class _RealityEstimator:
    """The twin's estimator in lock-step: steps the reality up to the twin's time and reports its block pose."""

    def __init__(self, reality: PushTEnv, twin_env: PushTEnv, truth: SyntheticReality, seed: int) -> None:
        self.reality, self.twin_env, self.truth = reality, twin_env, truth
        self.rng = np.random.default_rng([seed, 11])
        self.pushes = (PushSchedule(np.random.default_rng([seed, 7]), truth.push_interval, truth.push_force,
                                    truth.push_duration) if truth.push_force > 0 else None)
        self._block = reality.model.body("block").id

    def reset(self) -> None:
        """Nothing to forget."""

    def update(self, frames: list, prior: Prior) -> Estimate:
        """Advances the reality to ``prior.time`` and returns its (noisy) block pose and velocity."""
        reality, data = self.reality, self.reality.data
        data.ctrl[:] = self.twin_env.data.ctrl
        while data.time < prior.time - 1e-9:
            if self.pushes is not None:
                data.xfrc_applied[self._block, :2] = self.pushes.force_at(data.time)
            mujoco.mj_step(reality.model, data)
        noise = self.truth.pose_noise * self.rng.normal(size=3) * np.array([1.0, 1.0, 0.1])
        qvel = data.qvel[reality.block_dof]
        return Estimate(pose=reality.block_pose + noise, time=float(data.time),
                        velocity=np.array([qvel[0], qvel[1], qvel[5]]))


def lockstep_episode(truth: SyntheticReality, seed: int, n_steps: int, path: str | Path,
                     config: PushTConfig | None = None) -> dict[str, float]:
    """Runs the scripted expert for ``n_steps`` control steps in a twin that follows ``truth`` in lock-step, writes
    the episode log to ``path``, and returns the episode's true figures (``n_pushes``, ``duration_s``)."""
    config = config or PushTConfig()
    randomization = DomainRandomizationConfig(friction_scale=(truth.friction_scale,) * 2,
                                              block_mass_scale=(truth.block_mass_scale,) * 2)
    reality = PushTEnv(replace(config, randomization=randomization), render_mode=None)
    twin_env = following_env(replace(config, max_episode_steps=n_steps + 1))
    estimator = _RealityEstimator(reality, twin_env, truth, seed)
    twin = DigitalTwin(twin_env, TwinConfig(correction="pose"), estimator=estimator)
    obs, _ = twin_env.reset(seed=seed)
    reality.reset(seed=seed)
    expert = PushTExpert.for_env(twin_env, seed=seed)
    twin.attach(lambda: [])
    recorder = EpisodeRecorder(twin)
    recorder.attach()
    for _ in range(n_steps):
        obs, *_ = twin_env.step(expert.act(obs))
    recorder.detach()
    twin.detach()
    recorder.save(path)
    n_pushes = estimator.pushes.n_pushes if estimator.pushes is not None else 0
    return {"n_pushes": float(n_pushes), "duration_s": float(twin_env.data.time)}
