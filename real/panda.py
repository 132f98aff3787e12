"""Joint limits of the Franka Emika Panda for the hardware side (the numbers live with the twin: ``sim.panda``)."""

from sim.panda import (
    PANDA_HOME,
    PANDA_JOINT_NAMES,
    PANDA_LOWER,
    PANDA_MAX_ACCELERATION,
    PANDA_MAX_VELOCITY,
    PANDA_UPPER,
)

__all__ = ["PANDA_HOME", "PANDA_JOINT_NAMES", "PANDA_LOWER", "PANDA_MAX_ACCELERATION", "PANDA_MAX_VELOCITY",
           "PANDA_UPPER"]
