"""4-bit weights for QLoRA: only with a CUDA GPU and bitsandbytes, a clear error otherwise."""

from __future__ import annotations

import importlib.util
from typing import Any

import torch
from transformers import BitsAndBytesConfig

from kubellm.runtime.models.sources import ModelSourceError

__all__ = ["QuantizationUnavailableError", "four_bit_config"]

_BNB_CONFIG: Any = BitsAndBytesConfig  # its constructor is untyped


class QuantizationUnavailableError(ModelSourceError):
    """The requested quantization needs hardware or a library this machine lacks."""


def four_bit_config() -> BitsAndBytesConfig:
    """NF4 weights with double quantization and bf16 (or fp16) compute, as QLoRA prescribes."""
    if not torch.cuda.is_available():
        raise QuantizationUnavailableError(
            "qlora needs a CUDA GPU and none is visible; request nvidia.com/gpu or use method lora"
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        raise QuantizationUnavailableError("qlora needs the bitsandbytes package, which is not installed")
    compute = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    config: BitsAndBytesConfig = _BNB_CONFIG(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute,
    )
    return config
