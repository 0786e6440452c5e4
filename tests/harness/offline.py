"""An autouse fixture for tests that load models: offline (no test may reach the Hugging Face
Hub) and single-threaded (2 shared cores stay usable). Import it into a folder's conftest."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from huggingface_hub import constants

__all__ = ["offline_single_thread"]


@pytest.fixture(autouse=True)
def offline_single_thread(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """HF_HUB_OFFLINE on, Hub tokens unset, one torch thread; restored afterwards."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HF_DATASET_TOKEN", raising=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
