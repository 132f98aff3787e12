"""The bridge's versioned binary wire protocol: frames, message payloads and a strict incremental decoder.

Frame layout (little-endian, 28-byte header, 4-byte trailer)::

    offset  size  field
    0       4     magic          b"RSIM"
    4       1     version        PROTOCOL_VERSION (1)
    5       1     type           MsgType
    6       2     flags          Flag bits; unknown bits are an error
    8       8     seq            u64, per sender and connection, strictly increasing
    16      8     timestamp_ns   i64, sender's time.monotonic_ns() when the frame was built
    24      4     length         u32, payload bytes, at most the decoder's max_payload (64 KiB by default)
    28      n     payload        message-specific, see the payload classes below
    28+n    4     crc32          zlib.crc32 of bytes [0, 28+n)

The decoder checks magic, version, type, flags and length as soon as the header is in, so a bad length is
rejected before any payload is buffered, and it never blocks: it only looks at the bytes it was fed. Payload
decoders check sizes exactly. Every failure raises :class:`ProtocolError`; nothing else escapes.

Conversation (client C, server S)::

    S->C HELLO(server nonce, auth_required)   C->S AUTH(client nonce, HMAC)   S->C WELCOME(server HMAC, robot JSON)
    then C->S COMMAND | HEARTBEAT | HOLD | ESTOP | RESET | BYE, each answered by S->C STATE (ack_seq = the request's seq),
    C->S READ_SENSORS(what), answered by S->C SENSORS (named arrays: camera frames, calibration; see
    :class:`Sensors`), and S->C ERROR(code, text) before S closes the connection on a fatal error.

SENSORS is the one message whose payload may exceed MAX_PAYLOAD: up to MAX_SENSOR_PAYLOAD (a few 96x96 float32
depth frames take ~37 KB each). Only a client that asks for sensors needs a decoder with that larger bound.

The HMACs are SHA-256 over a role label and both nonces (:func:`auth_mac`), so each side proves it knows the
shared secret without sending it, and neither proof can be replayed on another connection. Frames after the
handshake are not signed or encrypted: on an untrusted network run the bridge inside a VPN or SSH tunnel.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import hmac
import json
import math
import struct
import zlib
from typing import Any, ClassVar

import numpy as np

MAGIC = b"RSIM"
PROTOCOL_VERSION = 1
HEADER = struct.Struct("<4sBBHQqI")
TRAILER = struct.Struct("<I")
HEADER_SIZE = HEADER.size  # 28
MAX_PAYLOAD = 64 * 1024  # bytes; the default bound of the decoder
MAX_SENSOR_PAYLOAD = 4 * 1024 * 1024  # bytes; the bound of a SENSORS payload (e.g. 100 96x96 float32 depth frames)
MAX_SENSOR_ARRAYS = 64  # named arrays in one SENSORS message
MAX_SENSOR_NAME = 128  # bytes of UTF-8 in an array name
MAX_SENSOR_NDIM = 4
MAX_JOINTS = 64
NONCE_SIZE = 32
MAC_SIZE = 32
MAX_ERROR_TEXT = 1024  # bytes of UTF-8 in an ERROR message


class ProtocolError(ValueError):
    """A frame or payload violates the protocol (bad magic, version, type, flags, length, CRC or payload size)."""


class MsgType(enum.IntEnum):
    """Message types; the value is the header's ``type`` byte."""

    HELLO = 1  # S->C: Hello
    AUTH = 2  # C->S: Auth
    WELCOME = 3  # S->C: Welcome
    COMMAND = 4  # C->S: Command (joint targets)
    STATE = 5  # S->C: State (reply to every request)
    ESTOP = 6  # C->S: latch the e-stop (empty payload)
    RESET = 7  # C->S: release the e-stop (empty payload)
    HEARTBEAT = 8  # C->S: ask for the state; does not feed the watchdog (empty payload)
    ERROR = 9  # S->C: ErrorMessage, then the connection closes
    BYE = 10  # C->S: orderly disconnect; the robot holds (empty payload)
    HOLD = 11  # C->S: hold the current position (empty payload)
    READ_SENSORS = 12  # C->S: ReadSensors (which parts: readings and/or calibration)
    SENSORS = 13  # S->C: Sensors (reply to READ_SENSORS)


