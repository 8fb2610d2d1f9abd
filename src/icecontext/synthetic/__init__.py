"""Physically based synthetic scenes written in the real AI4Arctic file formats."""
