"""Sim-to-real evaluation: does the twin's offline success predict real success, and how well the twin keeps sync."""