class Flag(enum.IntFlag):
    """Header flag bits."""

    NONE = 0
    AUTH_REQUIRED = 1  # on HELLO: the server needs a valid HMAC


_KNOWN_FLAGS = int(Flag.AUTH_REQUIRED)
_EMPTY_TYPES = frozenset({MsgType.ESTOP, MsgType.RESET, MsgType.HEARTBEAT, MsgType.BYE, MsgType.HOLD})


class ErrorCode(enum.IntEnum):
    """Codes carried by ERROR messages."""

    PROTOCOL = 1  # malformed frame or unexpected message
    AUTH_FAILED = 2  # wrong or missing HMAC
    VERSION = 3  # unsupported protocol version
    BUSY = 4  # the server has no free connection slot
    INTERNAL = 5  # the backend failed
    SHUTDOWN = 6  # the server is stopping


@dataclasses.dataclass(frozen=True)
class Frame:
    """One decoded frame: header fields and the raw payload."""

    type: MsgType
    seq: int
    timestamp_ns: int
    payload: bytes
    flags: int = 0


def encode_frame(msg_type: MsgType, seq: int, timestamp_ns: int, payload: bytes = b"", flags: int = 0) -> bytes:
    """Build one frame (layout in the module docstring).

    Raises:
        ProtocolError: a field is out of range (seq not u64, flags unknown, payload over MAX_PAYLOAD).
    """
    if not 0 <= seq < 2**64:
        raise ProtocolError(f"seq must be a u64, got {seq}")
    if flags & ~_KNOWN_FLAGS or flags < 0:
        raise ProtocolError(f"unknown flag bits {flags:#x}")
    limit, limit_name = (MAX_SENSOR_PAYLOAD, "MAX_SENSOR_PAYLOAD") if msg_type == MsgType.SENSORS else (MAX_PAYLOAD,
                                                                                                     "MAX_PAYLOAD")
    if len(payload) > limit:
        raise ProtocolError(f"{getattr(msg_type, 'name', msg_type)} payload of {len(payload)} bytes exceeds {limit_name}={limit}")
    head = HEADER.pack(MAGIC, PROTOCOL_VERSION, int(msg_type), flags, seq, timestamp_ns, len(payload))
    body = head + payload
    return body + TRAILER.pack(zlib.crc32(body))


