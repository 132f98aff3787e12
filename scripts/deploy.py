"""Deploy a policy through the twin: `python scripts/deploy.py policy_path=<run> [robot=emulated|remote|so100|ur5e]`.

The policy acts only in the digital twin; the robot (conf/robot/*.yaml: the emulated reality or a hardware arm,
served behind the safety layer in its own process, or a robot server already running) tracks the twin's joints, and
the twin is corrected from the robot's depth cameras. A robot whose joints are not the twin's arm is refused before
anything moves. Ctrl-C, an exception or a lost connection leaves the robot holding (Ctrl-C exits with status 130);
if this process is killed, the robot server holds the robot on its own. Prints `name: value` figures.
"""

from __future__ import annotations

import os

os.environ.setdefault("GOMP_SPINCOUNT", "2000")  # see scripts/train.py

import signal  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
from collections.abc import Callable  # noqa: E402

import hydra  # noqa: E402
import numpy as np  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

import sim  # noqa: E402
from policies.checkpoint import load_policy, load_train_config  # noqa: E402
from policies.runtime import print_figures, resolve_device  # noqa: E402
from policies.tracking import Tracker  # noqa: E402
from real.modes.deploy_run import deploy_episodes, register_configs  # noqa: E402

register_configs()
INTERRUPTED_EXIT = 130  # 128 + SIGINT, as a shell reports Ctrl-C


@hydra.main(config_path="../conf", config_name="deploy", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Deploys (:func:`deploy`); Ctrl-C exits with status 130 and a one-line message instead of a traceback."""
    interrupted = threading.Event()

    def on_sigint(signum: int, frame: object) -> None:
        interrupted.set()  # polled by the deployment too: a native callback may swallow the KeyboardInterrupt
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_sigint)
    try:
        deploy(cfg, interrupted.is_set)
    except KeyboardInterrupt:
        interrupted.set()
    if interrupted.is_set():
        print("interrupted (Ctrl-C): the robot was left holding", file=sys.stderr)
        sys.exit(INTERRUPTED_EXIT)


def deploy(cfg: DictConfig, stop_requested: Callable[[], bool] | None = None) -> None:
    """Loads the policy and its twin's env config, deploys, and prints the mean figures."""
    run = OmegaConf.to_object(cfg)
    policy = load_policy(run.policy_path, device=resolve_device(run.device))
    env_cfg = sim.env_config_from_dict(load_train_config(run.policy_path)["env"])
    tracker = Tracker(project=run.logger.project, mode=run.logger.mode, run_dir=run.output_dir,
                      config=OmegaConf.to_container(cfg, resolve=True))
    try:
        results = deploy_episodes(run, env_cfg.kwargs, policy, tracker, stop_requested)
    finally:
        tracker.finish()
    keys = ("success_real", "success_twin", "coverage_real", "peak_coverage_real", "sync_rms_mm", "sync_rms_deg",
            "tracking_rms_rad", "correction_hz", "stream_hz")
    print_figures({f"mean_{k}": float(np.nanmean([r[k] for r in results])) for k in keys})


if __name__ == "__main__":
    main()
