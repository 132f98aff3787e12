"""Evaluation ablations: change what the policy is told or shown, on the same seeds, to show what it relies on.

=========================  ===============================================================================
ablation                   what changes (the env always judges the episode's own instruction)
=========================  ===============================================================================
``none``                   nothing: the reference run
``shuffled_instructions``  the policy gets another episode's instruction, one whose target differs
``heldout_paraphrases``    the env words its instructions with held-out paraphrases (an env kwarg override
                           the caller applies, e.g. ``instructions=heldout``; see ``scripts/eval.py``)
``blank_images``           every ``observation.images.*`` is replaced by zeros before the policy sees it
=========================  ===============================================================================

Figures: ``success_rate`` (with ``success_ci_low``/``success_ci_high``, as a plain evaluation) for ``none``, and
``success_rate_<ablation>`` with ``success_rate_<ablation>_ci_low``/``_ci_high`` for each other ablation::

    results = run_ablations(policy, ["none", "blank_images"],
                            lambda a: Evaluator.from_config(cfg, envs[a], ablation_dir(out, a), ablation=a))
    print_figures(ablation_figures(results, metric_keys=("coverage",)))
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

__all__ = ["ABLATIONS", "IMAGE_PREFIX", "ablation_dir", "ablation_figures", "ablation_options", "blank_images",
           "check_ablations", "eval_info", "figure_name", "run_ablations", "shuffled_instructions"]

ABLATIONS = ("none", "shuffled_instructions", "heldout_paraphrases", "blank_images")
IMAGE_PREFIX = "observation.images."  # LeRobot's camera keys


class _Runs(Protocol):
    def run(self, policy: Any) -> dict[str, Any]:
        """Evaluate ``policy`` (``policies.evaluation.Evaluator.run``)."""


def check_ablations(ablations: Sequence[str], field: str = "ablations") -> tuple[str, ...]:
    """``ablations`` as a tuple, checked: non-empty, each one of :data:`ABLATIONS`, none twice.

    Raises:
        ValueError: naming ``field`` and the offending value.
    """
    if isinstance(ablations, str):
        ablations = [ablations]
    ablations = tuple(str(a) for a in ablations)
    unknown = [a for a in ablations if a not in ABLATIONS]
    if not ablations or unknown:
        raise ValueError(f"{field} must be a non-empty list of {ABLATIONS}, got {list(ablations)}")
    if len(set(ablations)) != len(ablations):
        raise ValueError(f"{field} lists an ablation twice: {list(ablations)}")
    return ablations


def ablation_options(ablation: str) -> dict[str, bool]:
    """The :class:`policies.evaluation.Evaluator` switches of ``ablation`` (``heldout_paraphrases`` has none: it
    is an env setting).

    Raises:
        ValueError: an unknown ablation.
    """
    (ablation,) = check_ablations([ablation], field="ablation")
    return {"shuffle_instructions": ablation == "shuffled_instructions", "blank_images": ablation == "blank_images"}


def figure_name(ablation: str) -> str:
    """The success-rate figure of ``ablation``: ``success_rate`` or ``success_rate_<ablation>``."""
    return "success_rate" if ablation == "none" else f"success_rate_{ablation}"


def ablation_dir(output_dir: str | Path, ablation: str) -> Path:
    """Where ``ablation``'s videos go: ``output_dir`` itself for ``none``, else ``output_dir/<ablation>``."""
    return Path(output_dir) if ablation == "none" else Path(output_dir) / ablation


