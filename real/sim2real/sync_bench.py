"""Sync benchmark: how closely the deployment's view of the block follows the real block, twin vs no twin.

The scripted PushT expert is deployed into the emulated reality (its own process, pushes the twin never sees, other
friction and mass, depth noise and dropouts) through the bridge, the same seeded episodes once per source of
observations:

* ``twin``: Real-is-Sim, the corrected twin (ICP pose correction from the depth frames);
* ``open_loop``: the twin without correction (what plain simulation would believe);
* ``raw``: no twin, the block pose estimated from each depth frame alone (``Deployer`` ``observation="raw"``);
* ``recon``: the twin corrected from RGB cameras only (``twin.correction=recon``: the reconstruction model in
  ``recon_model`` registered by ICP; the emulated reality also renders RGB). Not in the default sources: it needs a
  trained model. Its figures are also printed as ``recon_rms_mm``, ``recon_rms_deg`` and ``recon_hz``.

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

SOURCES = {"twin": ("twin", "pose"), "open_loop": ("twin", "none"), "raw": ("raw", "pose"), "recon": ("twin", "recon")}
DEFAULT_SOURCES = ("twin", "open_loop", "raw")


def run_sync_benchmarks(n_episodes: int = 3, max_steps: int = 100, start_seed: int = 100000, time_scale: float = 0.5,
                        camera_hz: float = 45.0, sources: tuple[str, ...] = DEFAULT_SOURCES, lookahead_s: float = 0.06,
                        recon_model: str = "", log: Callable[[str], None] = print) -> dict[str, float]:
    """Deploys the expert ``n_episodes`` times per source; returns ``<source>_sync_rms_mm`` / ``_deg`` (RMS over all
    compared instants of all episodes), ``<source>_sync_worst_mm`` / ``_deg`` (the worst episode's RMS; each may come
    from a different episode), ``<source>_success_real``, ``<source>_correction_hz``,
    ``<source>_safety_clamp_fraction`` (clamped commands / commands sent, over all episodes), ``safety_clamp_fraction``
    (the same over every source) and ``time_scale``; with the ``recon`` source (``recon_model``: its model's
    directory) also ``recon_rms_mm``, ``recon_rms_deg`` and ``recon_hz`` (corrections per second).

    Raises:
        ValueError: a source not in ``SOURCES``; the ``recon`` source without ``recon_model`` (naming
            ``sync.recon_model``).
    """
    unknown = set(sources) - set(SOURCES)
    if unknown:
        raise ValueError(f"sources must be among {tuple(SOURCES)}, got {sorted(unknown)}")
    if "recon" in sources and not recon_model:
        raise ValueError("the recon source needs sync.recon_model: the directory of a trained reconstruction model")
    import sim  # noqa: F401  (head-less rendering default)
    from sim.expert import PushTExpert
    from sim.pusht_env import PushTEnv
    from sim.twin import DigitalTwin, TwinConfig

    figures: dict[str, float] = {"time_scale": time_scale}
    n_sent_all = n_clamped_all = 0
    for name in sources:
        observation, correction = SOURCES[name]
        errors, successes, rates, episode_rms = [], [], [], []
        n_sent = n_clamped = 0
        for seed in range(start_seed, start_seed + n_episodes):
            reality = EmulatedRealityConfig(seed=seed, camera_hz=camera_hz, time_scale=time_scale,
                                            color=correction == "recon")
            with ServerProcess(functools.partial(EmulatedRealityRobot, reality)) as process:
                twin = DigitalTwin(PushTEnv(), TwinConfig(correction=correction, rate_hz=camera_hz, depth_size=(96, 96),
                                                          recon_model=recon_model))
                robot = RemoteRobot(RemoteRobotConfig(port=process.address[1]))
                config = DeployConfig(seed=seed, max_steps=max_steps, observation=observation, time_scale=time_scale,
                                      lookahead_s=lookahead_s)
                deployer = Deployer(twin, robot, act=PushTExpert.for_env(twin.env).act, config=config)
                result = deployer.run()
            errors.extend(deployer.sync_errors)
            episode_rms.append((result["sync_rms_mm"], result["sync_rms_deg"]))
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
        per_episode = np.asarray(episode_rms)
        log(f"{name} per-episode sync RMS over {len(per_episode)} episodes: "
            f"median {np.median(per_episode[:, 0]):.1f} mm / {np.median(per_episode[:, 1]):.1f} deg, "
            f"worst {per_episode[:, 0].max():.1f} mm / {per_episode[:, 1].max():.1f} deg")
        figures.update({f"{name}_sync_rms_mm": float(1e3 * error[0]), f"{name}_sync_rms_deg": float(np.degrees(error[1])),
                        f"{name}_sync_worst_mm": float(per_episode[:, 0].max()),
                        f"{name}_sync_worst_deg": float(per_episode[:, 1].max()),
                        f"{name}_success_real": float(np.mean(successes)),
                        f"{name}_correction_hz": float(np.mean(rates)),
                        f"{name}_safety_clamp_fraction": float(n_clamped / max(n_sent, 1))})
        if name == "recon":
            figures.update({"recon_rms_mm": figures["recon_sync_rms_mm"], "recon_rms_deg": figures["recon_sync_rms_deg"],
                            "recon_hz": figures["recon_correction_hz"]})
        n_sent_all, n_clamped_all = n_sent_all + n_sent, n_clamped_all + n_clamped
    figures["safety_clamp_fraction"] = float(n_clamped_all / max(n_sent_all, 1))
    return figures

