"""The emulated bus's protocol codecs and the control-table encodings, checked against the vendors' SDKs."""

from __future__ import annotations

import os
import random
import time
import tty

import pytest

from real.drivers.control_table import DYNAMIXEL_X, FEETECH_STS, Register
from real.drivers.packets import (
    BROADCAST_ID,
    INST_READ,
    INST_SYNC_WRITE,
    INST_WRITE,
    Dxl2Codec,
    FeetechCodec,
    crc16_dxl,
    stuff,
    unstuff,
)

dxl = pytest.importorskip("dynamixel_sdk")
scs = pytest.importorskip("scservo_sdk")


def test_crc16_matches_the_dynamixel_sdk_table():
    rng = random.Random(0)
    sdk = dxl.Protocol2PacketHandler()
    for n in (0, 1, 2, 7, 64, 300):
        data = bytes(rng.randrange(256) for _ in range(n))
        assert crc16_dxl(data) == sdk.updateCRC(0, list(data), n)


def test_byte_stuffing_round_trip_and_sdk_unstuffs_our_status_packets():
    rng = random.Random(1)
    sdk = dxl.Protocol2PacketHandler()
    codec = Dxl2Codec()
    for _ in range(50):
        params = bytearray(rng.randrange(256) for _ in range(rng.randrange(0, 20)))
        for _ in range(rng.randrange(0, 3)):  # plant header patterns that must be stuffed
            k = rng.randrange(0, len(params) + 1)
            params[k:k] = b"\xff\xff\xfd"
        params = bytes(params)
        body = bytes([0x55, 0]) + params
        assert unstuff(stuff(body)) == body
        packet = list(codec.status(7, 0, params))
        n_stuffed = int.from_bytes(bytes(packet[5:7]), "little") - 4
        assert n_stuffed == len(stuff(body)) - 2
        assert sdk.updateCRC(0, packet, len(packet) - 2) == int.from_bytes(bytes(packet[-2:]), "little")
        unstuffed = sdk.removeStuffing(packet)
        length = int.from_bytes(bytes(unstuffed[5:7]), "little")
        assert bytes(unstuffed[9:9 + length - 4]) == params


@pytest.fixture()
def pty_port():
    master, slave = os.openpty()
    tty.setraw(slave)
    yield master, os.ttyname(slave)
    os.close(master)
    os.close(slave)


def _read_all(fd: int, settle: float = 0.05) -> bytes:
    time.sleep(settle)
    os.set_blocking(fd, False)
    try:
        return os.read(fd, 4096)
    finally:
        os.set_blocking(fd, True)


@pytest.mark.parametrize("protocol", ["dynamixel", "feetech"])
def test_sdk_instruction_packets_parse_with_our_codec(protocol, pty_port):
    master, path = pty_port
    sdk = dxl if protocol == "dynamixel" else scs
    codec = Dxl2Codec() if protocol == "dynamixel" else FeetechCodec()
    port = sdk.PortHandler(path)
    assert port.openPort()
    ph = sdk.PacketHandler(2.0) if protocol == "dynamixel" else sdk.PacketHandler(0)
    a = 2 if protocol == "dynamixel" else 1
    try:
        ph.write2ByteTxOnly(port, 3, 42, 0x0A0B)
        group = sdk.GroupSyncWrite(port, ph, 116, 4)
        group.addParam(1, [1, 2, 3, 4])
        group.addParam(2, [5, 6, 7, 8])
        group.txPacket()
        ph.readTx(port, 5, 56, 4)
        raw = _read_all(master)
    finally:
        port.closePort()
    packets = codec.feed(raw[:5]) + codec.feed(raw[5:])  # split across reads on purpose
    assert [(p.servo_id, p.instruction, p.check_ok) for p in packets] == [
        (3, INST_WRITE, True), (BROADCAST_ID, INST_SYNC_WRITE, True), (5, INST_READ, True)]
    assert packets[0].params == (42).to_bytes(a, "little") + b"\x0b\x0a"
    assert packets[1].params == (116).to_bytes(a, "little") + (4).to_bytes(a, "little") + bytes([1, 1, 2, 3, 4, 2, 5, 6, 7, 8])
    assert packets[2].params == (56).to_bytes(a, "little") + (4).to_bytes(a, "little")
    # our encoder produces the very bytes the SDK sent
    assert codec.instruction(3, INST_WRITE, packets[0].params) in raw


@pytest.mark.parametrize("codec_cls", [Dxl2Codec, FeetechCodec])
def test_parser_skips_garbage_and_flags_bad_checks(codec_cls):
    codec = codec_cls()
    good = codec.instruction(1, INST_WRITE, b"\x40\x01")
    bad = bytearray(codec.instruction(2, INST_WRITE, b"\x40\x00"))
    bad[-1] ^= 0x5A
    found = codec.feed(b"\x00\x13\xff" + good + b"\x99" + bytes(bad) + good[:4])
    assert [(p.servo_id, p.check_ok) for p in found] == [(1, True), (2, False)]
    assert codec.pending > 0  # the partial packet waits for its end
    assert [(p.servo_id, p.params) for p in codec.feed(good[4:])] == [(1, b"\x40\x01")]


def test_register_encodings_round_trip_and_match_feetech_sign_bit():
    for reg in (Register(0, 4, "twos"), Register(0, 2, "sign_magnitude"), Register(0, 2, "sign_magnitude", 11),
                Register(0, 1)):
        for value in (reg.min_value, -1 if reg.min_value < 0 else 0, 0, 1, reg.max_value):
            assert reg.decode(reg.encode(value)) == value
        with pytest.raises(ValueError, match="does not fit"):
            reg.encode(reg.max_value + 1)
    vel = FEETECH_STS["present_velocity"]
    for value in (-4000, -1, 0, 1, 4000):
        raw = int.from_bytes(vel.encode(value), "little")
        assert raw == scs.SCS_TOSCS(value, 15)
        assert scs.SCS_TOHOST(raw, 15) == value
    pos = DYNAMIXEL_X["present_position"]
    assert int.from_bytes(pos.encode(-2), "little") == 0xFFFFFFFE
    with pytest.raises(KeyError, match="no register 'bogus'"):
        DYNAMIXEL_X["bogus"]