def shuffled_instructions(tasks: Sequence[str], targets: Sequence[str], seed: int) -> list[str]:
    """For every episode ``i``, the instruction of another episode ``j`` with ``targets[j] != targets[i]``.

    ``j`` is drawn uniformly among those episodes with a numpy generator seeded by ``seed`` (the global RNGs are
    not touched), so the same listed episodes always get the same instructions. Paraphrase wording therefore
    follows the same distribution as in the reference run; only the target is wrong.

    Raises:
        ValueError: the lengths differ, or an episode has no episode with another target (e.g. an env with a single
            instruction): its instruction cannot be shuffled.
    """
    if len(tasks) != len(targets):
        raise ValueError(f"shuffled_instructions: {len(tasks)} tasks but {len(targets)} targets")
    rng = np.random.default_rng(seed)
    labels = np.asarray([str(t) for t in targets], dtype=object)
    out = []
    for target in labels:
        others = np.flatnonzero(labels != target)
        if not others.size:
            raise ValueError(f"shuffled_instructions needs episodes with at least two different targets; all "
                             f"{len(labels)} have {target!r} (an env with one instruction cannot be shuffled)")
        out.append(str(tasks[int(rng.choice(others))]))
    return out


def blank_images(batch: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of the policy batch with every ``observation.images.*`` tensor replaced by zeros (same shape, dtype)."""
    return {k: torch.zeros_like(v) if k.startswith(IMAGE_PREFIX) else v for k, v in batch.items()}


def run_ablations(policy: Any, ablations: Sequence[str], make_evaluator: Callable[[str], _Runs]) -> dict[str, dict]:
    """Evaluate ``policy`` once per ablation, in the given order: ``{ablation: make_evaluator(ablation).run(policy)}``.

    Raises:
        ValueError: an unknown or repeated ablation (before anything runs).
    """
    return {ablation: make_evaluator(ablation).run(policy) for ablation in check_ablations(ablations)}


def ablation_figures(results: Mapping[str, Mapping[str, Any]], metric_keys: Sequence[str] = ()) -> dict[str, Any]:
    """The printed figures of :func:`run_ablations`' results.

    ``none``: ``success_rate``, ``success_ci_low``, ``success_ci_high``, ``mean_<k>`` for each metric key,
    ``n_episodes`` (a plain evaluation's figures) and an observer's figures (``result["observed"]``, e.g.
    ``monitor_progress_voc``; suffixed ``_<a>`` for another ablation ``a``). Every other ablation: ``success_rate_<a>``,
    ``success_rate_<a>_ci_low``, ``success_rate_<a>_ci_high``. With both ``none`` and ``heldout_paraphrases``:
    ``heldout_paraphrases_success_ratio``, the held-out success over the reference success (the share of its
    success the policy keeps; absent when the reference is 0).
    """
    figures: dict[str, Any] = {}
    for ablation, result in results.items():
        name = figure_name(ablation)
        figures[name] = result["success_rate"]
        low, high = (("success_ci_low", "success_ci_high") if ablation == "none"
                     else (f"{name}_ci_low", f"{name}_ci_high"))
        figures[low], figures[high] = result["success_ci_low"], result["success_ci_high"]
        if ablation == "none":
            figures |= {f"mean_{k}": result[f"mean_{k}"] for k in metric_keys}
            figures["n_episodes"] = result["n_episodes"]
        # an observer's figures (e.g. the streaming monitor's): as they are for none, suffixed _<a> for the others
        figures |= {k if ablation == "none" else f"{k}_{ablation}": v for k, v in result.get("observed", {}).items()}
    if "none" in results and "heldout_paraphrases" in results and results["none"]["success_rate"] > 0:
        ratio = results["heldout_paraphrases"]["success_rate"] / results["none"]["success_rate"]
        figures["heldout_paraphrases_success_ratio"] = ratio
    return figures


def eval_info(results: Mapping[str, Mapping[str, Any]], metric_keys: Sequence[str] = ()) -> dict[str, Any]:
    """The ``eval_info.json`` document of :func:`run_ablations`' results.

    The reference run's result (``none``, when run) at the top level, as a plain evaluation writes it, then every
    figure of :func:`ablation_figures`, and ``ablations``: ``{ablation: its full result}`` for the other runs
    (episodes, per-instruction table, videos).
    """
    info: dict[str, Any] = dict(results.get("none", {}))
    info |= ablation_figures(results, metric_keys)
    info["ablations"] = {a: dict(r) for a, r in results.items() if a != "none"}
    return info
