"""twin.correction=recon: the twin corrected from RGB frames alone through a reconstruction (an oracle here, so the
correction path is tested apart from a model's accuracy), and config errors that name twin.recon_model."""

from __future__ import annotations

import numpy as np
import pytest

import sim  # noqa: F401  (head-less rendering default)
from perception.frames import ColorFrame, DepthFrame
from perception.recon import ReconConfig, ReconModel, save_recon
from perception.recon_estimator import ReconEstimator
from sim.block_perception import recon_block_estimator
from sim.pusht_config import DomainRandomizationConfig, PushTConfig
from sim.pusht_env import PushTEnv
from sim.pusht_geometry import wrap_angle
from sim.twin import DigitalTwin, TwinConfig
from tests.perception.recon_oracle import DepthOracle

REALITY = PushTConfig(randomization=DomainRandomizationConfig(friction_scale=(0.7, 0.7), block_mass_scale=(1.3, 1.3)))


def test_recon_correction_pulls_a_displaced_twin_block_onto_reality_from_rgb_frames():
    reality, env = PushTEnv(REALITY), PushTEnv()
    config = TwinConfig(correction="recon", depth_size=(96, 96))
    oracle = DepthOracle()
    twin = DigitalTwin(env, config, estimator=recon_block_estimator(env, config, model=oracle))
    options = {"pusher_xy": (0.35, -0.2)}
    twin.env.reset(seed=0, options={**options, "block_pose": (0.55, 0.05, 0.3)})
    reality.reset(seed=0, options={**options, "block_pose": (0.565, 0.04, 0.38)})
    calibration = {c: twin.camera_calibration(c) for c in config.cameras}

    def measure() -> list[ColorFrame]:  # RGB only reaches the twin; the oracle holds the truth it reconstructs
        depth = np.stack([reality.render_camera(c, config.depth_size, depth=True) for c in config.cameras])
        oracle.depth = np.where(depth > 2.0, 0.0, depth)
        return [ColorFrame(c, reality.render_camera(c, config.depth_size), *calibration[c]) for c in config.cameras]

    twin.attach(measure)
    twin.step_physics(0.5)
    error = twin.env.block_pose - reality.block_pose
    assert np.linalg.norm(error[:2]) < 0.002 and np.degrees(abs(wrap_angle(error[2]))) < 1.0, error
    assert oracle.calls >= 0.5 * config.rate_hz


def test_recon_correction_loads_the_model_named_by_twin_recon_model(tmp_path):
    save_recon(ReconModel(ReconConfig()), tmp_path / "model")
    twin = DigitalTwin(PushTEnv(), TwinConfig(correction="recon", recon_model=str(tmp_path / "model")))
    assert isinstance(twin.estimator, ReconEstimator)
    assert twin.estimator.config.input_size == ReconConfig().image_size
    with pytest.raises(ValueError, match="zero views"):  # depth frames only: no RGB camera reached the estimator
        twin.ingest([DepthFrame("side", np.zeros((64, 64), np.float32), *twin.camera_calibration("side"))])


def test_recon_correction_config_errors_name_the_key(tmp_path):
    with pytest.raises(ValueError, match="twin.recon_model"):
        DigitalTwin(PushTEnv(), TwinConfig(correction="recon"))
    with pytest.raises(FileNotFoundError, match="twin.recon_model"):
        DigitalTwin(PushTEnv(), TwinConfig(correction="recon", recon_model=str(tmp_path / "missing")))
    with pytest.raises(ValueError, match="twin.recon_query_scale"):
        TwinConfig(correction="recon", recon_query_scale=0)
