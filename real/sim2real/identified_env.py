"""An env config whose domain randomisation is drawn from identified physics: ``scripts/identify.py``.

From the episode logs of a deployment (``<run_dir>/episodes/episode_<i>.npz``, :func:`real.sim2real.identify.identify`)
and the env the policy was deployed in (``<run_dir>/episodes/env.yaml``, written by ``scripts/deploy.py``; else the
policy's training env, found through the run's saved ``.hydra/config.yaml``), this writes that env with its
randomisation replaced (``conf/env/identified_<name>.yaml`` by default), so ``scripts/eval.py env=identified_<name>``
evaluates the twin in a world like the one deployed into:

* friction and block mass: per-episode normal draws around the identified scale with its 1-sigma uncertainty
  (``friction_scale_mean``/``_std``, ``block_mass_scale_mean``/``_std``), clipped to +-3 sigma. Without a reference
  push force the mass is not identifiable (:mod:`real.sim2real.identify`): its draws are the prior, nominal +-25%.
* pushes: a rate ``r`` becomes inter-push times uniform on ``[0.5 / r, 1.5 / r]`` (mean ``1 / r``), each episode's
  force drawn from ``N(push_force_n, push_force_n_std)``; the identified duration. No push identified: no pushes.
* everything else (observations, episode length, joint damping, initial-pose noise, expert) is the deployed env's.
  The uncertainty of the push rate is not drawn (one rate for every episode).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import MISSING, OmegaConf

import sim
from real.sim2real.identify import MAX_EPISODES, Identification, identify, log_paths
from sim.episode_log import EpisodeLogError, load_log
from sim.pusht_config import DomainRandomizationConfig

SIGMAS = 3.0  # normal draws are clipped to mean +- this many standard deviations
SCHEMAS = {sim.ENV_ID: "pusht_schema", sim.TARGETS_ENV_ID: "pusht_targets_schema"}  # env id -> its Hydra schema


@dataclass
class IdentifyRunConfig:
    """``scripts/identify.py``: identify a deployment's physics and write an env config that randomises around it."""

    run_dir: str = MISSING  # a scripts/deploy.py output dir (its episodes/episode_<i>.npz), or a folder of logs
    name: str = ""  # writes <conf>/env/identified_<name>.yaml (scripts/eval.py env=identified_<name>)
    out: str = ""  # or this file instead
    max_episodes: int = MAX_EPISODES  # the first this many logs of run_dir (at most 10)
    reference_push_force: float | None = None  # N; a known push size, which makes the block mass identifiable
    output_dir: str = MISSING  # where identification.json (the figures) goes

    def __post_init__(self) -> None:
        if not self.name and not self.out:
            raise ValueError("identify needs name=<name> (writes conf/env/identified_<name>.yaml) or out=<file.yaml>")
        if not 1 <= self.max_episodes <= MAX_EPISODES:
            raise ValueError(f"max_episodes must be in [1, {MAX_EPISODES}], got {self.max_episodes}")
        if self.reference_push_force is not None and self.reference_push_force <= 0:
            raise ValueError(f"reference_push_force must be > 0 N, got {self.reference_push_force}")

    def out_path(self, conf_dir: str | os.PathLike) -> Path:
        """The env config file to write: ``out``, else ``<conf_dir>/env/identified_<name>.yaml``."""
        return Path(self.out) if self.out else Path(conf_dir) / "env" / f"identified_{self.name}.yaml"


def deployed_env(run_dir: str | os.PathLike) -> sim.EnvConfig:
    """The env config a run deployed its policy in: ``<run_dir>/episodes/env.yaml`` (scripts/deploy.py), else the
    training env of the ``policy_path`` in the run's ``.hydra/config.yaml``.

    Raises:
        FileNotFoundError: neither exists (naming both paths).
    """
    run_dir = Path(run_dir)
    saved, hydra_config = run_dir / "episodes" / "env.yaml", run_dir / ".hydra" / "config.yaml"
    if saved.is_file():
        return sim.env_config_from_dict(OmegaConf.to_container(OmegaConf.load(saved), resolve=True))
    if hydra_config.is_file() and OmegaConf.load(hydra_config).get("policy_path"):
        from policies.checkpoint import load_train_config

        return sim.env_config_from_dict(load_train_config(OmegaConf.load(hydra_config).policy_path)["env"])
    raise FileNotFoundError(f"{run_dir}: no deployed env config ({saved}, or the policy_path of {hydra_config}); "
                            f"deploy with scripts/deploy.py, which writes it")