class FrameDecoder:
    """Incremental, strict frame decoder with bounded memory.

    ``feed(bytes)`` appends received bytes; ``next_frame()`` returns the next complete frame, ``None`` if more
    bytes are needed, or raises :class:`ProtocolError`. After an error the decoder resynchronises: it drops the
    bad bytes up to the next magic, so a following ``next_frame()`` continues with what may be a valid frame.
    On a reliable stream (TCP) the caller should rather drop the connection on the first error.

    Args:
        max_payload: largest accepted payload (bytes); a header announcing more is rejected at once.
        max_buffer: most bytes held between calls (default: four maximum frames); ``feed`` raises beyond it.

    Raises:
        ValueError: from the constructor, for a non-positive bound.
    """

    def __init__(self, max_payload: int = MAX_PAYLOAD, max_buffer: int | None = None) -> None:
        if max_payload <= 0:
            raise ValueError(f"max_payload must be > 0, got {max_payload}")
        self.max_payload = int(max_payload)
        self.max_buffer = int(max_buffer) if max_buffer is not None else 4 * (HEADER_SIZE + max_payload + TRAILER.size)
        if self.max_buffer < HEADER_SIZE + self.max_payload + TRAILER.size:
            raise ValueError(f"max_buffer {self.max_buffer} cannot hold one maximum frame")
        self._buf = bytearray()
        self.n_errors = 0  # protocol errors raised so far
        self.n_skipped = 0  # bytes dropped while resynchronising

    @property
    def buffered(self) -> int:
        """Bytes received and not yet consumed."""
        return len(self._buf)

    def feed(self, data: bytes) -> None:
        """Append received bytes.

        Raises:
            ProtocolError: the buffer would exceed ``max_buffer`` (the caller is not draining frames).
        """
        if len(self._buf) + len(data) > self.max_buffer:
            raise ProtocolError(f"decoder buffer overflow: {len(self._buf) + len(data)} > {self.max_buffer} bytes")
        self._buf += data

    def _fail(self, message: str) -> ProtocolError:
        """Drop bytes up to the next magic after position 0 and return the error to raise."""
        self.n_errors += 1
        cut = self._buf.find(MAGIC, 1)
        if cut < 0:  # keep a tail that may be the start of the next magic
            cut = max(1, len(self._buf) - (len(MAGIC) - 1))
        self.n_skipped += cut
        del self._buf[:cut]
        return ProtocolError(message)

    def next_frame(self) -> Frame | None:
        """The next complete frame, or ``None`` if more bytes are needed.

        Raises:
            ProtocolError: bad magic, version, type, flags, length or CRC (the bad bytes are dropped first).
        """
        buf = self._buf
        if len(buf) < HEADER_SIZE:
            if buf and not MAGIC.startswith(bytes(buf[: len(MAGIC)])):
                raise self._fail(f"bad magic {bytes(buf[:4])!r}")
            return None
        magic, version, msg_type, flags, seq, ts, length = HEADER.unpack_from(buf)
        if magic != MAGIC:
            raise self._fail(f"bad magic {magic!r}")
        if version != PROTOCOL_VERSION:
            raise self._fail(f"unsupported protocol version {version} (this side speaks {PROTOCOL_VERSION})")
        if msg_type not in _TYPE_VALUES:
            raise self._fail(f"unknown message type {msg_type}")
        if flags & ~_KNOWN_FLAGS:
            raise self._fail(f"unknown flag bits {flags:#x}")
        if length > self.max_payload:
            raise self._fail(f"payload length {length} exceeds the limit of {self.max_payload} bytes")
        end = HEADER_SIZE + length
        if len(buf) < end + TRAILER.size:
            return None
        (crc,) = TRAILER.unpack_from(buf, end)
        if crc != zlib.crc32(memoryview(buf)[:end]):
            raise self._fail(f"CRC mismatch in a {MsgType(msg_type).name} frame (seq {seq})")
        payload = bytes(buf[HEADER_SIZE:end])
        del buf[: end + TRAILER.size]
        return Frame(MsgType(msg_type), seq, ts, payload, flags)

    def frames(self) -> list[Frame]:
        """Every complete frame buffered now (stops at, and raises, the first error)."""
        out = []
        while (frame := self.next_frame()) is not None:
            out.append(frame)
        return out


_TYPE_VALUES = frozenset(int(t) for t in MsgType)


def check_empty(frame: Frame) -> None:
    """Check that a message type without payload (ESTOP, RESET, HEARTBEAT, BYE, HOLD) has none.

    Raises:
        ProtocolError: the payload is not empty.
    """
    if frame.payload:
        raise ProtocolError(f"{frame.type.name} must have an empty payload, got {len(frame.payload)} bytes")


def _exact(payload: bytes, size: int, what: str) -> None:
    if len(payload) != size:
        raise ProtocolError(f"{what} payload must be {size} bytes, got {len(payload)}")


def _joint_count(n: int, what: str) -> int:
    if not 1 <= n <= MAX_JOINTS:
        raise ProtocolError(f"{what}: joint count {n} outside [1, {MAX_JOINTS}]")
    return n


