"""The robot interface, in LeRobot's style: features before connect, truth after send, guarded connection.

Feature descriptions use LeRobot's info.json format, ``{key: {"dtype", "shape", "names"}}``, so the twin and the
dataset writer read them like any other feature. Every value a robot returns is a NumPy array of exactly the
declared dtype and shape (a scalar such as ``timestamp`` has shape ``[1]``). A joint-space robot declares:

==================  =========  =====  ====================================================================
key                 dtype      shape  meaning
==================  =========  =====  ====================================================================
``joint.pos``       float64    [n]    measured joint positions (rad; m for prismatic joints)
``joint.vel``       float64    [n]    measured joint velocities (rad/s)
``joint.target``    float64    [n]    the target the robot is tracking now, after every safety clamp (rad)
``timestamp``       float64    [1]    when ``joint.pos`` was measured, ``time.monotonic()`` seconds of the
                                      caller's clock
==================  =========  =====  ====================================================================

A robot may declare more observation keys (cameras: ``observation.images.<camera>`` HxWx3 uint8,
``observation.depth.<camera>`` HxW float32); the four above are its joint state (``get_joint_state``).
Robots behind the safety layer add ``safety.status`` (bit field, see :mod:`real.safety`), ``safety.clamped`` and
``safety.refused`` (cumulative counts), all int64 ``[1]``. The action is ``{"joint.pos": float64 [n]}``: the joint
position targets (rad). ``send_action`` returns the target actually sent, after clamping.
"""

from __future__ import annotations

import dataclasses
import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

# The connection guards live in real.connection; they are imported here too, as part of this interface.
from real.connection import GUARD_ATTR
from real.connection import DeviceAlreadyConnectedError as DeviceAlreadyConnectedError
from real.connection import DeviceNotConnectedError as DeviceNotConnectedError
from real.connection import requires_connected as requires_connected
from real.connection import requires_disconnected as requires_disconnected

log = logging.getLogger(__name__)

# Methods every concrete robot must guard, and the guard each needs.
_GUARDED_METHODS = {
    "connect": "disconnected",
    "disconnect": "connected",
    "get_observation": "connected",
    "send_action": "connected",
    "hold": "connected",
    "get_joint_state": "connected",
}

JOINT_POS = "joint.pos"
JOINT_VEL = "joint.vel"
JOINT_TARGET = "joint.target"
TIMESTAMP = "timestamp"
SAFETY_STATUS = "safety.status"
SAFETY_CLAMPED = "safety.clamped"
SAFETY_REFUSED = "safety.refused"

JOINT_STATE_KEYS = (JOINT_POS, JOINT_VEL, JOINT_TARGET, TIMESTAMP)

Features = dict[str, dict[str, Any]]


def joint_features(joint_names: Sequence[str], safety: bool = False) -> tuple[Features, Features]:
    """Observation and action features of a joint-space robot with these joints (table in the module docstring).

    Args:
        joint_names: one name per joint, in command order.
        safety: add the ``safety.*`` keys of a robot behind the safety layer.

    Returns:
        ``(observation_features, action_features)``.

    Raises:
        ValueError: no joints, or duplicate names.
    """
    names = [str(n) for n in joint_names]
    if not names or len(set(names)) != len(names):
        raise ValueError(f"joint_names must be non-empty and unique, got {names}")
    vec = {"dtype": "float64", "shape": [len(names)], "names": names}
    obs: Features = {JOINT_POS: dict(vec), JOINT_VEL: dict(vec), JOINT_TARGET: dict(vec),
                     TIMESTAMP: {"dtype": "float64", "shape": [1], "names": None}}
    if safety:
        for key in (SAFETY_STATUS, SAFETY_CLAMPED, SAFETY_REFUSED):
            obs[key] = {"dtype": "int64", "shape": [1], "names": None}
    return obs, {JOINT_POS: dict(vec)}


def joint_state(pos: Any, vel: Any, target: Any, timestamp: float) -> dict[str, np.ndarray]:
    """The joint-state values of an observation (table in the module docstring), each a new float64 array.

    Args:
        pos: measured joint positions [n] (rad).
        vel: measured joint velocities [n] (rad/s).
        target: the target tracked now [n] (rad).
        timestamp: when ``pos`` was measured (s, ``time.monotonic()`` of the caller's clock).
    """
    return {JOINT_POS: np.array(pos, dtype=np.float64), JOINT_VEL: np.array(vel, dtype=np.float64),
            JOINT_TARGET: np.array(target, dtype=np.float64), TIMESTAMP: np.array([timestamp], dtype=np.float64)}


def safety_state(status: int, clamped: int, refused: int) -> dict[str, np.ndarray]:
    """The ``safety.*`` values of an observation: status bits and the cumulative clamp and refusal counts (int64 [1])."""
    return {SAFETY_STATUS: np.array([int(status)], dtype=np.int64), SAFETY_CLAMPED: np.array([clamped], dtype=np.int64),
            SAFETY_REFUSED: np.array([refused], dtype=np.int64)}


