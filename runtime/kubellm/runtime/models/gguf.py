"""GGUF files as model sources: converted once into an ordinary model folder, cached by content digest.

transformers reads a GGUF file (llama.cpp's single-file format) by dequantizing every tensor,
which takes tens of seconds, and the model it builds refuses ``save_pretrained``. So the first
load of a ``.gguf`` file converts it into a plain model folder (``config.json``, safetensors
weights, ``generation_config.json``, the tokenizer with its chat template) under
``<cache>/gguf/<sha256 of the file>/``; every later load, in any process sharing the cache
(:func:`~kubellm.runtime.models.sources.cache_root`, ``$KUBELLM_CACHE_DIR``), reads that folder
like any other model. The weights are kept dequantized (float32), as transformers loads them.

The file is checked before anything is written (a readable GGUF, not truncated, of an
architecture transformers can load), so a bad file leaves nothing in the cache. The conversion
itself writes into a temporary folder inside the cache and renames it into place: the final
folder is complete or absent. A lock file per digest makes a second process wait for the first
instead of converting twice; the next conversion removes what a killed one left behind.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import importlib
import json
import logging
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubellm.runtime.models.sources import ModelSourceError, cache_root

__all__ = [
    "CONVERSION_RECORD",
    "GGUF_SUFFIX",
    "GGUFHeader",
    "converted_gguf",
    "file_digest",
    "gguf_cache",
    "is_gguf",
    "read_gguf_header",
]

GGUF_SUFFIX = ".gguf"
CONVERSION_RECORD = "kubellm-gguf.json"
"""Written last into a converted folder: where it came from, and proof the folder is complete."""

_LOGGER = logging.getLogger(__name__)
# llama.cpp names a few architectures differently from transformers' model types.
_ARCHITECTURE_ALIASES = {"qwen2moe": "qwen2_moe", "qwen3moe": "qwen3_moe"}
_NOT_ARCHITECTURES = {"general", "tokenizer"}  # sections of transformers' GGUF mapping table


@dataclass(frozen=True)
class GGUFHeader:
    """What the GGUF file says about itself, read without dequantizing anything."""

    architecture: str
    tensors: int
    name: str | None = None


def is_gguf(path: Path) -> bool:
    """Whether ``path`` names a GGUF file (by its suffix)."""
    return path.suffix.lower() == GGUF_SUFFIX


def gguf_cache(root: Path | None = None) -> Path:
    """Where converted GGUF files live: ``<cache root>/gguf``."""
    return (root if root is not None else cache_root()) / "gguf"


def file_digest(path: Path) -> str:
    """The SHA-256 of the file's bytes, in hex (the cache key: a changed file converts anew)."""
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def read_gguf_header(uri: str, path: Path) -> GGUFHeader:
    """Check that ``path`` is a complete GGUF file of a loadable architecture; one-line errors otherwise."""
    reader = _open_reader(uri, path)
    size = path.stat().st_size
    end = max((int(tensor.data_offset) + int(tensor.n_bytes) for tensor in reader.tensors), default=0)
    if end > size:
        raise ModelSourceError(f"{uri}: {path.name} is truncated: its tensors need {end} bytes, the file has {size}")
    architecture = _string_field(reader, "general.architecture")
    if architecture is None:
        raise ModelSourceError(f"{uri}: {path.name} names no architecture (general.architecture)")
    supported = _supported_architectures()
    if _ARCHITECTURE_ALIASES.get(architecture, architecture.replace("-", "_")) not in supported:
        raise ModelSourceError(
            f"{uri}: GGUF architecture {architecture!r} cannot be loaded; supported: {', '.join(sorted(supported))}"
        )
    return GGUFHeader(
        architecture=architecture, tensors=len(reader.tensors), name=_string_field(reader, "general.name")
    )


def _open_reader(uri: str, path: Path) -> Any:
    from gguf import GGUFReader  # noqa: PLC0415  (numpy-heavy; only when a GGUF is used)

    try:
        return GGUFReader(path)
    except (ValueError, IndexError, KeyError, OSError) as error:
        detail = " ".join(str(error).split()) or type(error).__name__
        raise ModelSourceError(
            f"{uri}: {path.name} is not a readable GGUF file (truncated or corrupt: {detail})"
        ) from None


def _string_field(reader: Any, key: str) -> str | None:
    field = reader.fields.get(key)
    if field is None or not field.data:
        return None
    return bytes(field.parts[field.data[0]]).decode("utf-8", errors="replace")