@dataclasses.dataclass(frozen=True)
class Hello:
    """S->C: the server's nonce and whether it requires authentication."""

    TYPE: ClassVar[MsgType] = MsgType.HELLO
    _S: ClassVar[struct.Struct] = struct.Struct(f"<{NONCE_SIZE}sB")
    nonce: bytes
    auth_required: bool

    def encode(self) -> bytes:
        """Payload bytes."""
        return self._S.pack(self.nonce, int(self.auth_required))

    @classmethod
    def decode(cls, payload: bytes) -> Hello:
        """Parse a payload; raises ProtocolError on a wrong size or flag byte."""
        _exact(payload, cls._S.size, "HELLO")
        nonce, auth = cls._S.unpack(payload)
        if auth not in (0, 1):
            raise ProtocolError(f"HELLO auth_required byte must be 0 or 1, got {auth}")
        return cls(nonce, bool(auth))


@dataclasses.dataclass(frozen=True)
class Auth:
    """C->S: the client's nonce and its HMAC proof (all zeros when the server needs none)."""

    TYPE: ClassVar[MsgType] = MsgType.AUTH
    _S: ClassVar[struct.Struct] = struct.Struct(f"<{NONCE_SIZE}s{MAC_SIZE}s")
    nonce: bytes
    mac: bytes

    def encode(self) -> bytes:
        """Payload bytes."""
        return self._S.pack(self.nonce, self.mac)

    @classmethod
    def decode(cls, payload: bytes) -> Auth:
        """Parse a payload; raises ProtocolError on a wrong size."""
        _exact(payload, cls._S.size, "AUTH")
        return cls(*cls._S.unpack(payload))


@dataclasses.dataclass(frozen=True)
class Welcome:
    """S->C: the server's HMAC proof and a JSON description of the robot (name, features, limits)."""

    TYPE: ClassVar[MsgType] = MsgType.WELCOME
    mac: bytes
    info: dict[str, Any]

    def encode(self) -> bytes:
        """Payload bytes: the MAC followed by UTF-8 JSON."""
        return self.mac + json.dumps(self.info, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, payload: bytes) -> Welcome:
        """Parse a payload; raises ProtocolError on a short payload or JSON that is not an object."""
        if len(payload) < MAC_SIZE:
            raise ProtocolError(f"WELCOME payload must be at least {MAC_SIZE} bytes, got {len(payload)}")
        try:
            info = json.loads(payload[MAC_SIZE:].decode())
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ProtocolError(f"WELCOME robot description is not valid JSON: {exc}") from None
        if not isinstance(info, dict):
            raise ProtocolError("WELCOME robot description must be a JSON object")
        return cls(payload[:MAC_SIZE], info)


@dataclasses.dataclass(frozen=True)
class Command:
    """C->S: joint position targets (rad), float64; the header's seq and timestamp date it."""

    TYPE: ClassVar[MsgType] = MsgType.COMMAND
    _N: ClassVar[struct.Struct] = struct.Struct("<H")
    positions: np.ndarray

    def encode(self) -> bytes:
        """Payload bytes: u16 count, then float64 targets."""
        q = np.ascontiguousarray(self.positions, dtype="<f8")
        return self._N.pack(_joint_count(q.size, "COMMAND")) + q.tobytes()

    @classmethod
    def decode(cls, payload: bytes) -> Command:
        """Parse a payload; raises ProtocolError on a bad count or size (values are not checked here)."""
        if len(payload) < cls._N.size:
            raise ProtocolError(f"COMMAND payload too short ({len(payload)} bytes)")
        (n,) = cls._N.unpack_from(payload)
        _exact(payload, cls._N.size + 8 * _joint_count(n, "COMMAND"), "COMMAND")
        return cls(np.frombuffer(payload, "<f8", n, cls._N.size).astype(np.float64))