def check_values(values: Mapping[str, Any], features: Mapping[str, Mapping[str, Any]], what: str) -> None:
    """Check that ``values`` has exactly the keys of ``features``, each a NumPy array of the declared dtype and shape.

    Raises:
        KeyError: a key is missing or unexpected (the message names it).
        TypeError: a value is not an array of the declared dtype.
        ValueError: a value has the wrong shape.
    """
    missing, extra = sorted(set(features) - set(values)), sorted(set(values) - set(features))
    if missing or extra:
        raise KeyError(f"{what}: missing keys {missing}, unexpected keys {extra}")
    for key, spec in features.items():
        value = values[key]
        if not isinstance(value, np.ndarray) or value.dtype != np.dtype(spec["dtype"]):
            raise TypeError(f"{what}[{key!r}]: expected a {spec['dtype']} ndarray, got {type(value).__name__} "
                            f"{getattr(value, 'dtype', '')}")
        if list(value.shape) != list(spec["shape"]):
            raise ValueError(f"{what}[{key!r}]: expected shape {spec['shape']}, got {list(value.shape)}")


def joint_action(action: Mapping[str, Any], n_joints: int) -> np.ndarray:
    """The ``joint.pos`` target of an action as a float64 array of ``n_joints`` (rad); values are not checked here.

    Raises:
        KeyError: the action has no ``joint.pos`` or has other keys.
        ValueError: the target has the wrong size or is not numeric.
    """
    if not isinstance(action, Mapping) or set(action) != {JOINT_POS}:
        keys = sorted(action) if isinstance(action, Mapping) else type(action).__name__
        raise KeyError(f"action must be {{{JOINT_POS!r}: array of {n_joints}}}, got keys {keys}")
    try:
        target = np.asarray(action[JOINT_POS], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"action[{JOINT_POS!r}] is not numeric: {exc}") from exc
    if target.shape != (n_joints,):
        raise ValueError(f"action[{JOINT_POS!r}] must have shape ({n_joints},), got {target.shape}")
    return target.copy()


@dataclasses.dataclass
class RobotConfig:
    """Fields every robot config shares."""

    id: str = "robot"  # a name for logs, e.g. "left_arm"

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise ValueError(f"RobotConfig.id must be a non-empty string, got {self.id!r}")


def _is_abstract(cls: type) -> bool:
    """Whether ``cls`` still has abstract methods (``ABCMeta`` sets that flag only after ``__init_subclass__``)."""
    if any(getattr(v, "__isabstractmethod__", False) for v in vars(cls).values()):
        return True
    inherited = {name for base in cls.__bases__ for name in getattr(base, "__abstractmethods__", ())}
    return any(getattr(getattr(cls, name, None), "__isabstractmethod__", False) for name in inherited)