def _supported_architectures() -> set[str]:
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES  # noqa: PLC0415

    return set(GGUF_SUPPORTED_ARCHITECTURES) - _NOT_ARCHITECTURES


def converted_gguf(uri: str, path: Path, *, cache: Path | None = None) -> Path:
    """The model folder converted from the GGUF file at ``path``, converting it first when not cached.

    ``uri`` only words the errors; ``cache`` defaults to :func:`gguf_cache`. Raises
    :class:`ModelSourceError` (one line) for a missing, truncated or unsupported file.
    """
    if not path.is_file():
        raise ModelSourceError(f"{uri}: no GGUF file at {path}")
    folder = gguf_cache(cache) / file_digest(path)
    if _complete(folder):
        return folder
    header = read_gguf_header(uri, path)
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        with _locked(folder.with_suffix(".lock")):
            if not _complete(folder):  # another process may have finished while this one waited
                _remove_leftovers(folder)
                _convert_atomically(uri, path, header, folder)
    except OSError as error:
        raise ModelSourceError(f"{uri}: cannot write the converted model into {folder.parent}: {error}") from None
    return folder


def _complete(folder: Path) -> bool:
    return (folder / CONVERSION_RECORD).is_file()


@contextmanager
def _locked(lock_file: Path) -> Iterator[None]:
    """An exclusive advisory lock held for the block (released by the kernel if the process dies)."""
    with lock_file.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _remove_leftovers(folder: Path) -> None:
    """Temporary folders of this digest: only a killed conversion leaves one (the lock is held)."""
    for leftover in folder.parent.glob(f".{folder.name}.*"):
        shutil.rmtree(leftover, ignore_errors=True)


def _convert_atomically(uri: str, path: Path, header: GGUFHeader, folder: Path) -> None:
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        started = time.monotonic()
        _LOGGER.info("converting %s (%s) into %s", uri, header.architecture, folder)
        try:
            convert_gguf(path, staging)
        except Exception as error:  # transformers raises many types; any of them means this file cannot be used
            detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ModelSourceError(f"{uri}: cannot convert the GGUF file: {detail}") from error
        _write_record(staging, uri, path, header, time.monotonic() - started)
        try:
            staging.rename(folder)
        except OSError:
            if not _complete(folder):  # losing a rename race to a complete folder is fine
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _write_record(folder: Path, uri: str, path: Path, header: GGUFHeader, seconds: float) -> None:
    record = {
        "source": uri,
        "file": path.name,
        "architecture": header.architecture,
        "name": header.name,
        "tensors": header.tensors,
        "conversionSeconds": round(seconds, 1),
        "convertedAt": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    (folder / CONVERSION_RECORD).write_text(json.dumps(record, indent=2) + "\n")


def convert_gguf(path: Path, destination: Path) -> None:
    """Dequantize the GGUF file into an ordinary model folder at ``destination`` (no caching, no checks)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: PLC0415

    with _gguf_progress_follows_transformers():
        model: Any = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, trust_remote_code=False)
        tokenizer: Any = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    _drop_gguf_quantizer(model)
    positions = getattr(model.config, "max_position_embeddings", None)
    if isinstance(positions, int):
        tokenizer.model_max_length = positions  # a GGUF tokenizer has no limit of its own
    model.save_pretrained(destination)
    tokenizer.save_pretrained(destination)


def _drop_gguf_quantizer(model: Any) -> None:
    """The weights are already dequantized: forget the GGUF "quantizer" that blocks ``save_pretrained``."""
    model.hf_quantizer = None
    model.is_quantized = False
    model.quantization_method = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


@contextmanager
def _gguf_progress_follows_transformers() -> Iterator[None]:
    """transformers' GGUF reader draws a plain tqdm bar that ignores its own progress-bar switch.

    Draw it only on a terminal and when that switch is on: ``kubellm train`` turns the switch off
    so that stderr carries one failure line and nothing else, and a pod's log is no terminal.
    """
    from transformers.utils import logging as transformers_logging  # noqa: PLC0415

    module: Any = importlib.import_module("transformers.modeling_gguf_pytorch_utils")
    original = module.tqdm
    if not transformers_logging.is_progress_bar_enabled() or not sys.stderr.isatty():
        module.tqdm = functools.partial(original, disable=True)
    try:
        yield
    finally:
        module.tqdm = original
