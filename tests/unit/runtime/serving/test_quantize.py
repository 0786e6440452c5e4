"""Quantization: int8 on CPU shrinks the weights and still generates; GPU-only modes fail clearly."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from kubellm.runtime.config import ServingConfig
from kubellm.runtime.serving.batching import Sequence
from kubellm.runtime.serving.engine import load_engine
from kubellm.runtime.serving.quantize import QuantizationUnavailableError, check_supported, conv1d_to_linear
from kubellm.runtime.serving.sampling import SamplingParams
from kubellm.runtime.serving.settings import ServerSettings

GPT2 = "dummy://gpt2?n_embd=64&n_layer=2&n_head=4&seed=3"


def test_conv1d_becomes_an_equivalent_linear() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(Conv1D(8, 4))  # type: ignore[no-untyped-call]
    inputs = torch.randn(2, 4)
    expected = model(inputs)
    assert conv1d_to_linear(model) == 1
    assert isinstance(model[0], nn.Linear)
    assert torch.allclose(model(inputs), expected, atol=1e-6)


def _greedy_tokens(settings: ServerSettings) -> tuple[int, list[int]]:
    engine = load_engine(settings)
    sequence = Sequence(engine.encode("Hello there"), SamplingParams(max_tokens=4, temperature=0))
    with torch.inference_mode():
        batch, logits = engine.prefill([sequence])
        tokens = [int(logits.argmax(dim=-1)[0])]
        batch.advance(tokens)
        tokens.append(int(engine.decode(batch).argmax(dim=-1)[0]))
    return engine.info.weight_bytes, tokens


def test_int8_gpt2_is_smaller_and_still_generates() -> None:
    fp32_bytes, _ = _greedy_tokens(ServerSettings(model=GPT2))
    int8_bytes, tokens = _greedy_tokens(ServerSettings(model=GPT2, serving=ServingConfig(quantization="int8")))
    assert fp32_bytes / int8_bytes > 1.5
    assert len(tokens) == 2


@pytest.mark.parametrize("mode", ["fp16", "int4"])
def test_gpu_only_modes_fail_with_a_clear_message_on_cpu(mode: str) -> None:
    with pytest.raises(QuantizationUnavailableError, match="needs a CUDA GPU"):
        check_supported(mode, "cpu")  # type: ignore[arg-type]


@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")
def test_int8_leaves_lora_layers_alone_so_adapters_still_run() -> None:
    from peft import LoraConfig, get_peft_model  # noqa: PLC0415 - only this test needs peft

    from kubellm.runtime.models.loading import load_model  # noqa: PLC0415
    from kubellm.runtime.serving.quantize import int8_targets, quantize_int8_cpu  # noqa: PLC0415

    base = load_model("dummy://llama?hidden_size=64&intermediate_size=128&num_hidden_layers=2&seed=4").model
    model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    model.eval()
    assert all("lora_" not in name for name in int8_targets(model))
    quantized = quantize_int8_cpu(model)
    inputs = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8]])
    with torch.inference_mode():
        logits = quantized(input_ids=inputs, adapter_names=["default", "__base__"]).logits
    assert logits.shape[:2] == (2, 4)
    assert torch.isfinite(logits).all()
