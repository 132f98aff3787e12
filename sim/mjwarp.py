"""MuJoCo Warp (``mujoco_warp``) worlds: N copies of the twin's MJCF model stepped together on a GPU or Warp's CPU.

``WarpWorlds`` owns the device model and data; the vector env on top of it is ``sim.mjwarp_env``. On CUDA the
substeps of one call are captured once into a CUDA graph and replayed; on Warp's CPU device each step launches its
kernels (correct, but far slower than MuJoCo C: it is there for tests and machines without a GPU). The first use of
each kernel compiles it (minutes on CPU); the compiled kernels are cached at ``WARP_CACHE_PATH``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import mujoco
import numpy as np

log = logging.getLogger(__name__)


# The MjData fields that make a world's state for WarpWorlds.set_worlds (the solver warm start included, so a world
# continues as MuJoCo C would from the same MjData).
STATE_FIELDS = ("time", "qpos", "qvel", "act", "ctrl", "mocap_pos", "mocap_quat", "xfrc_applied", "qacc_warmstart")


def state_of(datas: Sequence[mujoco.MjData]) -> dict[str, np.ndarray]:
    """The :data:`STATE_FIELDS` of host ``datas``, stacked (one row per MjData), for ``WarpWorlds.set_worlds``."""
    return {name: np.stack([np.array(getattr(d, name), dtype=float) for d in datas]) for name in STATE_FIELDS}


class WarpUnavailable(RuntimeError):
    """MuJoCo Warp cannot run this model or configuration here (the message says what and why)."""


def import_mujoco_warp():
    """The ``mujoco_warp`` and ``warp`` modules. Raises WarpUnavailable naming the missing package."""
    try:
        import mujoco_warp
        import warp
    except ImportError as err:  # the package is optional: pip install mujoco-warp
        raise WarpUnavailable(f"env.backend=mjwarp needs the mujoco-warp package (pip install mujoco-warp): {err}") \
            from err
    return mujoco_warp, warp


def resolve_warp_device(device: str = "auto") -> str:
    """``auto``: the first CUDA device when one exists, else ``cpu``; other names pass through. Raises
    WarpUnavailable for ``cuda`` without a CUDA device."""
    _, wp = import_mujoco_warp()
    has_cuda = wp.get_cuda_device_count() > 0
    if device == "auto":
        return "cuda:0" if has_cuda else "cpu"
    if device.startswith("cuda") and not has_cuda:
        raise WarpUnavailable(f"mjwarp device {device!r} asked for, but Warp sees no CUDA device")
    return device


class WarpWorlds:
    """``n_worlds`` copies of ``model`` on a Warp device (MuJoCo Warp physics).

    Args:
        model: the MuJoCo model (host); every world shares it.
        n_worlds: number of worlds.
        device: ``auto`` (CUDA when present, else CPU), ``cpu`` or ``cuda[:N]``.
        nconmax, njmax: contacts and constraint rows allocated per world.

    Raises:
        WarpUnavailable: mujoco-warp is missing, the device is absent, or MuJoCo Warp does not support a feature of
            the model (its own message is included).
    """

    def __init__(self, model: mujoco.MjModel, n_worlds: int, device: str = "auto", nconmax: int = 32,
                 njmax: int = 192) -> None:
        mjw, wp = import_mujoco_warp()
        if n_worlds < 1:
            raise ValueError(f"n_worlds must be >= 1, got {n_worlds}")
        self.mjw, self.wp = mjw, wp
        self.host_model = model
        self.n_worlds = n_worlds
        self.device = resolve_warp_device(device)
        with wp.ScopedDevice(self.device):
            try:
                self.model = mjw.put_model(model)
            except (NotImplementedError, ValueError) as err:
                raise WarpUnavailable(f"MuJoCo Warp cannot load the twin's model on {self.device}: {err}") from err
            self.data = mjw.make_data(model, nworld=n_worlds, nconmax=nconmax, njmax=njmax)
        self._graphs: dict[int, object] = {}

    def set_worlds(self, indices: Sequence[int], state: dict[str, np.ndarray]) -> None:
        """Resets worlds ``indices`` and sets their state: ``state[name]`` holds one row per index for each of
        :data:`STATE_FIELDS` (see :func:`state_of`); their kinematics are then recomputed (every world's; the others'
        are unchanged by it)."""
        idx = np.asarray(indices, dtype=int)
        mask = np.zeros(self.n_worlds, bool)
        mask[idx] = True
        with self.wp.ScopedDevice(self.device):
            self.mjw.reset_data(self.model, self.data, reset=self.wp.array(mask, dtype=bool))
            for name in STATE_FIELDS:
                dev = getattr(self.data, name)
                if dev.size == 0:
                    continue
                host = dev.numpy()
                host[idx] = np.asarray(state[name]).reshape((len(idx), *host.shape[1:]))
                dev.assign(host)
            self.mjw.kinematics(self.model, self.data)

    def set_ctrl(self, ctrl: np.ndarray) -> None:
        """Actuator controls of all worlds, ``(n_worlds, nu)``."""
        self.data.ctrl.assign(np.asarray(ctrl, dtype=np.float32).reshape(self.n_worlds, -1))

    def step(self, n_steps: int) -> None:
        """``n_steps`` physics steps of every world (a replayed CUDA graph on a GPU)."""
        wp = self.wp
        with wp.ScopedDevice(self.device):
            graph = self._graphs.get(n_steps)
            if graph is not None:
                wp.capture_launch(graph)
                return
            for _ in range(n_steps):  # eager: compiles each kernel on first use
                self.mjw.step(self.model, self.data)
            if wp.get_device(self.device).is_cuda:  # record (not run) the same steps for the next calls
                with wp.ScopedCapture() as capture:
                    for _ in range(n_steps):
                        self.mjw.step(self.model, self.data)
                self._graphs[n_steps] = capture.graph

    def field(self, name: str) -> np.ndarray:
        """A copy of a data field on the host, leading axis the world (e.g. ``qpos`` ``(n_worlds, nq)``)."""
        return getattr(self.data, name).numpy()
