"""Evaluate a saved streaming video model on held-out twin streams: `python scripts/eval_streaming.py [model=<dir>]`
(Hydra; conf/eval_streaming.yaml). Prints pose error, progress VOC, success AUC, event F1 per event and the
frozen / replay detection delays, for the model's memory and (prefixed `window_`) the same weights without sinks, as
`name: value` lines, and writes them to `<run dir>/figures.json`.
"""

from __future__ import annotations

from pathlib import Path

import _entry

from perception.streaming import load_streaming
from policies.streaming.data import load_streams
from policies.streaming.evaluate import calibration_streams, evaluate_streaming


@_entry.main("eval_streaming")
def main(run, config: dict) -> None:
    """Loads the model and the held-out streams, evaluates and prints the figures."""
    try:
        model = load_streaming(run.model)
    except FileNotFoundError as err:
        raise SystemExit(f"model={run.model}: {err}; train one with scripts/train_streaming.py") from err
    figures = evaluate_streaming(model, load_streams(run.data_root, run.eval.split), run.eval,
                                 calibration_streams(run.data_root, run.eval))
    _entry.write_figures(figures, Path(run.output_dir) / "figures.json")


if __name__ == "__main__":
    main()
