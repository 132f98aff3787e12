"""Deploy a policy through the twin: `python scripts/deploy.py policy_path=<run> [robot=emulated|remote|so100|ur5e]`.

The policy acts only in the digital twin; the robot (conf/robot/*.yaml: the emulated reality or a hardware arm,
served behind the safety layer in its own process, or a robot server already running) tracks the twin's joints, and
the twin is corrected from the robot's depth cameras. A robot whose joints are not the twin's arm is refused before
anything moves. The twin's episode logs (its state, correction wrenches, measured poses) go to
<output_dir>/episodes/episode_<i>.npz beside the deployed env (env.yaml), for scripts/identify.py
(deploy.episode_log=false: none). Ctrl-C, an exception or a lost connection leaves the robot holding (Ctrl-C exits
with status 130); if this process is killed, the robot server holds the robot on its own. Prints `name: value` figures.
`monitor=streaming monitor.path=<model dir>`: the streaming video model watches the robot's live colour frames
(real.modes.monitoring; records episodes/episode_<i>.monitor.jsonl, W&B monitor/*) and monitor_success_agreement
(its final success call vs reality's success) is printed; monitor.end_on_success=true ends episodes on its call.
"""

from __future__ import annotations

import _entry

from policies.runtime import resolve_device
from real.modes.deploy_run import deploy_episodes, deploy_figures, prepare_episode_logs


@_entry.main("deploy")
def main(run, config: dict) -> None:
    """Deploys ``run.n_episodes`` episodes and prints the mean figures; Ctrl-C exits with status 130."""
    def deploy(stop_requested) -> None:
        policy, env_cfg = _entry.load_checkpoint(run.policy_path, resolve_device(run.device))
        log_dir = prepare_episode_logs(run, env_cfg)  # <output_dir>/episodes: the twin's logs, for identify.py
        with _entry.tracker(run, config) as tracker:
            results = deploy_episodes(run, env_cfg.kwargs, policy, tracker, stop_requested, log_dir)
        _entry.print_figures(deploy_figures(results, run.monitor))

    _entry.exit_on_interrupt(deploy, "interrupted (Ctrl-C): the robot was left holding")


if __name__ == "__main__":
    main()
