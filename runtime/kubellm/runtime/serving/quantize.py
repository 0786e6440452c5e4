"""Weight precision for serving: ``none | fp16 | bf16 | int8 | int4``, and what it saves.

- ``int8`` on CPU: every ``nn.Linear`` but the adapters' becomes an :class:`Int8Linear`: int8
  weights with one float32 scale per output channel. Its input is rounded to int8 row by row (one
  scale per token, so a sequence's result does not depend on the others in its batch) and
  multiplied in integers (``torch._int_mm``): at 16 sequences decoding is compute-bound on CPU,
  and only integer arithmetic makes it faster than float32 (weights alone in int8, with float
  activations, measured slower than float32 there). The input embedding is stored the same way
  (one scale per row, dequantized on lookup); an output layer tied to it, as in SmolLM2 and
  GPT-2, keeps sharing that one int8 copy. GPT-2's ``Conv1D`` layers become equivalent
  ``nn.Linear`` layers first. Layers are replaced one at a time, so quantizing needs little
  memory beyond the float32 model.
- ``int8`` / ``int4`` on GPU: bitsandbytes while loading.
- ``fp16`` / ``bf16``: a cast; fp16 needs a GPU (CPU kernels for it are missing or slow).

:func:`weight_bytes` measures the effect; the server logs it and exports it as a metric.
"""

from __future__ import annotations

import importlib.util
from typing import Any, cast

import torch
from torch import nn
from transformers import BitsAndBytesConfig
from transformers.pytorch_utils import Conv1D

from kubellm.contract.serving import Quantization
from kubellm.runtime.models.quantization import QuantizationUnavailableError, four_bit_config

__all__ = [
    "Int8Embedding",
    "Int8Linear",
    "QuantizationUnavailableError",
    "check_supported",
    "conv1d_to_linear",
    "int8_targets",
    "load_options",
    "quantize_int8_cpu",
    "quantize_rows",
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


_CHUNK_ELEMENTS = 2**18
"""Weights quantized at once: float temporaries of 1 MiB, small and alike, so the allocator reuses them."""


def quantize_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 per row: (int8 values, float32 scales) with ``weight ~= values * scales[:, None]``."""
    values = torch.empty(weight.shape, dtype=torch.int8)
    scales = torch.empty(weight.shape[0], dtype=torch.float32)
    with torch.no_grad():
        chunk = max(1, _CHUNK_ELEMENTS // weight.shape[1])
        for start in range(0, weight.shape[0], chunk):
            rows = weight[start : start + chunk].float()  # the weight itself when already float32
            scale = rows.abs().amax(dim=1).clamp_(min=torch.finfo(torch.float32).tiny).div_(127)
            values[start : start + len(rows)] = (rows / scale[:, None]).round_().clamp_(-127, 127)
            scales[start : start + len(rows)] = scale
    return values, scales


def _int8_matmul(inputs: torch.Tensor, weight: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """``inputs @ (weight * scales[:, None]).T`` for 2-D ``inputs``, each row rounded to int8 with its own scale."""
    row_scales = inputs.abs().amax(dim=1, keepdim=True).clamp_(min=torch.finfo(inputs.dtype).tiny).div_(127)
    rows = (inputs / row_scales).round_().to(torch.int8)
    return torch._int_mm(rows, weight.t()).to(inputs.dtype).mul_(row_scales).mul_(scales)


class Int8Linear(nn.Module):
    """A Linear layer holding int8 weights and one scale per output channel (buffers, not parameters).

    Its input is quantized to int8 on the fly, one scale per row (token), and the product is
    computed in int32 before both scales are applied.
    """

    weight_int8: torch.Tensor
    weight_scale: torch.Tensor
    bias: torch.Tensor | None

    def __init__(self, weight_int8: torch.Tensor, weight_scale: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.out_features, self.in_features = weight_int8.shape
        self.register_buffer("weight_int8", weight_int8)
        self.register_buffer("weight_scale", weight_scale)
        self.register_buffer("bias", bias)

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> Int8Linear:
        values, scales = quantize_rows(linear.weight)
        return cls(values, scales, None if linear.bias is None else linear.bias.detach())

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        flat = inputs.reshape(-1, self.in_features)
        output = _int8_matmul(flat, self.weight_int8, self.weight_scale)
        if self.bias is not None:
            output = output + self.bias
        return output.reshape(*inputs.shape[:-1], self.out_features)


class Int8Embedding(nn.Module):
    """An embedding table holding int8 rows and one scale per row, dequantized on lookup."""

    weight_int8: torch.Tensor
    weight_scale: torch.Tensor

    def __init__(self, weight_int8: torch.Tensor, weight_scale: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("weight_int8", weight_int8)
        self.register_buffer("weight_scale", weight_scale)

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        rows = nn.functional.embedding(token_ids, self.weight_int8).to(self.weight_scale.dtype)
        return rows * self.weight_scale[token_ids].unsqueeze(-1)


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent_name), leaf, module)


def _name_of(model: nn.Module, module: nn.Module | None) -> str | None:
    """The name of ``module`` inside ``model`` when it is there and not part of an adapter."""
    name = next((n for n, m in model.named_modules() if m is module), None)
    return None if name is None or _is_adapter_part(name) else name


def _quantize_embedding(model: nn.Module) -> None:
    """The input embedding as int8 rows; a Linear output layer tied to it shares them as its weights."""
    get_input: Any = getattr(model, "get_input_embeddings", None)
    get_output: Any = getattr(model, "get_output_embeddings", None)
    embedding = get_input() if get_input else None
    name = _name_of(model, embedding)
    if not isinstance(embedding, nn.Embedding) or name is None:
        return
    values, scales = quantize_rows(embedding.weight)
    output = get_output() if get_output else None
    output_name = _name_of(model, output)
    if isinstance(output, nn.Linear) and output_name and output.weight is embedding.weight:
        bias = None if output.bias is None else output.bias.detach()
        _replace(model, output_name, Int8Linear(values, scales, bias))
    _replace(model, name, Int8Embedding(values, scales))


def _copy_float_tensors(model: nn.Module) -> None:
    """Give the tensors still in float (norms, biases, scales) memory of their own.

    Weights loaded from a safetensors file are views of one mapping of the whole file, which
    stays resident while any tensor still points into it: copying the few that are left lets it go.
    """
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            if tensor.is_floating_point():
                tensor.data = tensor.data.clone()


def quantize_int8_cpu(model: nn.Module) -> nn.Module:
    """int8 weights for every Linear layer but the adapters', and for the input embedding, in place.

    One layer at a time: each float32 weight is dropped as soon as its int8 copy replaces it.
    """
    conv1d_to_linear(model)
    _quantize_embedding(model)
    for name in sorted(int8_targets(model)):
        _replace(model, name, Int8Linear.from_linear(cast(nn.Linear, model.get_submodule(name))))
    _copy_float_tensors(model)
    return model


def weight_bytes(model: nn.Module) -> int:
    """Bytes of the weights as stored: parameters and buffers, a tensor shared by several layers once."""
    sizes = {tensor.data_ptr(): tensor.numel() * tensor.element_size() for tensor in model.parameters()}
    sizes |= {tensor.data_ptr(): tensor.numel() * tensor.element_size() for tensor in model.buffers()}
    return sum(sizes.values())
