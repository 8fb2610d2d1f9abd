"""Tiled full-scene prediction and ice-chart exports."""
