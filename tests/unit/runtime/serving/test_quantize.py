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