class Robot(ABC):
    """Base of every robot backend: simulated, emulated, remote or hardware.

    Contract (checked when a concrete subclass is defined, so a broken robot fails at import):

    * ``name: ClassVar[str]`` (the registry/config name) and ``config_class`` (a :class:`RobotConfig` subclass);
    * ``connect`` is decorated with :func:`requires_disconnected`; ``disconnect``, ``get_observation``,
      ``get_joint_state``, ``send_action`` and ``hold`` with :func:`requires_connected`.

    A backend passes its features to the constructor, ``super().__init__(config, observation_features,
    action_features)``, which is pure (no I/O), so they can be read before ``connect()``. ``is_connected`` is a
    flag of this base: a backend's ``connect()`` ends with :meth:`_mark_connected`, its ``disconnect()`` (and any
    path that loses the link) calls :meth:`_mark_disconnected`. ``send_action`` returns the action actually sent,
    after clamping. As a context manager a robot connects on entry (unless already connected) and on exit always
    commands ``hold()`` and then ``disconnect()``, even when the block raised or ``hold()`` failed.

    Raises:
        TypeError: from the constructor, if ``config`` is not a ``config_class``.
    """

    name: ClassVar[str]
    config_class: ClassVar[type[RobotConfig]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if _is_abstract(cls):
            return
        name = cls.__dict__.get("name", getattr(cls, "name", None))
        if not isinstance(name, str) or not name:
            raise TypeError(f"robot class {cls.__qualname__} must define `name: ClassVar[str]`")
        config_class = getattr(cls, "config_class", None)
        if not (isinstance(config_class, type) and issubclass(config_class, RobotConfig)):
            raise TypeError(f"robot class {cls.__qualname__} must define `config_class`, a RobotConfig subclass")
        for method, guard in _GUARDED_METHODS.items():
            if getattr(getattr(cls, method), GUARD_ATTR, None) != guard:
                decorator = "requires_disconnected" if guard == "disconnected" else "requires_connected"
                raise TypeError(f"robot class {cls.__qualname__}: `{method}` must be decorated with @{decorator}")

    def __init__(self, config: RobotConfig, observation_features: Features, action_features: Features) -> None:
        """Keep the config and the features (read-only after this; no I/O here).

        Args:
            config: a ``config_class`` instance.
            observation_features: what ``get_observation()`` returns (info.json style, module docstring).
            action_features: what ``send_action`` takes.

        Raises:
            TypeError: ``config`` is not a ``config_class``.
        """
        self.config = self.checked_config(config)
        self._observation_features = observation_features
        self._action_features = action_features
        self._connected = False

    @classmethod
    def checked_config(cls, config: RobotConfig) -> RobotConfig:
        """``config`` itself, once it is known to be a ``config_class`` (for a subclass that derives its features from it
        before calling ``Robot.__init__``).

        Raises:
            TypeError: ``config`` is not a ``config_class``.
        """
        if not isinstance(config, cls.config_class):
            raise TypeError(f"{cls.__name__} needs a {cls.config_class.__name__}, got {type(config).__name__}")
        return config

    def __repr__(self) -> str:
        return f"{type(self).__name__}(id={self.config.id!r})"

    @property
    def observation_features(self) -> Features:
        """info.json-style description of ``get_observation()``'s values; available before ``connect()``."""
        return self._observation_features

    @property
    def action_features(self) -> Features:
        """info.json-style description of ``send_action``'s argument; available before ``connect()``."""
        return self._action_features

    @property
    def is_connected(self) -> bool:
        """Whether the robot is connected and accepts commands: ``connect()`` succeeded, ``disconnect()`` (or a lost
        link) has not ended it since, and the link is still up (:meth:`_link_alive`)."""
        return self._connected and self._link_alive()

    def _mark_connected(self) -> None:
        """Record that ``connect()`` succeeded; call it last in ``connect()``."""
        self._connected = True

    def _mark_disconnected(self) -> None:
        """Record that the robot is no longer connected: from ``disconnect()``, or when the link is lost."""
        self._connected = False

    def _link_alive(self) -> bool:
        """Whether the link ``connect()`` opened is still up (default ``True``); a backend whose link can die on its
        own (a port closed elsewhere, a thread that ended) overrides this with a cheap check."""
        return True

    @property
    def joint_names(self) -> list[str]:
        """Joint names in command order (from ``action_features``)."""
        return list(self.action_features[JOINT_POS]["names"])

    @abstractmethod
    def connect(self) -> None:
        """Open the connection (ports, sockets, SDK sessions); the robot then holds its current position.

        Raises:
            DeviceAlreadyConnectedError: already connected.
            ConnectionError: the device cannot be reached.
        """

    @abstractmethod
    def disconnect(self) -> None:
        """Close the connection after leaving the robot holding.

        Raises:
            DeviceNotConnectedError: not connected.
        """

    @abstractmethod
    def get_observation(self) -> dict[str, np.ndarray]:
        """The latest measurement, one array per ``observation_features`` key.

        Raises:
            DeviceNotConnectedError: not connected.
        """

    @requires_connected
    def get_joint_state(self) -> dict[str, np.ndarray]:
        """Only ``joint.pos``, ``joint.vel``, ``joint.target`` and ``timestamp``: what the bridge reads at its
        command rate (500 Hz). The default takes them from ``get_observation()``; a backend whose observation also
        reads cameras should override this with a cheap read (and keep the ``requires_connected`` decorator).

        Raises:
            DeviceNotConnectedError: not connected.
        """
        obs = self.get_observation()
        return {key: obs[key] for key in JOINT_STATE_KEYS}

    def read_sensors(self) -> dict[str, Any]:
        """The latest sensor readings, ``{key: real.sensors.SensorReading}`` (keys in :mod:`real.sensors`).

        The default has no sensors and returns ``{}``. A backend with cameras overrides it; it must be cheap enough
        for the bridge to call at the cameras' rate (return the latest captured frames, do not capture here).
        """
        return {}

    def sensor_calibration(self) -> dict[str, np.ndarray]:
        """Static calibration of the sensors (``calibration.<camera>.*`` keys, :mod:`real.sensors`); default ``{}``."""
        return {}

    @abstractmethod
    def send_action(self, action: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Command ``{"joint.pos": targets}`` (rad) and return the targets actually sent, after clamping.

        Raises:
            DeviceNotConnectedError: not connected.
            KeyError, ValueError: a malformed action (wrong keys or size).
        """

    @abstractmethod
    def hold(self) -> None:
        """Command the robot to stop and stay still: target := where it comes to rest, braking within its limits.

        Raises:
            DeviceNotConnectedError: not connected.
        """

    def __enter__(self) -> Robot:
        if not self.is_connected:
            self.connect()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if not self.is_connected:
            return
        try:
            self.hold()
        except Exception:  # still disconnect: a robot left connected is worse than a failed hold
            log.exception("%r: hold() failed while leaving the context; disconnecting anyway", self)
        finally:
            if self.is_connected:
                self.disconnect()
