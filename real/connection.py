"""Connection guards of the :class:`real.robot.Robot` interface: the errors and the decorators that raise them.

A robot method decorated with :func:`requires_connected` raises :class:`DeviceNotConnectedError` when called on a
robot that is not connected; :func:`requires_disconnected` (on ``connect``) raises
:class:`DeviceAlreadyConnectedError` on one that is. Each decorator marks its wrapper with :data:`GUARD_ATTR`, so
``Robot`` can check at class definition that every method that needs a guard has the right one.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

_F = TypeVar("_F", bound=Callable[..., Any])
GUARD_ATTR = "__robot_connection_guard__"  # on a guarded method: "connected" or "disconnected"


class DeviceNotConnectedError(ConnectionError):
    """A method that needs a connected robot was called before ``connect()`` or after ``disconnect()``."""


class DeviceAlreadyConnectedError(ConnectionError):
    """``connect()`` was called on a robot that is already connected."""


def requires_connected(method: _F) -> _F:
    """Decorator: raise :class:`DeviceNotConnectedError` if ``self.is_connected`` is false when ``method`` is called."""

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        if not self.is_connected:
            raise DeviceNotConnectedError(f"{type(self).__name__}.{method.__name__}(): robot {self} is not connected")
        return method(self, *args, **kwargs)

    setattr(wrapper, GUARD_ATTR, "connected")
    return wrapper  # type: ignore[return-value]


def requires_disconnected(method: _F) -> _F:
    """Decorator: raise :class:`DeviceAlreadyConnectedError` if ``self.is_connected`` is true when ``method`` is called."""

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        if self.is_connected:
            raise DeviceAlreadyConnectedError(f"{type(self).__name__}.{method.__name__}(): robot {self} is already connected")
        return method(self, *args, **kwargs)

    setattr(wrapper, GUARD_ATTR, "disconnected")
    return wrapper  # type: ignore[return-value]
