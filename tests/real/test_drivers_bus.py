"""Dynamixel and Feetech buses, through the vendors' SDKs, against the emulated servo bus on a pseudo-terminal."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest

from real.drivers import (
    CorruptPacketError,
    DynamixelBus,
    EmulatedServoBus,
    FeetechBus,
    MissingDriverError,
    ServoNotRespondingError,
    ServoStatusError,
)
from real.drivers.control_table import CONTROL_TABLES

pytest.importorskip("dynamixel_sdk")
pytest.importorskip("scservo_sdk")

BUSES = {"dynamixel": DynamixelBus, "feetech": FeetechBus}
IDS = [1, 2, 3]
START = {1: 1000, 2: 2048, 3: 3000}
# The SDKs wait ~35 ms for a status packet; the emulator shares this (busy) CPU, so tests allow more.
TIMEOUT_MS = 300


def wait_until(condition, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


@pytest.fixture(params=["dynamixel", "feetech"])
def protocol(request):
    return request.param


@pytest.fixture()
def emulated(protocol):
    with EmulatedServoBus(protocol, IDS, ticks=START) as emu:
        yield emu


@pytest.fixture()
def bus(protocol, emulated):
    b = BUSES[protocol](emulated.port, IDS, num_retries=2, timeout_ms=TIMEOUT_MS)
    models = b.open()
    assert set(models) == set(IDS) and all(m in CONTROL_TABLES[protocol].model_numbers for m in models.values())
    yield b
    b.close()


def test_reads_initial_positions_then_servos_reach_targets(bus, emulated):
    state = bus.sync_read(["present_position", "present_velocity"])
    assert state["present_position"].tolist() == [START[i] for i in IDS]
    assert state["present_velocity"].tolist() == [0, 0, 0]
    goals = [1400, 1700, 3000]
    bus.sync_write("goal_position", goals)
    bus.sync_write("torque_enable", [1, 1, 1])
    assert bus.read("torque_enable", 2) == 1
    # a servo still on its way reports a velocity with the sign of the remaining motion
    moving = bus.sync_read(["present_position", "present_velocity"])
    remaining = np.asarray(goals) - moving["present_position"]
    on_the_way = remaining != 0
    assert np.array_equal(np.sign(moving["present_velocity"][on_the_way]), np.sign(remaining[on_the_way]))
    assert wait_until(lambda: np.all(np.abs(bus.sync_read("present_position")["present_position"] - goals) <= 1))
    assert [round(emulated.position(i)) for i in IDS] == goals
    assert bus.sync_read("present_velocity")["present_velocity"].tolist() == [0, 0, 0]


def test_without_torque_goal_is_not_followed(bus, emulated):
    bus.sync_write("goal_position", {1: 1500})
    time.sleep(0.1)
    assert bus.read("present_position", 1) == START[1]
    assert bus.read("goal_position", 1) == 1500


def test_missing_servo_at_open_is_named(protocol, emulated):
    emulated.set_responding(2, False)
    b = BUSES[protocol](emulated.port, IDS, num_retries=1, timeout_ms=250)
    with pytest.raises(ServoNotRespondingError, match=r"servo id\(s\) \[2\] did not answer PING") as info:
        b.open()
    assert info.value.motor_id == 2
    assert not b.is_open
    missing = BUSES[protocol](emulated.port, [1, 7], num_retries=1, timeout_ms=250)
    with pytest.raises(ServoNotRespondingError, match=r"\[7\]"):
        missing.open()


def test_servo_that_stops_answering_is_named_in_sync_read(bus, emulated):
    bus.num_retries = 1
    emulated.set_responding(3, False)
    with pytest.raises(ServoNotRespondingError, match="servo id 3 did not answer SYNC_READ") as info:
        bus.sync_read("present_position")
    assert info.value.motor_id == 3
    emulated.set_responding(3, True)
    assert bus.sync_read("present_position")["present_position"].tolist() == [START[i] for i in IDS]


def test_corrupt_status_packets_are_reported_not_accepted(bus, emulated):
    bus.num_retries = 1
    emulated.corrupt_replies(2, 10)
    with pytest.raises(CorruptPacketError, match="corrupt status packet from servo id 2") as info:
        bus.sync_read("present_position")
    assert info.value.motor_id == 2
    assert bus.stats["rx_corrupt"] == 2  # both attempts saw it
    emulated.corrupt_replies(2, 10)
    with pytest.raises(CorruptPacketError, match="servo id 2"):
        bus.read("present_position", 2)


def test_one_corrupt_packet_is_retried_and_counted(bus, emulated):
    emulated.set_position(2, 2222)
    emulated.corrupt_replies(2, 1)
    values = bus.sync_read("present_position")["present_position"]
    assert values.tolist() == [START[1], 2222, START[3]]
    assert bus.stats["rx_corrupt"] == 1 and bus.stats["retries"] >= 1
    assert emulated.stats["corrupted"] == 1


def test_dynamixel_status_errors_are_raised():
    with EmulatedServoBus("dynamixel", IDS, ticks=START) as emu:
        with DynamixelBus(emu.port, IDS, timeout_ms=TIMEOUT_MS) as b:
            b.write("torque_enable", 1, 1)
            with pytest.raises(ServoStatusError, match="servo id 1 answered WRITE operating_mode") as info:
                b.write("operating_mode", 1, 3)  # EEPROM while torque is on
            assert info.value.error == 7
            b.write("max_position_limit", 2, 3000)
            with pytest.raises(ServoStatusError, match="servo id 2") as info:
                b.write("goal_position", 2, 3500)  # beyond the position limit
            assert info.value.error == 6
            assert emu.register(2, "goal_position") == START[2]


def test_bad_arguments_and_missing_port(protocol):
    cls = BUSES[protocol]
    with pytest.raises(ValueError, match="unique ids"):
        cls("/dev/null", [1, 1])
    with pytest.raises(ValueError, match="baudrate"):
        cls("/dev/null", [1], baudrate=12345)
    with pytest.raises(ConnectionError, match="cannot open serial port"):
        cls("/dev/does-not-exist-realsim", [1]).open()


def test_missing_sdk_names_the_extra(protocol, monkeypatch):
    module = BUSES[protocol].sdk_module
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` fail
    with pytest.raises(MissingDriverError, match=rf"realsim\[{protocol}\]"):
        BUSES[protocol]("/dev/null", [1]).open()


def test_emulator_as_its_own_process():
    proc = subprocess.Popen([sys.executable, "-m", "real.drivers.emulated_bus", "--protocol", "feetech",
                             "--ids", "4", "5", "--ticks", "1234"], stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline().strip()
        assert line.startswith("port: /dev/"), line
        with FeetechBus(line.removeprefix("port: "), [4, 5], timeout_ms=TIMEOUT_MS) as b:
            assert b.sync_read("present_position")["present_position"].tolist() == [1234, 1234]
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0


def test_dynamixel_status_with_byte_stuffing_reads_back_exactly():
    value = -0x02020001  # little-endian bytes FF FF FD FD: sent stuffed as FF FF FD FD FD, unstuffed by the SDK
    with EmulatedServoBus("dynamixel", IDS, ticks=START) as emu:
        emu.set_register(2, "homing_offset", value)
        with DynamixelBus(emu.port, IDS, timeout_ms=TIMEOUT_MS) as b:
            assert b.read("homing_offset", 2) == value
            assert b.sync_read("homing_offset")["homing_offset"].tolist() == [0, value, 0]
