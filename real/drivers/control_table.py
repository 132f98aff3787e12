"""Control tables of the servo families the drivers support: register addresses, sizes and value encodings.

The driver (:mod:`real.drivers.bus`) and the emulated bus (:mod:`real.drivers.emulated_bus`) both read these
tables, so a register is described once. Addresses are the vendors' published ones:

* ``DYNAMIXEL_X``: ROBOTIS X-series (XL430, XM430, XL330, ...) on Protocol 2.0. Multi-byte values are little-endian;
  positions and velocities are two's-complement signed. Addresses below 64 are EEPROM: a servo refuses writes there
  while its torque is enabled.
* ``FEETECH_STS``: Feetech STS series (STS3215 of the SO-100/101 arms) on Feetech's protocol. Little-endian
  (``protocol_end = 0``; the SCS series is big-endian and not supported); signed values use a sign bit
  (sign-magnitude), bit 15 for positions and speeds.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Literal

Encoding = Literal["unsigned", "twos", "sign_magnitude"]


@dataclasses.dataclass(frozen=True)
class Register:
    """One register of a control table.

    Attributes:
        address: first byte of the register in the control table.
        size: length in bytes (1, 2 or 4).
        encoding: how a signed value is stored: ``unsigned``, ``twos`` (two's complement) or ``sign_magnitude``
            (magnitude in the low bits, ``sign_bit`` set when negative).
        sign_bit: the sign bit of a ``sign_magnitude`` register.
        read_only: the servo refuses writes to it (e.g. present position).
    """

    address: int
    size: int
    encoding: Encoding = "unsigned"
    sign_bit: int = 15
    read_only: bool = False

    def __post_init__(self) -> None:
        if self.size not in (1, 2, 4):
            raise ValueError(f"Register.size must be 1, 2 or 4 bytes, got {self.size}")
        if self.encoding == "sign_magnitude" and not 0 <= self.sign_bit < 8 * self.size:
            raise ValueError(f"Register.sign_bit {self.sign_bit} is outside a {self.size}-byte register")

    @property
    def min_value(self) -> int:
        """Smallest value the register can hold."""
        if self.encoding == "twos":
            return -(1 << (8 * self.size - 1))
        if self.encoding == "sign_magnitude":
            return -((1 << self.sign_bit) - 1)
        return 0

    @property
    def max_value(self) -> int:
        """Largest value the register can hold."""
        if self.encoding == "twos":
            return (1 << (8 * self.size - 1)) - 1
        if self.encoding == "sign_magnitude":
            return (1 << self.sign_bit) - 1
        return (1 << (8 * self.size)) - 1

    def encode(self, value: int) -> bytes:
        """The register's bytes (little-endian) for the integer ``value``.

        Raises:
            ValueError: ``value`` does not fit the register.
        """
        value = int(value)
        if not self.min_value <= value <= self.max_value:
            raise ValueError(f"value {value} does not fit register @{self.address} "
                             f"({self.size} B, {self.encoding}): range [{self.min_value}, {self.max_value}]")
        if self.encoding == "sign_magnitude" and value < 0:
            raw = -value | (1 << self.sign_bit)
        else:
            raw = value & ((1 << (8 * self.size)) - 1)
        return raw.to_bytes(self.size, "little")

    def decode(self, data: bytes | bytearray | list[int]) -> int:
        """The integer value of the register's ``size`` bytes (little-endian).

        Raises:
            ValueError: ``data`` does not hold exactly ``size`` bytes.
        """
        if len(data) != self.size:
            raise ValueError(f"register @{self.address} has {self.size} bytes, got {len(data)}")
        raw = int.from_bytes(bytes(data), "little")
        if self.encoding == "twos" and raw >= 1 << (8 * self.size - 1):
            return raw - (1 << (8 * self.size))
        if self.encoding == "sign_magnitude" and raw & (1 << self.sign_bit):
            return -(raw & ((1 << self.sign_bit) - 1))
        return raw


@dataclasses.dataclass(frozen=True)
class ControlTable:
    """The registers and unit conventions of one servo family.

    Attributes:
        name: family name, e.g. ``"dynamixel_x"``.
        registers: register name -> :class:`Register`. Every table has ``model_number``, ``operating_mode``,
            ``torque_enable``, ``goal_position``, ``present_position``, ``present_velocity``, ``min_position_limit``
            and ``max_position_limit``.
        model_numbers: model number -> model name, for the models this table describes.
        position_mode: value of ``operating_mode`` for position control.
        ticks_per_rev: encoder ticks per revolution.
        max_tick: largest goal position in position mode (the range is ``[0, max_tick]``).
        velocity_unit: rad/s per unit of ``present_velocity``.
        eeprom_end: first RAM address; writes below it need torque off (None: no such rule).
        size: bytes in the table.
    """

    name: str
    registers: Mapping[str, Register]
    model_numbers: Mapping[int, str]
    position_mode: int
    ticks_per_rev: int = 4096
    max_tick: int = 4095
    velocity_unit: float = 2.0 * math.pi / 4096
    eeprom_end: int | None = None
    size: int = 256

    REQUIRED = ("model_number", "operating_mode", "torque_enable", "goal_position", "present_position",
                "present_velocity", "min_position_limit", "max_position_limit")

    def __post_init__(self) -> None:
        missing = [r for r in self.REQUIRED if r not in self.registers]
        if missing:
            raise ValueError(f"control table {self.name!r} lacks registers {missing}")
        for name, reg in self.registers.items():
            if reg.address + reg.size > self.size:
                raise ValueError(f"control table {self.name!r}: register {name!r} ends past byte {self.size}")

    def __getitem__(self, name: str) -> Register:
        """The register called ``name``.

        Raises:
            KeyError: no such register (the message lists the known ones).
        """
        try:
            return self.registers[name]
        except KeyError:
            raise KeyError(f"control table {self.name!r} has no register {name!r}; "
                           f"known: {sorted(self.registers)}") from None

    def span(self, names: tuple[str, ...] | list[str]) -> tuple[int, int]:
        """``(start_address, length)`` of the smallest block holding all ``names``, for one sync read.

        Raises:
            KeyError: an unknown register name.
            ValueError: no names given.
        """
        if not names:
            raise ValueError("span() needs at least one register name")
        regs = [self[n] for n in names]
        start = min(r.address for r in regs)
        return start, max(r.address + r.size for r in regs) - start


DYNAMIXEL_X = ControlTable(
    name="dynamixel_x",
    registers={
        "model_number": Register(0, 2, read_only=True),
        "firmware_version": Register(6, 1, read_only=True),
        "id": Register(7, 1),
        "baud_rate": Register(8, 1),
        "drive_mode": Register(10, 1),
        "operating_mode": Register(11, 1),
        "homing_offset": Register(20, 4, "twos"),
        "max_position_limit": Register(48, 4),
        "min_position_limit": Register(52, 4),
        "torque_enable": Register(64, 1),
        "led": Register(65, 1),
        "hardware_error_status": Register(70, 1, read_only=True),
        "profile_acceleration": Register(108, 4),
        "profile_velocity": Register(112, 4),
        "goal_position": Register(116, 4, "twos"),
        "moving": Register(122, 1, read_only=True),
        "present_current": Register(126, 2, "twos", read_only=True),
        "present_velocity": Register(128, 4, "twos", read_only=True),
        "present_position": Register(132, 4, "twos", read_only=True),
        "present_temperature": Register(146, 1, read_only=True),
    },
    model_numbers={1060: "XL430-W250", 1020: "XM430-W350", 1030: "XM430-W210", 1200: "XL330-M288",
                   1190: "XL330-M077", 1120: "XM540-W270"},
    position_mode=3,
    velocity_unit=0.229 * 2.0 * math.pi / 60.0,  # 0.229 rev/min per unit
    eeprom_end=64,
)

FEETECH_STS = ControlTable(
    name="feetech_sts",
    registers={
        "firmware_major": Register(0, 1, read_only=True),
        "firmware_minor": Register(1, 1, read_only=True),
        "model_number": Register(3, 2, read_only=True),
        "id": Register(5, 1),
        "baud_rate": Register(6, 1),
        "min_position_limit": Register(9, 2),
        "max_position_limit": Register(11, 2),
        "homing_offset": Register(31, 2, "sign_magnitude", sign_bit=11),
        "operating_mode": Register(33, 1),
        "torque_enable": Register(40, 1),
        "acceleration": Register(41, 1),
        "goal_position": Register(42, 2, "sign_magnitude"),
        "goal_time": Register(44, 2),
        "goal_velocity": Register(46, 2, "sign_magnitude"),
        "lock": Register(55, 1),
        "present_position": Register(56, 2, "sign_magnitude", read_only=True),
        "present_velocity": Register(58, 2, "sign_magnitude", read_only=True),
        "present_load": Register(60, 2, "sign_magnitude", sign_bit=10, read_only=True),
        "present_voltage": Register(62, 1, read_only=True),
        "present_temperature": Register(63, 1, read_only=True),
        "moving": Register(66, 1, read_only=True),
        "present_current": Register(69, 2, "sign_magnitude", read_only=True),
    },
    model_numbers={777: "STS3215"},
    position_mode=0,
    velocity_unit=2.0 * math.pi / 4096,  # one encoder step per second
)

CONTROL_TABLES: dict[str, ControlTable] = {"dynamixel": DYNAMIXEL_X, "feetech": FEETECH_STS}
