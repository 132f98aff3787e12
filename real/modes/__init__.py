"""The twin's modes with a robot: one session (clock, streamer, sync meter), deploy and collect around it."""
