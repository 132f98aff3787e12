"""Serve a robot over the bridge: `python scripts/serve_robot.py robot=so100 robot.port=/dev/ttyACM0`.

The robot (conf/robot/*.yaml: emulated | so100 | ur5e) runs behind the safety layer, served on loopback by default
(another address needs `server.secret`), so `scripts/deploy.py robot=remote robot.port=<port>` can drive it. Prints
`address: <host>:<port>` once listening; SIGTERM or Ctrl-C stops it with the robot holding.
"""

from __future__ import annotations

import _entry

from real.bridge.serve_run import serve_robot
from real.stop_request import stop_on_signals


@_entry.main("serve_robot")
def main(run, config: dict) -> None:
    """Serves until SIGTERM/SIGINT."""
    stop = stop_on_signals()
    serve_robot(run, stop, on_ready=lambda address: print(f"address: {address[0]}:{address[1]}", flush=True))
    print("stopped: the robot was left holding", flush=True)


if __name__ == "__main__":
    main()
