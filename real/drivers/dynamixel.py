"""ROBOTIS Dynamixel X-series servos on Protocol 2.0, through ``dynamixel_sdk`` (extra ``realsim[dynamixel]``)."""

from __future__ import annotations

from types import ModuleType
from typing import Any

from real.drivers.bus import ServoBus
from real.drivers.control_table import DYNAMIXEL_X


class DynamixelBus(ServoBus):
    """A Protocol 2.0 bus of Dynamixel X-series servos (Koch arms); see :class:`real.drivers.bus.ServoBus`."""

    sdk_module = "dynamixel_sdk"
    sdk_package = "dynamixel-sdk"
    extra = "dynamixel"
    table = DYNAMIXEL_X

    def _make_packet_handler(self, sdk: ModuleType) -> Any:
        return sdk.PacketHandler(2.0)
