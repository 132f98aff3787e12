"""An emulated servo bus on a pseudo-terminal: N servos that answer the vendor's real packet protocol.

A driver opens :attr:`EmulatedServoBus.port` (the pty's slave device, e.g. ``/dev/pts/7``) through the vendor
SDK's ``PortHandler`` exactly as it would open ``/dev/ttyUSB0``, so the SDK's packet code runs end to end. The bus
runs in a thread of the calling process (:meth:`EmulatedServoBus.start`) or as its own process
(``python -m real.drivers.emulated_bus --protocol feetech --ids 1 2 3 4 5 6``, which prints ``port: /dev/pts/N``
and serves until killed).

Each servo has a full control table (:mod:`real.drivers.control_table`) and answers PING, READ, WRITE, SYNC_READ
and SYNC_WRITE. With torque enabled its position moves toward the goal position at ``speed`` ticks/s (present
velocity reports that speed; ``moving`` is 1 until it arrives); with torque off it stays put. Dynamixel servos
also enforce what the real ones do: writes to EEPROM (addresses below 64) need torque off, read-only registers
refuse writes, and a goal outside the position limits is refused with a data-limit error (SYNC_WRITE has no
status, so it is dropped silently); an instruction with a bad CRC gets a CRC-error status. Feetech servos clamp
the goal to the limits and ignore packets with a bad checksum, as the real ones do.

Faults for tests: :meth:`~EmulatedServoBus.set_responding` (a servo that stays silent) and
:meth:`~EmulatedServoBus.corrupt_replies` (status packets with a wrong CRC/checksum).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import select
import signal
import sys
import threading
import time
import tty
from collections.abc import Mapping, Sequence

from real.drivers.control_table import CONTROL_TABLES, ControlTable
from real.drivers.packets import (
    BROADCAST_ID,
    CODECS,
    INST_PING,
    INST_READ,
    INST_SYNC_READ,
    INST_SYNC_WRITE,
    INST_WRITE,
    Instruction,
)
from real.stop_request import StopRequest

log = logging.getLogger(__name__)

# A partial packet older than this is dropped when the next bytes arrive, as a servo's receive timeout does (s).
PARTIAL_PACKET_TIMEOUT = 0.1
# Dynamixel Protocol 2.0 status error numbers.
DXL_ERR_INSTRUCTION, DXL_ERR_CRC, DXL_ERR_DATA_LIMIT, DXL_ERR_ACCESS = 2, 3, 6, 7


class _Servo:
    """State of one emulated servo: its control table bytes and a continuous position (ticks)."""

    def __init__(self, servo_id: int, table: ControlTable, model_number: int, ticks: int, speed: float) -> None:
        self.id = servo_id
        self.table = table
        self.mem = bytearray(table.size)
        self.position = float(ticks)
        self.speed = float(speed)
        self.responding = True
        self.corrupt = 0
        self.last_time = time.monotonic()
        self.set("model_number", model_number)
        self.set("id", servo_id)
        self.set("operating_mode", table.position_mode)
        self.set("min_position_limit", 0)
        self.set("max_position_limit", table.max_tick)
        self.set("goal_position", ticks)
        self._publish(0.0)

    def get(self, name: str) -> int:
        reg = self.table[name]
        return reg.decode(self.mem[reg.address:reg.address + reg.size])

    def set(self, name: str, value: int) -> None:
        reg = self.table[name]
        self.mem[reg.address:reg.address + reg.size] = reg.encode(value)

    def goal(self) -> int:
        lo, hi = self.get("min_position_limit"), self.get("max_position_limit")
        return min(max(self.get("goal_position"), lo), hi)

    def advance(self, now: float) -> None:
        """Move toward the goal for the time since the last call (only with torque on)."""
        dt, self.last_time = max(0.0, now - self.last_time), now
        velocity = 0.0
        if self.get("torque_enable"):
            diff, step = self.goal() - self.position, self.speed * dt
            if abs(diff) <= step:
                self.position = float(self.goal())
            else:
                self.position += math.copysign(step, diff)
                velocity = math.copysign(self.speed, diff)
        self._publish(velocity)

    def _publish(self, velocity_ticks: float) -> None:
        self.set("present_position", round(self.position))
        rad_s = velocity_ticks * 2.0 * math.pi / self.table.ticks_per_rev
        self.set("present_velocity", round(rad_s / self.table.velocity_unit))
        self.set("moving", int(velocity_ticks != 0.0))


class EmulatedServoBus:
    """N emulated servos behind a pseudo-terminal, speaking Dynamixel Protocol 2.0 or Feetech's protocol.

    Args:
        protocol: ``"dynamixel"`` (X-series control table) or ``"feetech"`` (STS control table).
        servo_ids: ids of the servos on the bus.
        ticks: initial position of every servo, or ``{id: ticks}``.
        speed: how fast a servo with torque on moves toward its goal (ticks/s).
        model_number: the model each servo reports (default: the first of the control table's models).

    Raises:
        ValueError: unknown protocol, bad ids, ticks outside the position range or a non-positive speed.
    """

    def __init__(self, protocol: str, servo_ids: Sequence[int], ticks: int | Mapping[int, int] = 2048,
                 speed: float = 4000.0, model_number: int | None = None) -> None:
        if protocol not in CONTROL_TABLES:
            raise ValueError(f"EmulatedServoBus: protocol must be one of {sorted(CONTROL_TABLES)}, got {protocol!r}")
        ids = [int(i) for i in servo_ids]
        if not ids or len(set(ids)) != len(ids) or not all(0 <= i <= 252 for i in ids):
            raise ValueError(f"EmulatedServoBus: servo_ids must be unique ids in 0..252, got {list(servo_ids)}")
        if not speed > 0:
            raise ValueError(f"EmulatedServoBus: speed must be > 0 ticks/s, got {speed}")
        self.protocol = protocol
        self.table = CONTROL_TABLES[protocol]
        start = dict(ticks) if isinstance(ticks, Mapping) else {i: int(ticks) for i in ids}
        bad = {i: t for i, t in start.items() if i not in ids or not 0 <= t <= self.table.max_tick}
        if bad or set(start) != set(ids):
            raise ValueError(f"EmulatedServoBus: ticks must give every id a position in 0..{self.table.max_tick}, "
                             f"got {start}")
        model = next(iter(self.table.model_numbers)) if model_number is None else int(model_number)
        self._servos = {i: _Servo(i, self.table, model, start[i], speed) for i in ids}
        self._codec = CODECS[protocol]()
        self._addr_bytes = 2 if protocol == "dynamixel" else 1
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = StopRequest()  # set by request_stop(), also from a SIGTERM handler: it must take no lock
        self._master = self._slave = -1
        self._wake_r = self._wake_w = -1
        self.port = ""
        self.stats = {"instructions": 0, "bad_check": 0, "replies": 0, "corrupted": 0}

    # ------------------------------------------------------------------ lifecycle

    def open(self) -> str:
        """Create the pseudo-terminal (raw mode) and return its slave path, without serving yet."""
        if self._master >= 0:
            raise RuntimeError(f"EmulatedServoBus: already open on {self.port}")
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        self._wake_r, self._wake_w = os.pipe()
        self.port = os.ttyname(self._slave)
        return self.port

    def start(self) -> str:
        """Open the pty and serve it in a daemon thread; return the slave path to give to a driver."""
        self.open()
        self._stop.clear()
        self._thread = threading.Thread(target=self.serve_forever, name=f"emulated-{self.protocol}-bus", daemon=True)
        self._thread.start()
        return self.port

    def request_stop(self) -> None:
        """Ask :meth:`serve_forever` to return soon (safe from a signal handler)."""
        self._stop.set()
        if self._wake_w >= 0:
            with contextlib.suppress(OSError):
                os.write(self._wake_w, b"x")

    def stop(self) -> None:
        """Stop serving and close the pty (no-op when not open)."""
        self.request_stop()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None
        for fd in (self._master, self._slave, self._wake_r, self._wake_w):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._master = self._slave = self._wake_r = self._wake_w = -1

    def __enter__(self) -> EmulatedServoBus:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def serve_forever(self) -> None:
        """Answer instruction packets until :meth:`stop` (run by :meth:`start`'s thread or by ``main``)."""
        if self._master < 0:
            raise RuntimeError("EmulatedServoBus.serve_forever(): call open() first")
        last_rx = time.monotonic()
        while not self._stop.is_set():
            readable, _, _ = select.select([self._master, self._wake_r], [], [], 0.5)
            if self._master not in readable:
                continue
            try:
                data = os.read(self._master, 4096)
            except OSError:  # the pty went away
                return
            now = time.monotonic()
            if self._codec.pending and now - last_rx > PARTIAL_PACKET_TIMEOUT:
                log.debug("emulated bus: dropping a stale partial packet of %d bytes", self._codec.pending)
                self._codec.reset()
            last_rx = now
            with self._lock:
                replies = b"".join(self._handle(p) for p in self._codec.feed(data))
            view = memoryview(replies)
            while view:
                view = view[os.write(self._master, view):]

    # ------------------------------------------------------------------ inspection and faults (thread-safe)

    def _servo(self, servo_id: int) -> _Servo:
        try:
            return self._servos[servo_id]
        except KeyError:
            raise KeyError(f"EmulatedServoBus: no servo id {servo_id} (ids {sorted(self._servos)})") from None

    def register(self, servo_id: int, name: str) -> int:
        """Current value of register ``name`` of a servo (after advancing its motion to now)."""
        with self._lock:
            servo = self._servo(servo_id)
            servo.advance(time.monotonic())
            return servo.get(name)

    def set_register(self, servo_id: int, name: str, value: int) -> None:
        """Set register ``name`` of a servo directly (as a previous session or a configuration tool left it)."""
        with self._lock:
            servo = self._servo(servo_id)
            servo.advance(time.monotonic())
            servo.set(name, value)

    def position(self, servo_id: int) -> float:
        """A servo's exact (continuous) position in ticks, now."""
        with self._lock:
            servo = self._servo(servo_id)
            servo.advance(time.monotonic())
            return servo.position

    def set_position(self, servo_id: int, ticks: float) -> None:
        """Move a servo instantly (as if pushed by hand); its goal is left alone."""
        with self._lock:
            servo = self._servo(servo_id)
            servo.advance(time.monotonic())
            servo.position = float(ticks)
            servo.advance(time.monotonic())

    def set_responding(self, servo_id: int, responding: bool) -> None:
        """Make a servo silent (as if unplugged) or bring it back."""
        with self._lock:
            self._servo(servo_id).responding = bool(responding)

    def corrupt_replies(self, servo_id: int, count: int) -> None:
        """Give the next ``count`` status packets of a servo a wrong CRC/checksum."""
        with self._lock:
            self._servo(servo_id).corrupt = int(count)

    # ------------------------------------------------------------------ protocol

    def _reply(self, servo: _Servo, error: int, params: bytes = b"") -> bytes:
        corrupt = servo.corrupt > 0
        if corrupt:
            servo.corrupt -= 1
            self.stats["corrupted"] += 1
        self.stats["replies"] += 1
        return self._codec.status(servo.id, error, params, corrupt=corrupt)

    def _split(self, params: bytes, count: int) -> list[int]:
        """The first ``count`` address/length fields of a packet (2 bytes each on Dynamixel, 1 on Feetech)."""
        n = self._addr_bytes
        if len(params) < n * count:
            raise ValueError("short parameters")
        return [int.from_bytes(params[k * n:(k + 1) * n], "little") for k in range(count)]

    def _handle(self, packet: Instruction) -> bytes:
        """Apply one instruction packet; return the status packets to send back (possibly none)."""
        self.stats["instructions"] += 1
        now = time.monotonic()
        for servo in self._servos.values():
            servo.advance(now)
        dxl = self.protocol == "dynamixel"
        target = self._servos.get(packet.servo_id)
        if not packet.check_ok:
            self.stats["bad_check"] += 1
            if dxl and target is not None and target.responding:
                return self._reply(target, DXL_ERR_CRC)
            return b""
        inst, params = packet.instruction, packet.params
        try:
            if inst in (INST_SYNC_READ, INST_SYNC_WRITE) and packet.servo_id == BROADCAST_ID:
                return self._sync(inst, params)
            if packet.servo_id == BROADCAST_ID:
                servos = list(self._servos.values())
            else:
                servos = [target] if target is not None else []
            out = b""
            for servo in servos:
                if servo.responding:
                    reply = self._unicast(servo, inst, params)
                    if packet.servo_id != BROADCAST_ID or inst == INST_PING:
                        out += reply
            return out
        except ValueError:  # malformed parameters: a real servo drops the packet
            return b""

    def _unicast(self, servo: _Servo, inst: int, params: bytes) -> bytes:
        dxl = self.protocol == "dynamixel"
        if inst == INST_PING:
            if dxl:
                model = servo.get("model_number")
                return self._reply(servo, 0, model.to_bytes(2, "little") + bytes([servo.get("firmware_version")]))
            return self._reply(servo, 0)
        if inst == INST_READ:
            address, length = self._split(params, 2)
            if address + length > len(servo.mem):
                return self._reply(servo, DXL_ERR_ACCESS if dxl else 0)
            return self._reply(servo, 0, bytes(servo.mem[address:address + length]))
        if inst == INST_WRITE:
            (address,) = self._split(params, 1)
            return self._reply(servo, self._write(servo, address, params[self._addr_bytes:]))
        return self._reply(servo, DXL_ERR_INSTRUCTION) if dxl else b""

    def _sync(self, inst: int, params: bytes) -> bytes:
        address, length = self._split(params, 2)
        rest = params[2 * self._addr_bytes:]
        if inst == INST_SYNC_READ:
            out = b""
            for servo_id in rest:
                servo = self._servos.get(servo_id)
                if servo is not None and servo.responding:
                    if address + length > len(servo.mem):
                        out += self._reply(servo, DXL_ERR_ACCESS if self.protocol == "dynamixel" else 0)
                    else:
                        out += self._reply(servo, 0, bytes(servo.mem[address:address + length]))
            return out
        for k in range(0, len(rest) - length, length + 1):
            servo = self._servos.get(rest[k])
            if servo is not None and servo.responding:
                self._write(servo, address, rest[k + 1:k + 1 + length])  # no status for SYNC_WRITE
        return b""

    def _write(self, servo: _Servo, address: int, data: bytes) -> int:
        """Write bytes into a servo's table as the real one would; return the status error (0 = done)."""
        dxl = self.protocol == "dynamixel"
        end = address + len(data)
        if not data or end > len(servo.mem):
            return DXL_ERR_ACCESS if dxl else 0
        touched = {name: reg for name, reg in self.table.registers.items()
                   if reg.address < end and address < reg.address + reg.size}
        if any(reg.read_only for reg in touched.values()):
            return DXL_ERR_ACCESS if dxl else 0
        eeprom = self.table.eeprom_end
        if eeprom is not None and address < eeprom and servo.get("torque_enable"):
            return DXL_ERR_ACCESS
        if dxl and "goal_position" in touched:
            goal_reg = self.table["goal_position"]
            new = bytearray(servo.mem[goal_reg.address:goal_reg.address + goal_reg.size])
            for k, byte in enumerate(data):
                if goal_reg.address <= address + k < goal_reg.address + goal_reg.size:
                    new[address + k - goal_reg.address] = byte
            goal = goal_reg.decode(new)
            if not servo.get("min_position_limit") <= goal <= servo.get("max_position_limit"):
                return DXL_ERR_DATA_LIMIT
        servo.mem[address:end] = data
        return 0


def main(argv: Sequence[str] | None = None) -> None:
    """Serve an emulated bus as its own process: print ``port: <path>``, serve until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--protocol", choices=sorted(CONTROL_TABLES), required=True)
    parser.add_argument("--ids", type=int, nargs="+", required=True, help="servo ids on the bus")
    parser.add_argument("--ticks", type=int, default=2048, help="initial position of every servo (ticks)")
    parser.add_argument("--speed", type=float, default=4000.0, help="servo speed toward its goal (ticks/s)")
    args = parser.parse_args(argv)
    bus = EmulatedServoBus(args.protocol, args.ids, ticks=args.ticks, speed=args.speed)
    print(f"port: {bus.open()}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: bus.request_stop())  # takes no lock (real.stop_request)
    try:
        bus.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        bus.stop()


if __name__ == "__main__":
    main(sys.argv[1:])