@dataclasses.dataclass(frozen=True)
class State:
    """S->C: the robot's state and the safety layer's verdict, in reply to the request with seq ``ack_seq``.

    Times are the server's ``time.monotonic_ns()``; ``status`` is a :class:`real.safety.Status` bit field and
    ``last_refusal`` a :class:`real.safety.Refusal` code for the acknowledged request (0 if it was accepted).
    """

    TYPE: ClassVar[MsgType] = MsgType.STATE
    _H: ClassVar[struct.Struct] = struct.Struct("<QqIHHQQ")
    ack_seq: int
    measured_ns: int
    status: int
    last_refusal: int
    clamped: int
    refused: int
    positions: np.ndarray
    velocities: np.ndarray
    targets: np.ndarray

    def encode(self) -> bytes:
        """Payload bytes: fixed fields, then positions, velocities and targets as float64."""
        n = _joint_count(np.size(self.positions), "STATE")
        arrays = np.concatenate([np.ravel(a) for a in (self.positions, self.velocities, self.targets)])
        if arrays.size != 3 * n:
            raise ProtocolError("STATE positions, velocities and targets must have the same length")
        head = self._H.pack(self.ack_seq, self.measured_ns, self.status, self.last_refusal, n, self.clamped,
                            self.refused)
        return head + arrays.astype("<f8").tobytes()

    @classmethod
    def decode(cls, payload: bytes) -> State:
        """Parse a payload; raises ProtocolError on a bad count or size."""
        if len(payload) < cls._H.size:
            raise ProtocolError(f"STATE payload too short ({len(payload)} bytes)")
        ack, measured, status, refusal, n, clamped, refused = cls._H.unpack_from(payload)
        _exact(payload, cls._H.size + 24 * _joint_count(n, "STATE"), "STATE")
        arrays = np.frombuffer(payload, "<f8", 3 * n, cls._H.size).astype(np.float64).reshape(3, n)
        return cls(ack, measured, status, refusal, clamped, refused, arrays[0], arrays[1], arrays[2])


@dataclasses.dataclass(frozen=True)
class ErrorMessage:
    """S->C: why the server is closing the connection."""

    TYPE: ClassVar[MsgType] = MsgType.ERROR
    _C: ClassVar[struct.Struct] = struct.Struct("<H")
    code: int
    text: str

    def encode(self) -> bytes:
        """Payload bytes: u16 code, then UTF-8 text (truncated to MAX_ERROR_TEXT bytes)."""
        text = self.text.encode()[:MAX_ERROR_TEXT].decode(errors="ignore").encode()
        return self._C.pack(self.code) + text

    @classmethod
    def decode(cls, payload: bytes) -> ErrorMessage:
        """Parse a payload; raises ProtocolError on a short or oversized payload."""
        if not cls._C.size <= len(payload) <= cls._C.size + MAX_ERROR_TEXT:
            raise ProtocolError(f"ERROR payload must be {cls._C.size}..{cls._C.size + MAX_ERROR_TEXT} bytes, "
                                f"got {len(payload)}")
        (code,) = cls._C.unpack_from(payload)
        return cls(code, payload[cls._C.size:].decode(errors="replace"))


class SensorPart(enum.IntFlag):
    """What a READ_SENSORS request asks for."""

    READINGS = 1  # the latest sensor readings (camera frames, ...)
    CALIBRATION = 2  # the sensors' calibration (camera intrinsics and extrinsics)


