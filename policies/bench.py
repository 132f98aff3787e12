"""``bench.py policy``: how fast each policy preset plans an action chunk on this CPU, and how much memory it takes.

Each preset is a ``conf/policy/<preset>.yaml``, built through its typed schema as a training run builds it, with
random weights and placeholder normalisation stats (speed does not depend on them) on the features of the env the
preset is fed (images at that env's size). Per preset, on all of torch's threads and on 1::

    <preset>_p50_ms, <preset>_p99_ms        latency of a fresh ``reset(); select_action(obs)``: one observation in,
                                            one chunk planned by ``predict_action_chunk``, its first action out
    <preset>_p50_ms_1thread, ..._p99_ms_1thread   the same with torch.set_num_threads(1)
    <preset>_hz, <preset>_hz_1thread        achieved control rate of a running ``select_action`` loop (plans once
                                            every n_action_steps calls, pops a queued action otherwise)
    <preset>_peak_mb                        peak resident-memory growth while building the policy and planning (MiB)
    <preset>_params_m                       parameters (millions)

A preset whose config cannot be built here (a ``???`` value, a backbone that must be downloaded) is skipped with a
message on stderr.
"""

from __future__ import annotations

import dataclasses
import gc
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf
from omegaconf.errors import MissingMandatoryValue

from policies.ablations import IMAGE_PREFIX
from policies.base import Policy
from policies.registry import make_policy
from policies.train_config import policy_schema

__all__ = ["PeakMemory", "load_preset", "measure_policy", "placeholder_stats", "preset_names",
           "run_policy_benchmarks", "sample_observation"]

Features = Mapping[str, Mapping[str, Any]]


def preset_names(policy_dir: str | Path) -> list[str]:
    """The presets of ``policy_dir``: the stems of its ``*.yaml`` files, sorted."""
    return sorted(p.stem for p in Path(policy_dir).glob("*.yaml"))


def load_preset(path: str | Path) -> tuple[str, dict[str, Any]]:
    """``(policy name, config fields)`` of a ``conf/policy/<preset>.yaml``, merged onto the policy's typed schema
    (its defaults filled, types checked) as a training run composes it.

    Raises:
        FileNotFoundError: no such file. omegaconf.errors.MissingMandatoryValue: a ``???`` value is left.
        omegaconf errors / ValueError: an unknown field or a bad value, naming it.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no policy preset {path}")
    node = OmegaConf.load(path)
    node.pop("defaults", None)
    missing = sorted(OmegaConf.missing_keys(node))
    if missing:  # merged onto a schema default, a ??? would silently take the default
        raise MissingMandatoryValue(f"{path.name} leaves {missing} unset (???): it cannot be built as it is")
    name = str(node.get("name", path.stem))
    config = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(policy_schema(name)), node))
    fields = dataclasses.asdict(config)
    fields.pop("name")
    return name, fields


def placeholder_stats(features: Features, action_horizon: int = 1) -> dict[str, dict[str, list[float]]]:
    """Normalisation stats for every non-image feature: min -1, max 1, mean 0, std 1 (shaped like the feature;
    ``action`` repeated ``action_horizon`` times, as a policy with ``relative_action_key`` normalises per index)."""
    stats = {}
    for key, spec in features.items():
        if key.startswith(IMAGE_PREFIX) or spec["dtype"] not in ("float32", "float64"):
            continue
        size = int(np.prod(spec["shape"])) * (action_horizon if key == "action" else 1)
        stats[key] = {"min": [-1.0] * size, "max": [1.0] * size, "mean": [0.0] * size, "std": [1.0] * size}
    return stats


def sample_observation(features: Features, instruction: str, seed: int = 0) -> dict[str, Any]:
    """One random observation (batch of 1) as the evaluator hands it to a policy: images float (1, 3, H, W) in
    [0, 1], other ``observation.*`` float (1, ...), ``task`` ``[instruction]``."""
    generator = torch.Generator().manual_seed(seed)
    obs: dict[str, Any] = {"task": [instruction]}
    for key, spec in features.items():
        if not key.startswith("observation."):
            continue
        shape = [int(s) for s in spec["shape"]]
        if spec["dtype"] in ("video", "image"):
            height, width, channels = shape
            obs[key] = torch.rand(1, channels, height, width, generator=generator)
        elif spec["dtype"] in ("float32", "float64"):
            obs[key] = torch.rand(1, *shape, generator=generator) * 2 - 1
    return obs


class PeakMemory:
    """Context manager: the peak growth of this process's resident memory (MiB) over its block, sampled by a
    thread every ``interval_s`` (torch's allocations are not Python's, so tracemalloc would not see them).

    Reads ``/proc/self/statm`` (Linux); elsewhere ``peak_mb`` stays 0.
    """

    def __init__(self, interval_s: float = 0.001):
        self.interval_s = interval_s
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> PeakMemory:
        gc.collect()
        self._base = self._peak = _rss_bytes()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._peak = max(self._peak, _rss_bytes())
        self.peak_mb = max(0.0, (self._peak - self._base) / 2**20)

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._peak = max(self._peak, _rss_bytes())


def _rss_bytes() -> int:
    """Resident set size of this process in bytes (0 where /proc is missing)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return 0