def identified_randomization(ident: Identification, nominal_mass: float,
                             base: DomainRandomizationConfig) -> DomainRandomizationConfig:
    """``base`` with friction, block mass and pushes drawn around ``ident`` (module docstring); ``nominal_mass`` is
    the twin's block mass (kg) the logs were recorded with."""
    figures = ident.figures()  # plain floats (a config holds no numpy scalars)
    friction, friction_std = figures["friction_scale"], figures["friction_scale_std"]
    mass, mass_std = figures["block_mass"] / nominal_mass, figures["block_mass_std"] / nominal_mass
    pushes: dict[str, Any] = {"push_force": 0.0, "push_force_std": 0.0}
    if ident.n_pushes > 0 and figures["push_rate_hz"] > 0:
        rate = figures["push_rate_hz"]
        pushes = {"push_force": figures["push_force_n"], "push_force_std": figures["push_force_n_std"],
                  "push_interval": (0.5 / rate, 1.5 / rate),
                  "push_duration": figures["push_duration_s"] or base.push_duration}
    return dataclasses.replace(
        base, friction_scale=(max(friction - SIGMAS * friction_std, 0.0), friction + SIGMAS * friction_std),
        friction_scale_mean=friction, friction_scale_std=friction_std,
        block_mass_scale=(max(mass - SIGMAS * mass_std, 1e-3), mass + SIGMAS * mass_std),
        block_mass_scale_mean=mass, block_mass_scale_std=mass_std, **pushes)


def identified_env(ident: Identification, nominal_mass: float, env_cfg: sim.EnvConfig) -> sim.EnvConfig:
    """``env_cfg`` with its randomisation drawn around ``ident`` (:func:`identified_randomization`)."""
    kwargs = dataclasses.replace(env_cfg.kwargs, randomization=identified_randomization(
        ident, nominal_mass, env_cfg.kwargs.randomization))
    return dataclasses.replace(env_cfg, kwargs=kwargs)


def write_env_config(env_cfg: sim.EnvConfig, path: str | os.PathLike, header: str = "") -> Path:
    """Writes ``env_cfg`` as a Hydra ``env`` group file (its schema in ``defaults``, ``header`` as comment lines)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    node = {"defaults": [SCHEMAS.get(env_cfg.id, "pusht_schema")],
            **OmegaConf.to_container(OmegaConf.structured(env_cfg), resolve=True)}
    comment = "".join(f"# {line}\n" for line in header.splitlines())
    path.write_text(comment + OmegaConf.to_yaml(OmegaConf.create(node)))
    return path


def run_identification(run: IdentifyRunConfig, conf_dir: str | os.PathLike) -> tuple[Identification, Path]:
    """Identifies the first ``run.max_episodes`` logs of ``run.run_dir`` and writes the identified env config;
    returns the identification and the file written.

    Raises:
        EpisodeLogError: ``run.run_dir`` is missing or has no logs (naming the path), or a bad log.
        FileNotFoundError: no deployed env config in ``run.run_dir`` (:func:`deployed_env`).
    """
    if not Path(run.run_dir).is_dir():
        raise EpisodeLogError(f"run_dir {run.run_dir}: no such folder")
    paths = log_paths(run.run_dir)[: run.max_episodes]
    env_cfg = deployed_env(run.run_dir)
    ident = identify(paths, reference_push_force=run.reference_push_force)
    nominal_mass = load_log(paths[0])[1]["block_mass"]
    mass_source = "identified" if ident.mass_identified else "the prior: no reference push force"
    friction_source = "identified" if ident.friction_identified else "the prior: too few free slides"
    header = (f"Identified by scripts/identify.py from {len(paths)} episode logs of {run.run_dir}: the deployed env "
              f"with domain randomisation drawn\naround the identified physics (real/sim2real/identified_env.py). "
              f"Friction scale {ident.friction_scale:.3f} +- {ident.friction_scale_std:.3f} ({friction_source}), block mass "
              f"{ident.block_mass:.3f} +- {ident.block_mass_std:.3f} kg\n({mass_source}), "
              f"pushes {ident.push_rate_hz:.3f} Hz of {ident.push_force_n:.2f} N.")
    return ident, write_env_config(identified_env(ident, nominal_mass, env_cfg), run.out_path(conf_dir), header)


def register_configs() -> None:
    """Registers ``identify_schema`` in Hydra's ConfigStore."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="identify_schema", node=IdentifyRunConfig)
