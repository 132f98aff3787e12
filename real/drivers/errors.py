"""Errors of the hardware drivers, and the import guard for the vendors' optional SDKs."""

from __future__ import annotations

import importlib
from types import ModuleType


class ServoBusError(ConnectionError):
    """Talking to a servo on a bus failed; the message names the port, the servo id and what was asked."""

    def __init__(self, message: str, motor_id: int | None = None) -> None:
        super().__init__(message)
        self.motor_id = motor_id


class ServoNotRespondingError(ServoBusError):
    """A servo sent no status packet in time: wrong id, unpowered, unplugged or at another baud rate."""


class CorruptPacketError(ServoBusError):
    """A status packet arrived but failed its CRC/checksum or framing check; its data was discarded."""


class ServoStatusError(ServoBusError):
    """A servo answered with its error field set (e.g. access error, data limit, overload)."""

    def __init__(self, message: str, motor_id: int | None = None, error: int = 0) -> None:
        super().__init__(message, motor_id)
        self.error = error


class MissingDriverError(ImportError):
    """The vendor package a driver needs is not installed; the message says which extra installs it."""


def import_sdk(module: str, package: str, extra: str, who: str) -> ModuleType:
    """Import a vendor SDK module, or explain how to install it.

    Args:
        module: the module to import, e.g. ``"dynamixel_sdk"``.
        package: the PyPI package that provides it, e.g. ``"dynamixel-sdk"``.
        extra: the realsim extra that installs it, e.g. ``"dynamixel"``.
        who: the class that needs it, for the message.

    Raises:
        MissingDriverError: the module cannot be imported.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDriverError(f"{who} needs the Python module {module!r} from the {package!r} package, which is "
                                 f"not installed: pip install 'realsim[{extra}]' (or pip install {package})") from exc
