"""Train the streaming video model: `python scripts/train_streaming.py [overrides]` (Hydra; conf/train_streaming.yaml).

Collects labelled twin videos when they are missing (resumable), trains on clips of the training seeds (resuming
from `<run dir>/checkpoints/last.pt` when it is there: rerun with `hydra.run.dir=<run dir>`), logs to W&B (offline by
default), saves the model in `<run dir>/model`, points `latest_link` at the run, evaluates the held-out streams
(policies/streaming/evaluate.py) and prints the figures as `name: value` lines.
"""

from __future__ import annotations

from pathlib import Path

import _entry

from policies.datasets.atomic import atomic_symlink
from policies.streaming.data import collect_streams, load_streams
from policies.streaming.evaluate import calibration_streams, evaluate_streaming
from policies.streaming.train import train_streaming


@_entry.main("train_streaming")
def main(run, config: dict) -> None:
    """Collects the videos if needed, trains, evaluates and prints the figures."""
    make_env, make_agents, fps = _entry.stream_factories(run.env, run.data)
    collect_streams(make_env, make_agents, run.data_root, run.data, fps, env_meta=config["env"])
    with _entry.tracker(run, config) as tracker:
        model = train_streaming(run.streaming, run.train, run.clips, load_streams(run.data_root, "train"),
                                run.output_dir, tracker)
        figures = evaluate_streaming(model, load_streams(run.data_root, run.eval.split), run.eval,
                                     calibration_streams(run.data_root, run.eval))
        tracker.log({f"eval/{k}": v for k, v in figures.items()}, step=run.train.steps)
    _entry.write_figures(figures, Path(run.output_dir) / "figures.json")
    if run.latest_link:
        print(f"model: {run.output_dir}/model (linked as {atomic_symlink(run.output_dir, run.latest_link)})")


if __name__ == "__main__":
    main()
