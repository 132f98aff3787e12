"""Joint limits of the Franka Emika Panda, the arm of the twin (numbers only, no I/O)."""

# Franka Emika Panda. Position limits are those of the twin's MJCF (sim/assets/pusht.xml, joint `range`; a test
# keeps them equal); velocity and acceleration limits are Franka's datasheet values.
PANDA_JOINT_NAMES = ("joint1", "joint2", "joint3", "joint4", "joint5", "joint6", "joint7")
PANDA_LOWER = (-2.8973, -1.7628, -2.8973, -3.0718, -2.8973, -0.0175, -2.8973)  # rad
PANDA_UPPER = (2.8973, 1.7628, 2.8973, -0.0698, 2.8973, 3.7525, 2.8973)  # rad
PANDA_MAX_VELOCITY = (2.175, 2.175, 2.175, 2.175, 2.61, 2.61, 2.61)  # rad/s
PANDA_MAX_ACCELERATION = (15.0, 7.5, 10.0, 12.5, 15.0, 20.0, 20.0)  # rad/s^2
PANDA_HOME = (0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785)  # rad, Franka's "ready" pose
