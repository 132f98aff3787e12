"""Train the reconstruction model: `python scripts/train_recon.py [overrides]` (Hydra; conf/train_recon.yaml).

Renders twin scenes into `data_root` when they are missing (resumable shards, sim/recon_scenes.py), trains on the
training split (resuming from `<run dir>/checkpoints/last.pt`: rerun with `hydra.run.dir=<run dir>`), logs to W&B
(offline by default), saves the model in `<run dir>/model`, evaluates the held-out scenes for the TTT model, its frozen
ablation and TSDF fusion (policies/recon/evaluate.py) and prints the figures as `name: value` lines.
"""

from __future__ import annotations

from pathlib import Path

import _entry

from perception.recon.checkpoint import load_recon
from policies.datasets.atomic import atomic_symlink
from policies.recon.data import load_scenes
from policies.recon.evaluate import evaluate_recon
from policies.recon.train import MODEL_DIR, train_recon
from sim.recon_scenes import write_scenes


@_entry.main("train_recon")
def main(run, config: dict) -> None:
    """Renders the scenes if needed, trains, evaluates and prints the figures."""
    write_scenes(run.data_root, run.scenes)
    with _entry.tracker(run, config) as tracker:
        model = train_recon(run.recon, run.train, load_scenes(run.data_root, "train"), run.output_dir, tracker)
        frozen = load_recon(Path(run.output_dir) / MODEL_DIR, frozen=True)
        figures = evaluate_recon({"": model, "frozen_": frozen}, load_scenes(run.data_root, run.eval.split), run.eval)
        tracker.log({f"eval/{k}": v for k, v in figures.items()}, step=run.train.steps)
    _entry.write_figures(figures, Path(run.output_dir) / "figures.json")
    if run.latest_link:
        print(f"model: {run.output_dir}/{MODEL_DIR} (linked as {atomic_symlink(run.output_dir, run.latest_link)})")


if __name__ == "__main__":
    main()
