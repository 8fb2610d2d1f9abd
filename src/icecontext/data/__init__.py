"""Scene I/O, file format, variable catalogue, chart conversion and the data pipeline."""
