"""Evaluate a saved reconstruction model: `python scripts/eval_recon.py [model=<dir>] [data_root=<dir>]` (Hydra;
conf/eval_recon.yaml).

Prints `depth_absrel_<n>`, `psnr_<n>`, `chamfer_mm_<n>` on the held-out twin scenes for n = 2, 4, 8, 16 input views,
the same with the fast weights frozen (`frozen_`) and for Open3D TSDF fusion with true depth (`tsdf_`), and writes
them to `<run dir>/figures.json`.
"""

from __future__ import annotations

from pathlib import Path

import _entry

from perception.recon.checkpoint import load_recon
from policies.recon.data import load_scenes
from policies.recon.evaluate import evaluate_recon


@_entry.main("eval_recon")
def main(run, config: dict) -> None:
    """Loads the model twice (test-time training, frozen), evaluates and prints the figures."""
    models = {"": load_recon(run.model), "frozen_": load_recon(run.model, frozen=True)}
    figures = evaluate_recon(models, load_scenes(run.data_root, run.eval.split), run.eval)
    _entry.write_figures(figures, Path(run.output_dir) / "figures.json")


if __name__ == "__main__":
    main()
