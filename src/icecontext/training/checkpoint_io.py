"""Lightning checkpoint I/O that writes atomically."""

from __future__ import annotations

import os
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from icecontext.atomic import atomic_path


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write checkpoints through a temporary sibling file and an atomic rename.

    A process killed while saving leaves the previous checkpoint intact, which is what
    makes ``last.ckpt`` a safe resume point.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike[str], storage_options: Any = None
    ) -> None:
        """Save ``checkpoint`` to ``path`` atomically."""
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO does not take storage_options")
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)
