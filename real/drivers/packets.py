"""Servo-side framing of the two bus protocols, written from the protocol specifications (not from the SDKs).

The emulated bus parses instruction packets and builds status packets with these codecs, so a test that runs a
vendor SDK against it checks the SDK's packet code against an independent implementation.

Dynamixel Protocol 2.0::

    instruction  FF FF FD 00 | ID | LEN_L LEN_H | INST | PARAM... | CRC_L CRC_H
    status       FF FF FD 00 | ID | LEN_L LEN_H | 55 | ERR | PARAM... | CRC_L CRC_H

``LEN`` counts the bytes after itself (instruction, parameters, CRC). The CRC is CRC-16 with polynomial 0x8005,
initial value 0, no reflection, over every byte before it. Inside a packet, ``FF FF FD`` is sent as
``FF FF FD FD`` (byte stuffing); ``LEN`` and the CRC cover the stuffed bytes.

Feetech (SCS/STS, the layout of Dynamixel Protocol 1.0)::

    instruction  FF FF | ID | LEN | INST | PARAM... | CHK
    status       FF FF | ID | LEN | ERR | PARAM... | CHK

``LEN`` = number of parameters + 2; ``CHK`` = ``~(ID + LEN + INST/ERR + sum(PARAM)) & 0xFF``.
"""

from __future__ import annotations

import dataclasses

BROADCAST_ID = 0xFE
INST_PING, INST_READ, INST_WRITE, INST_SYNC_READ, INST_SYNC_WRITE = 0x01, 0x02, 0x03, 0x82, 0x83
DXL_INST_STATUS = 0x55
DXL_HEADER = b"\xff\xff\xfd\x00"
FEETECH_HEADER = b"\xff\xff"


@dataclasses.dataclass(frozen=True)
class Instruction:
    """One instruction packet as the servo sees it.

    Attributes:
        servo_id: target id (0xFE = broadcast).
        instruction: instruction code.
        params: parameters, unstuffed.
        check_ok: False if the CRC/checksum did not match (the parameters are then not to be trusted).
    """

    servo_id: int
    instruction: int
    params: bytes
    check_ok: bool = True


def crc16_dxl(data: bytes | bytearray) -> int:
    """CRC-16 of Dynamixel Protocol 2.0 (polynomial 0x8005, init 0, MSB first, no final xor), bit by bit."""
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x8005) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc


def stuff(body: bytes) -> bytes:
    """Byte-stuff a Protocol 2.0 instruction/status field (without CRC): every ``FF FF FD`` gets an extra ``FD``."""
    out = bytearray()
    for byte in body:
        out.append(byte)
        if byte == 0xFD and out[-3:-1] == b"\xff\xff":
            out.append(0xFD)
    return bytes(out)


def unstuff(body: bytes) -> bytes:
    """Undo :func:`stuff`: drop the ``FD`` that follows each ``FF FF FD``."""
    out = bytearray()
    i = 0
    while i < len(body):
        out.append(body[i])
        if body[i] == 0xFD and out[-3:-1] == b"\xff\xff" and body[i + 1:i + 2] == b"\xfd":
            i += 1  # skip the stuffing byte
        i += 1
    return bytes(out)


class _ByteBuffer:
    """The host-to-servo byte buffer both codecs frame packets from."""

    def __init__(self) -> None:
        self._buf = bytearray()

    @property
    def pending(self) -> int:
        """Bytes received but not yet part of a complete packet."""
        return len(self._buf)

    def reset(self) -> None:
        """Drop a partial packet (a servo does this when the bytes of a packet stop coming)."""
        self._buf.clear()


