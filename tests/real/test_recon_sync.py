"""RGB-only sync wiring (twin.correction=recon): RGB readings become calibrated colour frames, the emulated reality
announces and renders RGB when asked, and the sync benchmark's recon source refuses to start without its model."""

from __future__ import annotations

import numpy as np
import pytest

from perception.frames import ColorFrame
from real.emulated.reality import EmulatedRealityConfig, EmulatedRealityRobot
from real.sensors import SensorReading, calibration_arrays, color_frames, depth_key, image_key
from real.sim2real.sync_bench import run_sync_benchmarks


def test_color_frames_pair_images_with_their_calibration():
    image = np.full((8, 8, 3), 7, np.uint8)
    readings = {image_key("side"): SensorReading(image, 2.5), depth_key("side"): SensorReading(np.ones((8, 8)), 2.5)}
    calibration = calibration_arrays({"side": (np.eye(3) * 4, np.eye(4)), "overhead": (np.eye(3), np.eye(4))})
    frames = color_frames(readings, calibration, ("side", "overhead"))  # overhead sent no image: skipped
    assert len(frames) == 1 and isinstance(frames[0], ColorFrame)
    assert frames[0].camera == "side" and frames[0].timestamp == 2.5 and frames[0].intrinsics[0, 0] == 4
    with pytest.raises(KeyError, match="calibration.side.intrinsics"):
        color_frames(readings, {}, ("side",))


def test_emulated_reality_renders_rgb_only_when_asked():
    assert image_key("side") not in EmulatedRealityRobot(EmulatedRealityConfig()).observation_features
    features = EmulatedRealityRobot(EmulatedRealityConfig(color=True, depth_size=(48, 64))).observation_features
    assert features[image_key("side")]["shape"] == [48, 64, 3] and features[image_key("side")]["dtype"] == "uint8"


def test_recon_source_needs_its_model():
    with pytest.raises(ValueError, match="sync.recon_model"):
        run_sync_benchmarks(sources=("recon",))


def test_emulated_reality_sends_rgb_frames_of_its_cameras():
    robot = EmulatedRealityRobot(EmulatedRealityConfig(color=True, depth_size=(32, 32), pushes=False))
    with robot:
        readings, calibration = robot.read_sensors(), robot.sensor_calibration()
    frames = color_frames(readings, calibration, ("side", "overhead"))
    assert [f.camera for f in frames] == ["side", "overhead"]
    assert frames[0].image.shape == (32, 32, 3) and frames[0].image.std() > 0  # a rendered scene, not a blank