@dataclasses.dataclass(frozen=True)
class ReadSensors:
    """C->S: ask for the latest readings and/or the calibration (a :class:`SensorPart` bit field)."""

    TYPE: ClassVar[MsgType] = MsgType.READ_SENSORS
    _S: ClassVar[struct.Struct] = struct.Struct("<B")
    parts: int = int(SensorPart.READINGS)

    def encode(self) -> bytes:
        """Payload bytes: one byte of SensorPart bits."""
        if not 0 < self.parts <= int(SensorPart.READINGS | SensorPart.CALIBRATION):
            raise ProtocolError(f"READ_SENSORS parts must be a non-empty SensorPart bit field, got {self.parts}")
        return self._S.pack(self.parts)

    @classmethod
    def decode(cls, payload: bytes) -> ReadSensors:
        """Parse a payload; raises ProtocolError on a wrong size or unknown bits."""
        _exact(payload, cls._S.size, "READ_SENSORS")
        (parts,) = cls._S.unpack(payload)
        if not 0 < parts <= int(SensorPart.READINGS | SensorPart.CALIBRATION):
            raise ProtocolError(f"READ_SENSORS parts must be a non-empty SensorPart bit field, got {parts}")
        return cls(parts)


# dtype code on the wire -> NumPy dtype (little-endian); the only array types a SENSORS message carries.
SENSOR_DTYPES: dict[int, np.dtype] = {1: np.dtype("u1"), 2: np.dtype("<f4"), 3: np.dtype("<f8")}
_DTYPE_CODES = {dtype: code for code, dtype in SENSOR_DTYPES.items()}


@dataclasses.dataclass(frozen=True)
class SensorArray:
    """One named array of a SENSORS message and when it was captured (sender's ``time.monotonic_ns()``)."""

    name: str
    data: np.ndarray  # uint8, float32 or float64, at most MAX_SENSOR_NDIM dimensions
    timestamp_ns: int


