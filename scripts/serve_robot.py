"""Serve a robot over the bridge: `python scripts/serve_robot.py robot=so100 robot.port=/dev/ttyACM0`.

The robot (conf/robot/*.yaml: emulated | so100 | ur5e) runs behind the safety layer, served on loopback by default
(another address needs `server.secret`), so `scripts/deploy.py robot=remote robot.port=<port>` can drive it. Prints
`address: <host>:<port>` once listening; SIGTERM or Ctrl-C stops it with the robot holding.
"""

from __future__ import annotations

import signal
import threading

import hydra
from omegaconf import DictConfig, OmegaConf

from real.bridge.serve_run import register_configs, serve_robot

register_configs()


@hydra.main(config_path="../conf", config_name="serve_robot", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Serves until SIGTERM/SIGINT."""
    run = OmegaConf.to_object(cfg)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    serve_robot(run, stop, on_ready=lambda address: print(f"address: {address[0]}:{address[1]}", flush=True))
    print("stopped: the robot was left holding", flush=True)


if __name__ == "__main__":
    main()
