"""The AI4Arctic file formats: reading, validating and converting scenes (no torch)."""
