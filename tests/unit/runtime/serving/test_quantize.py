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
from kubellm.runtime.serving.quantize import (
    Int8Embedding,
    Int8Linear,
    QuantizationUnavailableError,
    check_supported,
    conv1d_to_linear,
    quantize_int8_cpu,
    quantize_rows,
    weight_bytes,
)
from kubellm.runtime.serving.sampling import SamplingParams
from kubellm.runtime.serving.settings import ServerSettings

GPT2 = "dummy://gpt2?n_embd=64&n_layer=2&n_head=4&seed=3"
LLAMA = "dummy://llama?hidden_size=64&intermediate_size=128&num_hidden_layers=2&seed=4"


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
    assert fp32_bytes / int8_bytes > 2.3  # float32 left: position embeddings, layer norms, biases
    assert int8_tokens == fp32_tokens  # greedy decoding agrees step by step
    errors = [_relative_error(got, want) for got, want in zip(int8_logits, fp32_logits, strict=True)]
    # About 0.02 measured; the same architecture with other weights (seed) is about 1.4 away.
    assert max(errors) < 0.1, errors


def test_rows_are_quantized_each_with_its_own_scale() -> None:
    torch.manual_seed(0)
    weight = torch.randn(5, 8) * torch.tensor([[1.0], [10.0], [0.01], [0.0], [3.0]])
    values, scales = quantize_rows(weight)
    assert values.dtype == torch.int8 and scales.shape == (5,)
    assert values.abs().amax(dim=1).tolist() == [127, 127, 127, 0, 127]  # the zero row too
    error = (values.float() * scales[:, None] - weight).abs()
    assert (error <= scales[:, None] / 2 + 1e-7).all()


def test_int8_linear_computes_what_its_dequantized_weights_do() -> None:
    torch.manual_seed(0)
    linear = nn.Linear(24, 10)
    original = linear.weight.detach().clone()
    quantized = Int8Linear.from_linear(linear)
    assert torch.equal(linear.weight, original)  # quantizing reads the weights, never writes them
    inputs = torch.randn(2, 3, 24)
    dequantized = quantized.weight_int8.float() * quantized.weight_scale[:, None]
    expected = inputs @ dequantized.T + linear.bias
    output = quantized(inputs)
    assert output.shape == (2, 3, 10) and output.dtype == torch.float32
    assert torch.allclose(output, expected, atol=0.05, rtol=0.02)


def test_each_row_is_quantized_on_its_own_so_batching_changes_no_result() -> None:
    torch.manual_seed(1)
    quantized = Int8Linear.from_linear(nn.Linear(32, 16))
    rows = torch.randn(5, 32) * torch.tensor([[1.0], [100.0], [0.01], [1.0], [5.0]])
    together = quantized(rows)
    assert all(torch.equal(quantized(rows[i : i + 1])[0], together[i]) for i in range(5))


def test_a_tied_output_layer_shares_the_int8_embedding_and_is_counted_once() -> None:
    from kubellm.runtime.models.loading import load_model  # noqa: PLC0415

    model = load_model(GPT2).model.eval()
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    inputs = torch.tensor([[1, 2, 3, 4]])
    with torch.inference_mode():
        expected = model(input_ids=inputs).logits
    quantize_int8_cpu(model)
    embedding, output = model.get_input_embeddings(), model.get_output_embeddings()
    assert isinstance(embedding, Int8Embedding) and isinstance(output, Int8Linear)
    assert output.weight_int8 is embedding.weight_int8 and output.weight_scale is embedding.weight_scale
    per_use = [[*m.parameters(recurse=False), *m.buffers(recurse=False)] for m in model.modules()]
    every_use = sum(t.numel() * t.element_size() for tensors in per_use for t in tensors)
    table = embedding.weight_int8.numel() + embedding.weight_scale.numel() * 4
    assert weight_bytes(model) == every_use - table  # counted for the embedding, not again for the output layer
    with torch.inference_mode():
        assert _relative_error(model(input_ids=inputs).logits[0, -1], expected[0, -1]) < 0.1


def test_an_untied_output_layer_and_the_embedding_are_quantized_apart() -> None:
    from kubellm.runtime.models.loading import load_model  # noqa: PLC0415

    model = load_model(LLAMA).model.eval()
    inputs = torch.tensor([[5, 6, 7]])
    with torch.inference_mode():
        expected = model(input_ids=inputs).logits
    quantize_int8_cpu(model)
    embedding, output = model.get_input_embeddings(), model.get_output_embeddings()
    assert isinstance(embedding, Int8Embedding) and isinstance(output, Int8Linear)
    assert output.weight_int8 is not embedding.weight_int8
    assert not any(isinstance(m, (nn.Linear, nn.Embedding)) for m in model.modules())
    with torch.inference_mode():
        assert _relative_error(model(input_ids=inputs).logits[0, -1], expected[0, -1]) < 0.1


@pytest.mark.parametrize("mode", ["fp16", "int4"])
def test_gpu_only_modes_fail_with_a_clear_message_on_cpu(mode: str) -> None:
    with pytest.raises(QuantizationUnavailableError, match="needs a CUDA GPU"):
        check_supported(mode, "cpu")  # type: ignore[arg-type]


@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")
def test_int8_leaves_lora_layers_alone_so_adapters_still_run() -> None:
    from peft import LoraConfig, get_peft_model  # noqa: PLC0415 - only this test needs peft

    from kubellm.runtime.models.loading import load_model  # noqa: PLC0415
    from kubellm.runtime.serving.quantize import int8_targets  # noqa: PLC0415

    base = load_model(LLAMA).model
    model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    model.eval()
    assert all("lora_" not in name for name in int8_targets(model))
    quantized = quantize_int8_cpu(model)
    lora_layers = [m for name, m in quantized.named_modules() if name.endswith(("lora_A.default", "lora_B.default"))]
    assert lora_layers and all(type(layer) is nn.Linear for layer in lora_layers)
    base_layer = quantized.get_submodule("base_model.model.model.layers.0.self_attn.q_proj.base_layer")
    assert isinstance(base_layer, Int8Linear)
    inputs = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8]])
    with torch.inference_mode():
        logits = quantized(input_ids=inputs, adapter_names=["default", "__base__"]).logits
    assert logits.shape[:2] == (2, 4)
    assert torch.isfinite(logits).all()