def _chunk_latencies_ms(policy: Policy, obs: Mapping[str, Any], n_iters: int, n_warmup: int) -> np.ndarray:
    """Wall-clock ms of ``n_iters`` fresh ``reset(); select_action(obs)`` calls (each plans a chunk)."""
    times = []
    for i in range(n_warmup + n_iters):
        start = time.perf_counter()
        policy.reset()
        policy.select_action(obs)
        if i >= n_warmup:
            times.append((time.perf_counter() - start) * 1e3)
    return np.asarray(times)


def _control_rate_hz(policy: Policy, obs: Mapping[str, Any], n_steps: int) -> float:
    """Calls per second of a running ``select_action`` loop of ``n_steps`` (replanning every n_action_steps)."""
    policy.reset()
    start = time.perf_counter()
    for _ in range(n_steps):
        policy.select_action(obs)
    return n_steps / (time.perf_counter() - start)


def measure_policy(build: Callable[[], Policy], obs: Mapping[str, Any], n_iters: int = 100, n_warmup: int = 10,
                   control_steps: int = 200) -> dict[str, float]:
    """The figures of one policy (module docstring), without the preset prefix: ``p50_ms``, ``p99_ms``,
    ``p50_ms_1thread``, ``p99_ms_1thread``, ``hz``, ``hz_1thread``, ``peak_mb``, ``params_m``.

    ``build`` makes the policy; memory is measured over building it and ``n_warmup`` plans, then timing runs
    without the sampler. torch's thread count is restored afterwards.
    """
    threads = torch.get_num_threads()
    with PeakMemory() as memory:
        policy = build().eval()
        _chunk_latencies_ms(policy, obs, n_iters=max(1, n_warmup), n_warmup=0)
    figures = {"peak_mb": memory.peak_mb, "params_m": sum(p.numel() for p in policy.parameters()) / 1e6}
    try:
        for n_threads, suffix in ((threads, ""), (1, "_1thread")):
            torch.set_num_threads(n_threads)
            times = _chunk_latencies_ms(policy, obs, n_iters, n_warmup)
            figures[f"p50_ms{suffix}"] = float(np.percentile(times, 50))
            figures[f"p99_ms{suffix}"] = float(np.percentile(times, 99))
            figures[f"hz{suffix}"] = _control_rate_hz(policy, obs, control_steps)
    finally:
        torch.set_num_threads(threads)
    return figures


def run_policy_benchmarks(features_for: Callable[[str], Features], policy_dir: str | Path,
                          presets: Sequence[str] = (), n_iters: int = 100, n_warmup: int = 10,
                          control_steps: int = 200, instruction: str = "push the T onto the red target",
                          seed: int = 0) -> dict[str, float]:
    """Measure every preset of ``policy_dir`` (or only ``presets``) on CPU; ``<preset>_<figure>`` figures.

    ``features_for(preset)`` gives the features (LeRobot info.json style) the preset is fed; every preset is
    built with ``torch.manual_seed(seed)`` and sees one random observation with ``instruction`` as its task.
    Also ``n_threads``: torch's thread count of the all-threads figures.

    Raises:
        FileNotFoundError: a preset named in ``presets`` has no yaml in ``policy_dir``.
    """
    names = list(presets) or preset_names(policy_dir)
    figures: dict[str, float] = {"n_threads": torch.get_num_threads()}
    for preset in names:
        try:
            name, config = load_preset(Path(policy_dir) / f"{preset}.yaml")
        except MissingMandatoryValue as err:
            print(f"bench policy: skipped preset {preset}: {err}".splitlines()[0], file=sys.stderr)
            continue
        features = features_for(preset)

        def build(name: str = name, config: dict = config, features: Features = features) -> Policy:
            torch.manual_seed(seed)
            horizon = int(config["horizon"]) if config.get("relative_action_key") else 1
            return make_policy(name, features, placeholder_stats(features, horizon), config)

        try:
            result = measure_policy(build, sample_observation(features, instruction, seed), n_iters, n_warmup,
                                    control_steps)
        except OSError as err:  # e.g. a pretrained backbone that is not on this machine
            print(f"bench policy: skipped preset {preset}: {err}", file=sys.stderr)
            continue
        figures |= {f"{preset}_{k}": v for k, v in result.items()}
        print(f"bench policy: {preset} ({name}, {result['params_m']:.2f} M parameters) measured", file=sys.stderr)
    return figures