@dataclasses.dataclass(frozen=True)
class Sensors:
    """S->C: named arrays (camera frames, calibration matrices, ...), in reply to the request with seq ``ack_seq``.

    Payload: u64 ack_seq, u16 count, then per array: u8 name length, UTF-8 name, u8 dtype code (SENSOR_DTYPES),
    u8 ndim, ndim x u32 shape, i64 capture timestamp (ns), then the array's bytes in C order, little-endian.
    """

    TYPE: ClassVar[MsgType] = MsgType.SENSORS
    _H: ClassVar[struct.Struct] = struct.Struct("<QH")
    _A: ClassVar[struct.Struct] = struct.Struct("<BB")
    _T: ClassVar[struct.Struct] = struct.Struct("<q")
    ack_seq: int
    arrays: tuple[SensorArray, ...]

    def encode(self) -> bytes:
        """Payload bytes.

        Raises:
            ProtocolError: too many arrays, a bad name, an unsupported dtype or ndim, or a payload over
                MAX_SENSOR_PAYLOAD (the message names the array or the size).
        """
        if len(self.arrays) > MAX_SENSOR_ARRAYS:
            raise ProtocolError(f"SENSORS carries at most {MAX_SENSOR_ARRAYS} arrays, got {len(self.arrays)}")
        parts = [self._H.pack(self.ack_seq, len(self.arrays))]
        size = self._H.size
        for item in self.arrays:
            name = item.name.encode()
            if not 0 < len(name) <= MAX_SENSOR_NAME:
                raise ProtocolError(f"SENSORS array name {item.name!r} must be 1..{MAX_SENSOR_NAME} bytes")
            data = np.asarray(item.data)
            code = _DTYPE_CODES.get(data.dtype.newbyteorder("<") if data.dtype.byteorder == ">" else data.dtype)
            code = code if code is not None else _DTYPE_CODES.get(np.dtype(data.dtype.str.replace("=", "<")))
            if code is None:
                raise ProtocolError(f"SENSORS array {item.name!r}: dtype {data.dtype} is not one of uint8, float32, "
                                    f"float64")
            if data.ndim > MAX_SENSOR_NDIM:
                raise ProtocolError(f"SENSORS array {item.name!r}: {data.ndim} dimensions > {MAX_SENSOR_NDIM}")
            body = np.ascontiguousarray(data, dtype=SENSOR_DTYPES[code]).tobytes()
            head = (bytes([len(name)]) + name + self._A.pack(code, data.ndim)
                    + struct.pack(f"<{data.ndim}I", *data.shape) + self._T.pack(int(item.timestamp_ns)))
            size += len(head) + len(body)
            if size > MAX_SENSOR_PAYLOAD:
                raise ProtocolError(f"SENSORS payload exceeds MAX_SENSOR_PAYLOAD={MAX_SENSOR_PAYLOAD} bytes at array "
                                    f"{item.name!r} ({size} bytes so far): send fewer or smaller frames")
            parts += [head, body]
        return b"".join(parts)

    @classmethod
    def decode(cls, payload: bytes) -> Sensors:
        """Parse a payload; raises ProtocolError on any size, name, dtype or shape that does not add up exactly."""
        view = memoryview(payload)
        if len(view) < cls._H.size:
            raise ProtocolError(f"SENSORS payload too short ({len(view)} bytes)")
        ack, count = cls._H.unpack_from(view)
        if count > MAX_SENSOR_ARRAYS:
            raise ProtocolError(f"SENSORS announces {count} arrays, at most {MAX_SENSOR_ARRAYS} allowed")
        pos, arrays = cls._H.size, []
        for index in range(count):
            if pos >= len(view):
                raise ProtocolError(f"SENSORS payload ends before array {index}")
            name_len = view[pos]
            pos += 1
            if not 0 < name_len <= MAX_SENSOR_NAME or pos + name_len + cls._A.size > len(view):
                raise ProtocolError(f"SENSORS array {index}: bad name length {name_len}")
            try:
                name = bytes(view[pos:pos + name_len]).decode()
            except UnicodeDecodeError:
                raise ProtocolError(f"SENSORS array {index}: name is not UTF-8") from None
            pos += name_len
            code, ndim = cls._A.unpack_from(view, pos)
            pos += cls._A.size
            if code not in SENSOR_DTYPES or ndim > MAX_SENSOR_NDIM:
                raise ProtocolError(f"SENSORS array {name!r}: unknown dtype code {code} or ndim {ndim}")
            if pos + 4 * ndim + cls._T.size > len(view):
                raise ProtocolError(f"SENSORS array {name!r}: truncated header")
            shape = struct.unpack_from(f"<{ndim}I", view, pos)
            pos += 4 * ndim
            (stamp,) = cls._T.unpack_from(view, pos)
            pos += cls._T.size
            nbytes = SENSOR_DTYPES[code].itemsize * math.prod(shape)
            if pos + nbytes > len(view):
                raise ProtocolError(f"SENSORS array {name!r}: {nbytes} data bytes announced, {len(view) - pos} left")
            data = np.frombuffer(view, SENSOR_DTYPES[code], nbytes // SENSOR_DTYPES[code].itemsize, pos)
            arrays.append(SensorArray(name, data.reshape(shape).copy(), stamp))
            pos += nbytes
        if pos != len(view):
            raise ProtocolError(f"SENSORS payload has {len(view) - pos} trailing bytes")
        return cls(ack, tuple(arrays))


PAYLOAD_CLASSES: dict[MsgType, Any] = {c.TYPE: c for c in (Hello, Auth, Welcome, Command, State, ErrorMessage,
                                                            ReadSensors, Sensors)}


def decode_payload(frame: Frame) -> Any:
    """The typed payload of a frame (``None`` for the empty message types).

    Raises:
        ProtocolError: the payload does not match its message type.
    """
    if frame.type in _EMPTY_TYPES:
        check_empty(frame)
        return None
    return PAYLOAD_CLASSES[frame.type].decode(frame.payload)


def auth_mac(secret: bytes, role: bytes, first_nonce: bytes, second_nonce: bytes) -> bytes:
    """HMAC-SHA256 proof that the sender knows ``secret``: over ``role`` (b"client"/b"server") and both nonces."""
    return hmac.new(secret, b"realsim-bridge/v1/" + role + b"/" + first_nonce + second_nonce, hashlib.sha256).digest()