class Dxl2Codec(_ByteBuffer):
    """Protocol 2.0 framing for a servo: :meth:`feed` bytes from the host, get instructions; build status packets."""

    name = "dynamixel"
    max_length = 1024


    def status(self, servo_id: int, error: int, params: bytes = b"", corrupt: bool = False) -> bytes:
        """A status packet; with ``corrupt`` its CRC is deliberately wrong (fault injection)."""
        head = DXL_HEADER + bytes([servo_id])
        body = stuff(bytes([DXL_INST_STATUS, error]) + params)
        length = len(body) + 2
        packet = head + length.to_bytes(2, "little") + body
        crc = crc16_dxl(packet) ^ (0x00FF if corrupt else 0)
        return packet + crc.to_bytes(2, "little")

    def instruction(self, servo_id: int, instruction: int, params: bytes = b"") -> bytes:
        """An instruction packet (what a host sends); for tests of the parser."""
        body = stuff(bytes([instruction]) + params)
        packet = DXL_HEADER + bytes([servo_id]) + (len(body) + 2).to_bytes(2, "little") + body
        return packet + crc16_dxl(packet).to_bytes(2, "little")

    def feed(self, data: bytes) -> list[Instruction]:
        """Append received bytes; return every complete instruction packet found (bad CRC ones flagged)."""
        self._buf += data
        found = []
        while True:
            start = self._buf.find(DXL_HEADER)
            if start < 0:
                # keep a possible partial header at the end
                del self._buf[:max(0, len(self._buf) - 3)]
                return found
            del self._buf[:start]
            if len(self._buf) < 7:
                return found
            length = int.from_bytes(self._buf[5:7], "little")
            if length < 3 or length > self.max_length:
                del self._buf[:1]  # not a packet: resync on the next header
                continue
            total = 7 + length
            if len(self._buf) < total:
                return found
            packet, self._buf = bytes(self._buf[:total]), self._buf[total:]
            crc_ok = crc16_dxl(packet[:-2]) == int.from_bytes(packet[-2:], "little")
            body = unstuff(packet[7:-2])
            found.append(Instruction(packet[4], body[0], bytes(body[1:]), crc_ok))


class FeetechCodec(_ByteBuffer):
    """Feetech SCS/STS framing for a servo: :meth:`feed` bytes from the host, get instructions; build statuses."""

    name = "feetech"
    max_length = 250


    @staticmethod
    def checksum(data: bytes | bytearray) -> int:
        """``~sum(data) & 0xFF`` over ID, LEN, INST/ERR and the parameters."""
        return ~sum(data) & 0xFF

    def status(self, servo_id: int, error: int, params: bytes = b"", corrupt: bool = False) -> bytes:
        """A status packet; with ``corrupt`` its checksum is deliberately wrong (fault injection)."""
        body = bytes([servo_id, len(params) + 2, error]) + params
        return FEETECH_HEADER + body + bytes([self.checksum(body) ^ (0xFF if corrupt else 0)])

    def instruction(self, servo_id: int, instruction: int, params: bytes = b"") -> bytes:
        """An instruction packet (what a host sends); for tests of the parser."""
        body = bytes([servo_id, len(params) + 2, instruction]) + params
        return FEETECH_HEADER + body + bytes([self.checksum(body)])

    def feed(self, data: bytes) -> list[Instruction]:
        """Append received bytes; return every complete instruction packet found (bad checksum ones flagged)."""
        self._buf += data
        found = []
        while True:
            start = self._buf.find(FEETECH_HEADER)
            if start < 0:
                del self._buf[:max(0, len(self._buf) - 1)]
                return found
            del self._buf[:start]
            if len(self._buf) < 4:
                return found
            servo_id, length = self._buf[2], self._buf[3]
            if servo_id == 0xFF or length < 2:
                del self._buf[:1]
                continue
            total = 4 + length
            if len(self._buf) < total:
                return found
            packet, self._buf = bytes(self._buf[:total]), self._buf[total:]
            ok = self.checksum(packet[2:-1]) == packet[-1]
            found.append(Instruction(servo_id, packet[4], packet[5:-1], ok))


CODECS = {"dynamixel": Dxl2Codec, "feetech": FeetechCodec}
