"""Weight precision for serving: ``none | fp16 | bf16 | int8 | int4``, and what it saves.

- ``int8`` on CPU: PyTorch dynamic quantization of every ``nn.Linear`` (int8 weights, activations
  quantized on the fly), which speeds up CPU decoding. GPT-2's ``Conv1D`` layers are turned into
  equivalent ``nn.Linear`` layers first, since ``quantize_dynamic`` would skip them.
- ``int8`` / ``int4`` on GPU: bitsandbytes while loading.
- ``fp16`` / ``bf16``: a cast; fp16 needs a GPU (CPU kernels for it are missing or slow).

:func:`weight_bytes` measures the effect; the server logs it and exports it as a metric.
"""

from __future__ import annotations

import importlib.util
import warnings
from typing import Any

import torch
from torch import nn
from transformers import BitsAndBytesConfig
from transformers.pytorch_utils import Conv1D

from kubellm.contract.serving import Quantization
from kubellm.runtime.models.quantization import QuantizationUnavailableError, four_bit_config

__all__ = [
    "QuantizationUnavailableError",
    "check_supported",
    "conv1d_to_linear",
    "int8_targets",
    "load_options",
    "quantize_int8_cpu",
    "weight_bytes",
]

_BNB_CONFIG: Any = BitsAndBytesConfig  # its constructor is untyped
_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def check_supported(mode: Quantization, device: str) -> None:
    """Raise a one-line error when ``mode`` cannot run on ``device``."""
    on_gpu = device.startswith("cuda")
    if mode in ("fp16", "int4") and not on_gpu:
        hint = "use int8 or bf16 on CPU" if mode == "fp16" else "use int8 on CPU"
        raise QuantizationUnavailableError(f"quantization {mode} needs a CUDA GPU and none is used; {hint}")
    if on_gpu and mode in ("int8", "int4") and importlib.util.find_spec("bitsandbytes") is None:
        raise QuantizationUnavailableError(f"quantization {mode} on GPU needs the bitsandbytes package")


def load_options(mode: Quantization, device: str) -> tuple[torch.dtype | str, BitsAndBytesConfig | None]:
    """The dtype and bitsandbytes config to load the model with (CPU int8 is applied after loading)."""
    if mode in _DTYPES:
        return _DTYPES[mode], None
    if mode == "int4":
        return "auto", four_bit_config()
    if mode == "int8" and device.startswith("cuda"):
        config: BitsAndBytesConfig = _BNB_CONFIG(load_in_8bit=True)
        return "auto", config
    return torch.float32 if mode == "int8" else "auto", None


def _linear_from_conv1d(conv: Conv1D) -> nn.Linear:
    """``Conv1D`` computes ``x @ W + b`` with ``W`` of shape (in, out): a Linear with ``W.T``."""
    in_features, out_features = conv.weight.shape
    linear = nn.Linear(in_features, out_features, dtype=conv.weight.dtype, device=conv.weight.device)
    with torch.no_grad():
        linear.weight.copy_(conv.weight.t())
        linear.bias.copy_(conv.bias)
    return linear


def conv1d_to_linear(model: nn.Module) -> int:
    """Replace every ``Conv1D`` by an equivalent ``nn.Linear``, in place; returns how many."""
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, Conv1D):
                setattr(parent, name, _linear_from_conv1d(child))
                replaced += 1
    return replaced


def _is_adapter_part(name: str) -> bool:
    """LoRA's own small layers (and peft's trainable copies) stay as they are: peft reads their weights."""
    return any(part.startswith(("lora_", "modules_to_save")) for part in name.split("."))


def int8_targets(model: nn.Module) -> set[str]:
    """The Linear layers int8 quantization replaces: all but those of LoRA adapters."""
    return {name for name, m in model.named_modules() if isinstance(m, nn.Linear) and not _is_adapter_part(name)}


def quantize_int8_cpu(model: nn.Module) -> nn.Module:
    """int8 dynamic quantization of every Linear layer but the adapters' (for CPU inference)."""
    conv1d_to_linear(model)
    with warnings.catch_warnings():
        # torch.ao.quantization announces its move to torchao; it is still the one CPU int8 path
        # that needs no extra package, and its kernels are unchanged.
        warnings.filterwarnings("ignore", message=".*torch.ao.quantization is deprecated", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*quantize_per_tensor", category=UserWarning)
        from torch.ao.quantization import default_dynamic_qconfig, quantize_dynamic  # noqa: PLC0415 - import warns

        spec = dict.fromkeys(int8_targets(model), default_dynamic_qconfig)
        quantized: nn.Module = quantize_dynamic(model, spec, dtype=torch.qint8)  # type: ignore[no-untyped-call]
    return quantized


def _tensor_bytes(tensor: torch.Tensor | None) -> int:
    return 0 if tensor is None else tensor.numel() * tensor.element_size()


def _quantized_linear_bytes(module: Any) -> int:
    """A dynamically quantized Linear keeps its weights packed: ``weight()`` and ``bias()`` unpack them."""
    weight, bias = getattr(module, "weight", None), getattr(module, "bias", None)
    if not callable(weight):
        return 0
    return _tensor_bytes(weight()) + (_tensor_bytes(bias()) if callable(bias) else 0)


def weight_bytes(model: nn.Module) -> int:
    """Bytes of the weights as stored: parameters and buffers (shared ones once) plus packed int8 weights."""
    seen: set[int] = set()
    total = 0
    for tensor in [*model.parameters(), *model.buffers()]:
        if tensor.data_ptr() not in seen:
            seen.add(tensor.data_ptr())
            total += tensor.numel() * tensor.element_size()
    return total + sum(_quantized_linear_bytes(module) for module in model.modules() if _is_quantized(module))


def _is_quantized(module: nn.Module) -> bool:
    return type(module).__module__.startswith("torch.ao.nn.quantized")
