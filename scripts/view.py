"""Watch the twin and reality side by side in Rerun: `python scripts/view.py [n_steps=100] [spawn=true]`.

Runs the scripted expert in the twin against a stand-in reality (other physics, unmodelled pushes) in lock-step and
logs the twin's and reality's block and pusher, reality's RGB and depth frames, the measured pose, the
reconstruction's points (twin.correction=recon twin.recon_model=<dir>) and the sync error per control step
(real/modes/viewer.py). Writes outputs/view/twin.rrd (out=<file>; open it with `rerun <file>`), or with spawn=true
streams to a live viewer.
"""

from __future__ import annotations

import _entry

from real.modes.viewer import run_view


@_entry.main("view")
def main(run, config: dict) -> None:
    """Runs and logs the twin."""
    path = run_view(run)
    if path is not None:
        print(f"rerun recording: {path}  (open: rerun {path})")


if __name__ == "__main__":
    main()
