"""Model tests run torch on one thread: CI runs two pytest workers on two cores, and
oversubscribed OpenMP threads slow small convolutions down several-fold."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
