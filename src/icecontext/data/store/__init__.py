"""The prepared Zarr store: preparing scenes into it, its manifest, and direct chunk reads."""
