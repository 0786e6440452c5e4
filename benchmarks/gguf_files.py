"""GGUF files for llama.cpp at other precisions than the shipped one, made from the same weights.

The shipped SmolLM2 file is Q4_1; kubellm serves the float32 weights transformers dequantizes
from it. For a like-for-like comparison llama.cpp gets the very same float32 values (every tensor
dequantized with the ``gguf`` package, metadata and tokenizer copied unchanged) and an 8-bit copy
(those float32 values quantized to Q8_0, norms kept float32). Each file is written once into
kubellm's cache, keyed by the source file's digest, and reused by later runs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

__all__ = ["Precision", "gguf_at", "reencode_gguf"]

Precision = Literal["F32", "Q8_0"]
_FILE_TYPES: dict[Precision, int] = {"F32": 0, "Q8_0": 7}
"""llama.cpp's ``general.file_type`` (LlamaFileType.ALL_F32, MOSTLY_Q8_0)."""


def gguf_at(source: Path, precision: Precision, digest: str, folder: Path) -> Path:
    """``folder/<digest>-<precision>.gguf``, written from ``source`` unless it already exists."""
    destination = folder / f"{digest}-{precision}.gguf"
    if not destination.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        partial = destination.with_suffix(f".partial-{os.getpid()}")
        try:
            reencode_gguf(source, partial, precision)
            partial.rename(destination)
        finally:
            partial.unlink(missing_ok=True)
    return destination


def reencode_gguf(source: Path, destination: Path, precision: Precision) -> None:
    """Copy ``source`` into ``destination`` with every tensor dequantized, then stored at ``precision``."""
    import gguf  # noqa: PLC0415

    reader = gguf.GGUFReader(source)
    architecture = reader.fields[gguf.Keys.General.ARCHITECTURE].contents()
    writer = gguf.GGUFWriter(destination, arch=str(architecture))
    _copy_metadata(reader, writer, _FILE_TYPES[precision])
    tensors = [(tensor.name, _encoded(tensor, precision)) for tensor in reader.tensors]
    for name, (data, raw_dtype) in tensors:
        writer.add_tensor_info(name, data.shape, data.dtype, data.nbytes, raw_dtype=raw_dtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for _, (data, _) in tensors:
        writer.write_tensor_data(data)
    writer.close()


def _copy_metadata(reader: Any, writer: Any, file_type: int) -> None:
    import gguf  # noqa: PLC0415

    for field in reader.fields.values():
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue  # the writer writes these itself
        if field.name == gguf.Keys.General.FILE_TYPE:
            continue
        value_type = field.types[0]
        sub_type = field.types[-1] if value_type == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), value_type, sub_type=sub_type)
    writer.add_file_type(file_type)


def _encoded(tensor: Any, precision: Precision) -> tuple[Any, Any]:
    """(numpy data, the GGML type to record, None for a plain float32 array)."""
    import gguf  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415

    values = np.ascontiguousarray(gguf.quants.dequantize(tensor.data, tensor.tensor_type), dtype=np.float32)
    if precision == "F32" or values.ndim < 2:
        return values, None
    q8 = gguf.GGMLQuantizationType.Q8_0
    return gguf.quants.quantize(values, q8), q8
