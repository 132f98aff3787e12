"""Stand-ins for hardware that cannot run here: an emulated PushT reality and an in-process joint robot."""
