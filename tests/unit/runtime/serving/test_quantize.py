"""Quantization: int8 on CPU shrinks the weights and keeps the fp32 logits; GPU-only modes fail clearly."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from kubellm.contract.schema import ModelSource
from kubellm.contract.serving import ServingConfig
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


def _greedy_run(settings: ServerSettings, steps: int = 6) -> tuple[int, list[int], list[torch.Tensor]]:
    """Weight bytes, then the greedy tokens of a few steps and the logits each step chose from."""
    engine = load_engine(settings)
    sequence = Sequence(engine.encode("Hello there"), SamplingParams(max_tokens=steps, temperature=0))
    with torch.inference_mode():
        batch, logits = engine.prefill([sequence])
        seen, tokens = [logits[0].clone()], [int(logits[0].argmax())]
        for _ in range(steps - 1):
            batch.advance(tokens[-1:])
            logits = engine.decode(batch)
            seen.append(logits[0].clone())
            tokens.append(int(logits[0].argmax()))
    return engine.info.weight_bytes, tokens, seen


def _relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    """How far apart two logit vectors are, ignoring a shared offset (softmax ignores it too)."""
    got, want = got - got.mean(), want - want.mean()
    return float((got - want).norm() / want.norm())


def test_int8_gpt2_is_smaller_and_generates_what_fp32_generates() -> None:
    fp32_bytes, fp32_tokens, fp32_logits = _greedy_run(ServerSettings(model=ModelSource(uri=GPT2)))
    int8 = ServerSettings(model=ModelSource(uri=GPT2), serving=ServingConfig(quantization="int8"))
    int8_bytes, int8_tokens, int8_logits = _greedy_run(int8)
    assert fp32_bytes / int8_bytes > 1.5
    assert int8_tokens == fp32_tokens  # greedy decoding agrees step by step
    errors = [_relative_error(got, want) for got, want in zip(int8_logits, fp32_logits, strict=True)]
    # About 0.02 measured; the same architecture with other weights (seed) is about 1.4 away.
    assert max(errors) < 0.1, errors


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
