"""Wire protocol: payload round trips, strict decoding of bad frames, resynchronisation, and a bounded fuzz."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest

from real.bridge.protocol import (
    HEADER,
    HEADER_SIZE,
    MAGIC,
    MAX_JOINTS,
    MAX_PAYLOAD,
    PROTOCOL_VERSION,
    Auth,
    Command,
    ErrorMessage,
    Flag,
    Frame,
    FrameDecoder,
    Hello,
    MsgType,
    ProtocolError,
    State,
    Welcome,
    auth_mac,
    decode_payload,
    encode_frame,
)


def _state(n: int = 7, seed: int = 0) -> State:
    rng = np.random.default_rng(seed)
    return State(ack_seq=2**63 + 5, measured_ns=-123, status=0b10110, last_refusal=3, clamped=17, refused=2**40,
                 positions=rng.normal(size=n), velocities=rng.normal(size=n), targets=rng.normal(size=n))


def _sample_frames() -> list[bytes]:
    """One valid frame of every message type."""
    payloads = {
        MsgType.HELLO: Hello(b"n" * 32, True).encode(),
        MsgType.AUTH: Auth(b"c" * 32, b"m" * 32).encode(),
        MsgType.WELCOME: Welcome(b"w" * 32, {"joint_names": ["a", "b"], "x": 1.5}).encode(),
        MsgType.COMMAND: Command(np.linspace(-1, 1, 7)).encode(),
        MsgType.STATE: _state().encode(),
        MsgType.ERROR: ErrorMessage(2, "nope").encode(),
    }
    frames = []
    for seq, msg_type in enumerate(MsgType, start=1):
        flags = int(Flag.AUTH_REQUIRED) if msg_type == MsgType.HELLO else 0
        frames.append(encode_frame(msg_type, seq, 10**9 + seq, payloads.get(msg_type, b""), flags))
    return frames


def _decode_all(data: bytes, chunk: int = 7) -> list[Frame]:
    decoder = FrameDecoder()
    out = []
    for i in range(0, len(data), chunk):
        decoder.feed(data[i:i + chunk])
        out.extend(decoder.frames())
    return out


def test_every_message_round_trips_through_frames_fed_in_small_chunks():
    frames = _decode_all(b"".join(_sample_frames()))
    assert [f.type for f in frames] == list(MsgType)
    assert [f.seq for f in frames] == list(range(1, len(MsgType) + 1))
    assert frames[0].flags == Flag.AUTH_REQUIRED and frames[0].timestamp_ns == 10**9 + 1
    hello, auth, welcome, command, state, _, _, _, error = (decode_payload(f) for f in frames[:9])
    assert hello == Hello(b"n" * 32, True) and auth == Auth(b"c" * 32, b"m" * 32)
    assert welcome.info == {"joint_names": ["a", "b"], "x": 1.5} and welcome.mac == b"w" * 32
    np.testing.assert_array_equal(command.positions, np.linspace(-1, 1, 7))
    expected = _state()
    assert (state.ack_seq, state.measured_ns, state.status, state.last_refusal, state.clamped, state.refused) == (
        expected.ack_seq, expected.measured_ns, expected.status, expected.last_refusal, expected.clamped,
        expected.refused)
    for key in ("positions", "velocities", "targets"):
        np.testing.assert_array_equal(getattr(state, key), getattr(expected, key))
    assert error == ErrorMessage(2, "nope")
    assert all(decode_payload(f) is None for f in frames if f.type in (MsgType.HEARTBEAT, MsgType.BYE, MsgType.HOLD))


def test_float64_commands_are_bit_exact_including_special_values():
    q = np.array([np.pi, -0.0, 1e-300, np.nan, np.inf, -np.inf, 2.0**-1074])
    back = Command.decode(Command(q).encode()).positions
    assert back.dtype == np.float64
    np.testing.assert_array_equal(back.view(np.uint64), q.view(np.uint64))


def test_partial_frame_waits_for_more_bytes_and_never_guesses():
    frame = _sample_frames()[4]  # STATE
    decoder = FrameDecoder()
    for i in range(len(frame) - 1):
        decoder.feed(frame[i:i + 1])
        assert decoder.next_frame() is None
    decoder.feed(frame[-1:])
    assert decoder.next_frame().type == MsgType.STATE
    assert decoder.buffered == 0


def _corrupt(frame: bytes, offset: int, value: bytes, fix_crc: bool = True) -> bytes:
    data = bytearray(frame)
    data[offset:offset + len(value)] = value
    if fix_crc:
        data[-4:] = struct.pack("<I", zlib.crc32(bytes(data[:-4])))
    return bytes(data)


@pytest.mark.parametrize(("offset", "value", "fix_crc", "match"), [
    (0, b"XSIM", True, "bad magic"),
    (4, bytes([PROTOCOL_VERSION + 1]), True, "version"),
    (5, bytes([200]), True, "unknown message type"),
    (6, struct.pack("<H", 0x80), True, "flag"),
    (30, b"\xff", False, "CRC"),
])
def test_decoder_rejects_bad_magic_version_type_flags_and_crc(offset, value, fix_crc, match):
    bad = _corrupt(_sample_frames()[3], offset, value, fix_crc)  # a COMMAND frame
    decoder = FrameDecoder()
    decoder.feed(bad)
    with pytest.raises(ProtocolError, match=match):
        decoder.next_frame()


def test_oversized_length_is_rejected_from_the_header_alone():
    decoder = FrameDecoder(max_payload=1024)
    header = HEADER.pack(MAGIC, PROTOCOL_VERSION, int(MsgType.COMMAND), 0, 1, 0, 1025)
    decoder.feed(header)  # no payload bytes: it must not wait for them
    with pytest.raises(ProtocolError, match="exceeds the limit"):
        decoder.next_frame()
    with pytest.raises(ProtocolError, match="MAX_PAYLOAD"):
        encode_frame(MsgType.WELCOME, 1, 0, b"x" * (MAX_PAYLOAD + 1))


def test_feeding_past_the_buffer_bound_raises_instead_of_growing():
    decoder = FrameDecoder(max_payload=64)
    limit = decoder.max_buffer
    decoder.feed(MAGIC[:2])
    with pytest.raises(ProtocolError, match="overflow"):
        decoder.feed(b"\x00" * limit)


def test_payload_decoders_check_sizes_exactly():
    good = Command(np.zeros(7)).encode()
    with pytest.raises(ProtocolError, match="COMMAND"):
        Command.decode(good[:-1])
    with pytest.raises(ProtocolError, match="joint count"):
        Command.decode(struct.pack("<H", MAX_JOINTS + 1) + b"\x00" * 8 * (MAX_JOINTS + 1))
    with pytest.raises(ProtocolError, match="STATE"):
        State.decode(_state().encode() + b"\x00")
    with pytest.raises(ProtocolError, match="auth_required"):
        Hello.decode(b"n" * 32 + b"\x02")
    with pytest.raises(ProtocolError, match="JSON"):
        Welcome.decode(b"w" * 32 + b"{not json")
    with pytest.raises(ProtocolError, match="empty payload"):
        decode_payload(Frame(MsgType.HEARTBEAT, 1, 0, b"x"))


def test_decoder_resynchronises_on_the_next_magic_after_garbage():
    frames = _sample_frames()
    decoder = FrameDecoder()
    decoder.feed(b"garbage\x00RS" + frames[3] + b"RSI" + frames[8])
    got, errors = [], 0
    for _ in range(100):
        try:
            frame = decoder.next_frame()
        except ProtocolError:
            errors += 1
            continue
        if frame is None:
            break
        got.append(frame.type)
    assert got == [MsgType.COMMAND, MsgType.ERROR]
    assert errors >= 2 and decoder.n_skipped == len(b"garbage\x00RS") + len(b"RSI")


def test_hmac_proofs_depend_on_secret_role_and_both_nonces():
    a, b = b"a" * 32, b"b" * 32
    base = auth_mac(b"s3cret", b"client", a, b)
    assert len(base) == 32
    assert base != auth_mac(b"other", b"client", a, b)
    assert base != auth_mac(b"s3cret", b"server", a, b)
    assert base != auth_mac(b"s3cret", b"client", b, a)


def _drain(decoder: FrameDecoder) -> tuple[list[Frame], int]:
    """Pull frames until the decoder needs bytes; the loop is bounded by the buffer size (each error drops >= 1)."""
    frames, errors = [], 0
    for _ in range(decoder.buffered + 2):
        try:
            frame = decoder.next_frame()
        except ProtocolError:
            errors += 1
            continue
        if frame is None:
            return frames, errors
        frames.append(frame)
    raise AssertionError("decoder did not make progress")


def test_fuzz_random_bytes_only_ever_raise_protocol_error():
    rng = np.random.default_rng(1234)
    for case in range(300):
        data = rng.integers(0, 256, int(rng.integers(0, 400)), dtype=np.uint8).tobytes()
        if case % 3 == 0:  # give the decoder plenty of plausible headers to chew on
            data = MAGIC + bytes([PROTOCOL_VERSION]) + data
        decoder = FrameDecoder(max_payload=256)
        for i in range(0, len(data), 1 + case % 50):
            decoder.feed(data[i:i + 1 + case % 50])
            frames, _ = _drain(decoder)
            for frame in frames:  # anything accepted passed the CRC; its payload decoder must not crash either
                try:
                    decode_payload(frame)
                except ProtocolError:
                    pass


def test_fuzz_mutated_frames_are_never_accepted_in_corrupted_form():
    rng = np.random.default_rng(99)
    originals = _sample_frames()
    valid = {(f.type, f.seq, f.payload) for f in _decode_all(b"".join(originals))}
    valid |= {(MsgType.HEARTBEAT, seq, b"") for seq in range(100, 140)}
    accepted_corrupt = 0
    for case in range(400):
        frame = bytearray(originals[case % len(originals)])
        kind = case % 4
        if kind == 0:  # flip one bit
            bit = int(rng.integers(0, 8 * len(frame)))
            frame[bit // 8] ^= 1 << (bit % 8)
        elif kind == 1:  # truncate
            del frame[int(rng.integers(0, len(frame))):]
        elif kind == 2:  # overwrite a random span with random bytes
            start = int(rng.integers(0, len(frame)))
            span = rng.integers(0, 256, int(rng.integers(1, 9)), dtype=np.uint8).tobytes()
            frame[start:start + len(span)] = span
        else:  # insert random bytes
            at = int(rng.integers(0, len(frame)))
            frame[at:at] = rng.integers(0, 256, int(rng.integers(1, 9)), dtype=np.uint8).tobytes()
        # A good frame follows, then enough heartbeats to complete any frame a corrupted length may announce
        # (a stream decoder cannot tell a bad length from a long payload until those bytes arrive).
        decoder = FrameDecoder(max_payload=1024)
        decoder.feed(bytes(frame) + originals[3])
        frames, _ = _drain(decoder)
        for seq in range(100, 140):
            decoder.feed(encode_frame(MsgType.HEARTBEAT, seq, 0))
            more, _ = _drain(decoder)
            frames += more
        accepted_corrupt += sum((f.type, f.seq, f.payload) not in valid for f in frames)
        assert any(f.type == MsgType.COMMAND and f.seq == 4 for f in frames)
        for f in frames:
            try:
                decode_payload(f)
            except ProtocolError:
                pass
    assert accepted_corrupt == 0


def test_header_layout_is_28_bytes_little_endian():
    frame = encode_frame(MsgType.COMMAND, 0x0102030405060708, -2, b"", 0)
    assert HEADER_SIZE == 28 and len(frame) == 32
    assert frame[:4] == b"RSIM" and frame[4] == PROTOCOL_VERSION and frame[5] == MsgType.COMMAND
    assert frame[8:16] == bytes.fromhex("0807060504030201")
    assert struct.unpack_from("<q", frame, 16)[0] == -2
