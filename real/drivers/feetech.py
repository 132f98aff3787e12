"""Feetech STS-series servos (SO-100/101 arms), through ``scservo_sdk`` from ``feetech-servo-sdk``
(extra ``realsim[feetech]``)."""

from __future__ import annotations

from types import ModuleType
from typing import Any

from real.drivers.bus import ServoBus
from real.drivers.control_table import FEETECH_STS


class FeetechBus(ServoBus):
    """A bus of Feetech STS servos; see :class:`real.drivers.bus.ServoBus`.

    ``scservo_sdk.PacketHandler(end)`` sets the byte order for the whole process: this class always uses 0
    (little-endian, STS series), so SCS-series (big-endian) servos cannot share the process.
    """

    sdk_module = "scservo_sdk"
    sdk_package = "feetech-servo-sdk"
    extra = "feetech"
    table = FEETECH_STS

    def _make_packet_handler(self, sdk: ModuleType) -> Any:
        return sdk.PacketHandler(0)
