"""Writes of the tracking app: rollups and retention."""
