"""Sync benchmark: how closely the deployment's view of the block follows the real block, twin vs no twin.

The scripted PushT expert is deployed into the emulated reality (its own process, pushes the twin never sees, other
friction and mass, depth noise and dropouts) through the bridge, the same seeded episodes once per source of
observations:

* ``twin``: Real-is-Sim, the corrected twin (ICP pose correction from the depth frames);
* ``open_loop``: the twin without correction (what plain simulation would believe);
* ``raw``: no twin, the block pose estimated from each depth frame alone (``Deployer`` ``observation="raw"``).

The figures are the RMS distance and angle between that view and reality's true block pose at the same instant
(the truth's capture time), corrections per second, the expert's success on the real block, and the fraction of the
streamed joint commands that the robot's safety layer had to clamp (from its ``safety.clamped`` counter, which the
bridge reports with every command's reply): the stream is meant to stay within the limits, the guard only to catch.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np

from real.bridge.client import RemoteRobot, RemoteRobotConfig
from real.bridge.server import ServerProcess
from real.emulated.reality import EmulatedRealityConfig, EmulatedRealityRobot
from real.modes.deploy import DeployConfig, Deployer

SOURCES = {"twin": ("twin", "pose"), "open_loop": ("twin", "none"), "raw": ("raw", "pose")}


def run_sync_benchmarks(n_episodes: int = 3, max_steps: int = 100, start_seed: int = 100000, time_scale: float = 0.5,
                        camera_hz: float = 45.0, sources: tuple[str, ...] = tuple(SOURCES), lookahead_s: float = 0.06,
                        log: Callable[[str], None] = print) -> dict[str, float]:
    """Deploys the expert ``n_episodes`` times per source; returns ``<source>_sync_rms_mm`` / ``_deg`` (RMS over all
    compared instants of all episodes), ``<source>_success_real``, ``<source>_correction_hz``,
    ``<source>_safety_clamp_fraction`` (clamped commands / commands sent, over all episodes), ``safety_clamp_fraction``
    (the same over every source) and ``time_scale``.

    Raises:
        ValueError: a source not in ``SOURCES``.
    """
    unknown = set(sources) - set(SOURCES)
    if unknown:
        raise ValueError(f"sources must be among {tuple(SOURCES)}, got {sorted(unknown)}")
    import sim  # noqa: F401  (head-less rendering default)
    from sim.expert import PushTExpert
    from sim.pusht_env import PushTEnv
    from sim.twin import DigitalTwin, TwinConfig

    figures: dict[str, float] = {"time_scale": time_scale}
    n_sent_all = n_clamped_all = 0
    for name in sources:
        observation, correction = SOURCES[name]
        errors, successes, rates = [], [], []
        n_sent = n_clamped = 0
        for seed in range(start_seed, start_seed + n_episodes):
            reality = EmulatedRealityConfig(seed=seed, camera_hz=camera_hz, time_scale=time_scale)
            with ServerProcess(functools.partial(EmulatedRealityRobot, reality)) as process:
                twin = DigitalTwin(PushTEnv(), TwinConfig(correction=correction, rate_hz=camera_hz, depth_size=(96, 96)))
                robot = RemoteRobot(RemoteRobotConfig(port=process.address[1]))
                config = DeployConfig(seed=seed, max_steps=max_steps, observation=observation, time_scale=time_scale,
                                      lookahead_s=lookahead_s)
                deployer = Deployer(twin, robot, act=PushTExpert.for_env(twin.env).act, config=config)
                result = deployer.run()
            errors.extend(deployer.sync_errors)
            successes.append(result["success_real"])
            rates.append(result["correction_hz"])
            streamer = deployer.streamer
            n_sent += streamer.n_sent
            n_clamped += streamer.n_clamped if np.isfinite(streamer.clamp_fraction()) else np.nan  # no counter: NaN
            log(f"{name} seed {seed}: sync {result['sync_rms_mm']:.1f} mm / {result['sync_rms_deg']:.1f} deg, "
                f"{result['correction_hz']:.1f} corrections/s, real coverage {result['coverage_real']:.2f}, "
                f"{streamer.n_clamped} of {streamer.n_sent} commands clamped, {streamer.n_restarts} restarts from a hold, "
                f"{streamer.n_resyncs} resyncs, "
                f"smoothing {1e3 * streamer.smoothing_rms():.2f} mrad RMS")
        error = np.sqrt(np.mean(np.square(errors), axis=0))
        figures.update({f"{name}_sync_rms_mm": float(1e3 * error[0]), f"{name}_sync_rms_deg": float(np.degrees(error[1])),
                        f"{name}_success_real": float(np.mean(successes)),
                        f"{name}_correction_hz": float(np.mean(rates)),
                        f"{name}_safety_clamp_fraction": float(n_clamped / max(n_sent, 1))})
        n_sent_all, n_clamped_all = n_sent_all + n_sent, n_clamped_all + n_clamped
    figures["safety_clamp_fraction"] = float(n_clamped_all / max(n_sent_all, 1))
    return figures

