"""The training loader: scene sources, patch sampling, batch assembly, the DataModule."""
