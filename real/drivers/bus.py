"""A servo bus driven through a vendor SDK (ROBOTIS ``dynamixel_sdk`` or Feetech ``scservo_sdk``).

Both SDKs expose the same objects (``PortHandler``, ``PacketHandler``, ``GroupSyncRead``, ``GroupSyncWrite``), so
one class drives both; :mod:`real.drivers.dynamixel` and :mod:`real.drivers.feetech` only say which SDK and which
control table. Every transaction goes through the SDK's packet code. What this layer adds:

* results checked: a missing status packet raises :class:`ServoNotRespondingError` naming the servo id, a status
  packet failing its CRC/checksum raises :class:`CorruptPacketError`, a status packet with its error field set
  raises :class:`ServoStatusError`; values are never taken from a failed transaction;
* retries: a failed read is retried ``num_retries`` times after flushing the port's input (a corrupt or late packet
  must not be read as the answer to the next request); every failure is counted in ``stats`` and logged;
* values as integers in the register's encoding (:mod:`real.drivers.control_table`).

The SDK's ``GroupSyncRead.rxPacket`` drops each servo's error field and does not say which servo failed, so a sync
read sends the instruction with ``GroupSyncRead.txPacket`` and collects each servo's status with the SDK's
``readRx``, in the order the servos answer.

Known SDK limit: ``dynamixel_sdk`` 4.1's ``txPacket`` drops the result of its own byte stuffing, so an instruction
whose parameters contain ``FF FF FD`` goes out unstuffed. Goal positions in 0..4095 never contain it; status packets
(servo to host) are unstuffed correctly.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from types import ModuleType
from typing import Any, ClassVar

import numpy as np

from real.drivers.control_table import ControlTable
from real.drivers.errors import (
    CorruptPacketError,
    ServoBusError,
    ServoNotRespondingError,
    ServoStatusError,
    import_sdk,
)

log = logging.getLogger(__name__)

BAUDRATES = (9600, 19200, 38400, 57600, 115200, 500000, 1000000)


class ServoBus:
    """One serial bus of servos of one family, through the vendor's SDK.

    The constructor does no I/O; :meth:`open` opens the port and pings every servo. Use as a context manager to
    close the port on exit.

    Args:
        port: serial device, e.g. ``/dev/ttyUSB0`` (or the slave path of an emulated bus).
        motor_ids: ids of the servos on the bus, in the order values are returned.
        baudrate: bus speed in bit/s; one of :data:`BAUDRATES`.
        num_retries: extra attempts after a failed read or ping (0 = fail at once).
        timeout_ms: least time to wait for a status packet (ms). None keeps the SDK's own timeout (transfer time
            plus twice a 16 ms USB latency timer, ~35 ms); raise it for adapters with a longer latency timer, or for
            an emulated bus on a loaded machine.

    Raises:
        ValueError: empty or duplicate ids, an id outside 0..252, a negative ``num_retries``, a non-positive
        ``timeout_ms`` or an unknown baud rate.
    """

    # Set by each SDK's subclass.
    sdk_module: ClassVar[str]
    sdk_package: ClassVar[str]
    extra: ClassVar[str]
    table: ClassVar[ControlTable]

    def __init__(self, port: str, motor_ids: Sequence[int], baudrate: int = 1_000_000, num_retries: int = 2,
                 timeout_ms: float | None = None) -> None:
        ids = [int(i) for i in motor_ids]
        if not ids or len(set(ids)) != len(ids) or not all(0 <= i <= 252 for i in ids):
            raise ValueError(f"{type(self).__name__}: motor_ids must be unique ids in 0..252, got {list(motor_ids)}")
        if baudrate not in BAUDRATES:
            raise ValueError(f"{type(self).__name__}: baudrate {baudrate} is not one of {BAUDRATES}")
        if num_retries < 0:
            raise ValueError(f"{type(self).__name__}: num_retries must be >= 0, got {num_retries}")
        if timeout_ms is not None and not timeout_ms > 0:
            raise ValueError(f"{type(self).__name__}: timeout_ms must be > 0 or None, got {timeout_ms}")
        self.port = str(port)
        self.motor_ids = ids
        self.baudrate = int(baudrate)
        self.num_retries = int(num_retries)
        self.timeout_ms = None if timeout_ms is None else float(timeout_ms)
        self.stats = {"transactions": 0, "retries": 0, "rx_timeout": 0, "rx_corrupt": 0}
        self._sdk: ModuleType | None = None
        self._port: Any = None
        self._packet: Any = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(port={self.port!r}, motor_ids={self.motor_ids})"

    # ------------------------------------------------------------------ connection

    @property
    def is_open(self) -> bool:
        """Whether the port is open."""
        return self._port is not None

    def _make_packet_handler(self, sdk: ModuleType) -> Any:
        """The SDK's packet handler for this bus's protocol."""
        raise NotImplementedError

    def open(self) -> dict[int, int]:
        """Open the port at ``baudrate`` and ping every servo.

        Returns:
            Model number of each servo, by id.

        Raises:
            MissingDriverError: the SDK is not installed.
            ConnectionError: the port cannot be opened.
            ServoNotRespondingError: a servo does not answer (the message names every missing id).
            ServoBusError: a servo is not a model of this bus's control table.
        """
        if self.is_open:
            raise ServoBusError(f"{self}: already open")
        sdk = import_sdk(self.sdk_module, self.sdk_package, self.extra, type(self).__name__)
        port = sdk.PortHandler(self.port)
        if self.timeout_ms is not None:
            _raise_timeout_floor(port, self.timeout_ms)
        try:
            opened = port.openPort() and port.setBaudRate(self.baudrate)
        except Exception as exc:  # pyserial raises SerialException (an OSError) or ValueError
            raise ConnectionError(f"{self}: cannot open serial port {self.port!r}: {exc}") from exc
        if not opened:
            raise ConnectionError(f"{self}: cannot open serial port {self.port!r} at {self.baudrate} bit/s")
        self._sdk, self._port, self._packet = sdk, port, self._make_packet_handler(sdk)
        try:
            return self._ping_all()
        except BaseException:
            self.close()
            raise

    def _ping_all(self) -> dict[int, int]:
        models, missing = {}, []
        for motor_id in self.motor_ids:
            try:
                models[motor_id] = self.ping(motor_id)
            except ServoNotRespondingError:
                missing.append(motor_id)
        if missing:
            raise ServoNotRespondingError(f"{self}: servo id(s) {missing} did not answer PING on {self.port!r} at "
                                          f"{self.baudrate} bit/s (wrong id, baud rate, power or cable?)",
                                          motor_id=missing[0])
        for motor_id, model in models.items():
            if model not in self.table.model_numbers:
                raise ServoBusError(f"{self}: servo id {motor_id} reports model number {model}, not a "
                                    f"{self.table.name} model {dict(self.table.model_numbers)}", motor_id=motor_id)
        return models

    def close(self) -> None:
        """Close the port (no-op when closed). Leaves the servos as they are: torque is not changed here."""
        if self._port is not None:
            try:
                self._port.closePort()
            finally:
                self._port = self._packet = None

    def __enter__(self) -> ServoBus:
        if not self.is_open:
            self.open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------ transactions

    def _require_open(self) -> None:
        if self._port is None:
            raise ServoBusError(f"{self}: the port is not open; call open() first")

    def _flush_input(self) -> None:
        """Drop whatever is left in the port's input, so a late or corrupt packet is not read as the next answer."""
        time.sleep(0.002)
        self._port.ser.reset_input_buffer()

    def _check(self, what: str, motor_id: int, result: int, error: int) -> None:
        """Raise the error that a transaction's ``(result, error)`` means; return if it succeeded."""
        sdk = self._sdk
        if result == sdk.COMM_SUCCESS:
            if error:
                raise ServoStatusError(f"{self}: servo id {motor_id} answered {what} with error 0x{error:02x}: "
                                       f"{self._packet.getRxPacketError(error)}", motor_id=motor_id, error=error)
            return
        text = self._packet.getTxRxResult(result)
        if result == sdk.COMM_RX_TIMEOUT:
            self.stats["rx_timeout"] += 1
            raise ServoNotRespondingError(f"{self}: servo id {motor_id} did not answer {what}: {text}",
                                          motor_id=motor_id)
        if result == sdk.COMM_RX_CORRUPT:
            self.stats["rx_corrupt"] += 1
            raise CorruptPacketError(f"{self}: corrupt status packet from servo id {motor_id} for {what} "
                                     f"(bad CRC/checksum or framing; data discarded): {text}", motor_id=motor_id)
        raise ServoBusError(f"{self}: {what} to servo id {motor_id} failed: {text} (code {result})", motor_id=motor_id)

    def _with_retries(self, what: str, attempt: Callable[[], Any]) -> Any:
        """Run ``attempt`` until it does not raise a communication error, at most ``1 + num_retries`` times."""
        self._require_open()
        for i in range(self.num_retries + 1):
            self.stats["transactions"] += 1
            try:
                return attempt()
            except (ServoNotRespondingError, CorruptPacketError) as exc:
                if i == self.num_retries:
                    raise
                self.stats["retries"] += 1
                log.warning("%s (attempt %d of %d; retrying)", exc, i + 1, self.num_retries + 1)
                self._flush_input()
        raise AssertionError("unreachable")

    def ping(self, motor_id: int) -> int:
        """Ping one servo and return its model number.

        Raises:
            ServoNotRespondingError, CorruptPacketError, ServoStatusError: see the module docstring.
        """
        def attempt() -> int:
            model, result, error = self._packet.ping(self._port, motor_id)
            self._check("PING", motor_id, result, error)
            return int(model)

        return self._with_retries("PING", attempt)

    def read(self, name: str, motor_id: int) -> int:
        """Read register ``name`` of one servo.

        Raises:
            KeyError: unknown register.
            ServoNotRespondingError, CorruptPacketError, ServoStatusError: see the module docstring.
        """
        reg = self.table[name]

        def attempt() -> int:
            data, result, error = self._packet.readTxRx(self._port, motor_id, reg.address, reg.size)
            self._check(f"READ {name}", motor_id, result, error)
            return reg.decode(data)

        return self._with_retries(f"READ {name}", attempt)

    def write(self, name: str, motor_id: int, value: int) -> None:
        """Write register ``name`` of one servo and wait for its status packet.

        Writes are not retried: a write whose status was lost may have been applied.

        Raises:
            KeyError: unknown register. ValueError: ``value`` does not fit it.
            ServoNotRespondingError, CorruptPacketError, ServoStatusError: see the module docstring.
        """
        reg = self.table[name]
        data = list(reg.encode(value))
        self._require_open()
        self.stats["transactions"] += 1
        result, error = self._packet.writeTxRx(self._port, motor_id, reg.address, reg.size, data)
        self._check(f"WRITE {name}={value}", motor_id, result, error)

    def sync_read(self, names: str | Sequence[str], motor_ids: Sequence[int] | None = None) -> dict[str, np.ndarray]:
        """Read registers ``names`` of several servos with one SYNC_READ instruction.

        The registers are read as one block from the lowest to the highest address, so they should be close
        together (e.g. present velocity and present position).

        Args:
            names: a register name or several.
            motor_ids: servos to read (default: all of the bus's, in order).

        Returns:
            ``{name: int64 array}``, one value per servo in ``motor_ids`` order.

        Raises:
            KeyError: unknown register or a servo id not on this bus.
            ServoNotRespondingError: a servo sent no status (the message names it).
            CorruptPacketError: a status packet failed its check (the message names the servo).
            ServoStatusError: a servo reported an error.
        """
        names = [names] if isinstance(names, str) else list(names)
        ids = self._ids(motor_ids)
        start, length = self.table.span(names)
        regs = {n: self.table[n] for n in names}
        what = f"SYNC_READ {'+'.join(names)}"

        def attempt() -> dict[str, np.ndarray]:
            group = self._sdk.GroupSyncRead(self._port, self._packet, start, length)
            for motor_id in ids:
                group.addParam(motor_id)
            result = group.txPacket()
            if result != self._sdk.COMM_SUCCESS:
                self._check(what, ids[0], result, 0)
            out = {n: np.empty(len(ids), dtype=np.int64) for n in names}
            for k, motor_id in enumerate(ids):
                data, result, error = self._packet.readRx(self._port, motor_id, length)
                self._check(what, motor_id, result, error)
                if len(data) != length:
                    self.stats["rx_corrupt"] += 1
                    raise CorruptPacketError(f"{self}: servo id {motor_id} sent {len(data)} bytes for {what}, "
                                             f"expected {length}", motor_id=motor_id)
                for n, reg in regs.items():
                    out[n][k] = reg.decode(data[reg.address - start: reg.address - start + reg.size])
            return out

        return self._with_retries(what, attempt)

    def sync_write(self, name: str, values: Mapping[int, int] | Sequence[int] | np.ndarray) -> None:
        """Write register ``name`` of several servos with one SYNC_WRITE instruction (servos send no status).

        Args:
            name: register name.
            values: ``{motor_id: value}``, or one value per bus servo in ``motor_ids`` order.

        Raises:
            KeyError: unknown register or servo id. ValueError: a value does not fit the register, or the wrong
            number of values. ServoBusError: the SDK could not send the packet.
        """
        reg = self.table[name]
        if not isinstance(values, Mapping):
            seq = [int(v) for v in np.asarray(values).reshape(-1)]
            if len(seq) != len(self.motor_ids):
                raise ValueError(f"{self}: sync_write({name!r}) got {len(seq)} values for {len(self.motor_ids)} servos")
            values = dict(zip(self.motor_ids, seq, strict=True))
        self._ids(list(values))
        self._require_open()
        group = self._sdk.GroupSyncWrite(self._port, self._packet, reg.address, reg.size)
        for motor_id, value in values.items():
            group.addParam(int(motor_id), list(reg.encode(value)))
        self.stats["transactions"] += 1
        result = group.txPacket()
        if result != self._sdk.COMM_SUCCESS:
            self._check(f"SYNC_WRITE {name}", int(next(iter(values))), result, 0)

    def _ids(self, motor_ids: Sequence[int] | None) -> list[int]:
        if motor_ids is None:
            return list(self.motor_ids)
        ids = [int(i) for i in motor_ids]
        unknown = [i for i in ids if i not in self.motor_ids]
        if unknown or not ids:
            raise KeyError(f"{self}: servo id(s) {unknown or ids} are not on this bus (ids {self.motor_ids})")
        return ids


def _raise_timeout_floor(port: Any, timeout_ms: float) -> None:
    """Make the SDK port wait at least ``timeout_ms`` for a status packet.

    Both SDKs set the deadline through ``PortHandler.setPacketTimeout`` before every receive; this wraps that method
    on this one port object (the SDK's module and other ports are untouched).
    """
    sdk_set_timeout = port.setPacketTimeout

    def set_packet_timeout(packet_length: int) -> None:
        sdk_set_timeout(packet_length)
        port.packet_timeout = max(port.packet_timeout, timeout_ms)

    port.setPacketTimeout = set_packet_timeout
