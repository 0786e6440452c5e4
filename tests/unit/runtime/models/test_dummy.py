"""dummy://<architecture>?<config fields>: small defaults, the config's own field names, seeds, clear errors."""

from __future__ import annotations

import pytest
import torch

from kubellm.runtime.models.dummy import ARCHITECTURES, build_dummy_config, build_dummy_model
from kubellm.runtime.models.sources import DummySource, ModelSourceError, parse_source


def _source(uri: str) -> DummySource:
    source = parse_source(uri)
    assert isinstance(source, DummySource)
    return source


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def test_fields_left_out_get_small_defaults() -> None:
    config, seed = build_dummy_config(_source("dummy://llama"))
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (64, 2, 4)
    assert config.num_key_value_heads == 4
    assert config.vocab_size == 512
    assert seed == 0


def test_query_keys_are_the_config_field_names() -> None:
    uri = "dummy://llama?hidden_size=32&num_hidden_layers=1&num_attention_heads=2&rms_norm_eps=1e-5&seed=7"
    config, seed = build_dummy_config(_source(uri))
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (32, 1, 2)
    assert config.rms_norm_eps == pytest.approx(1e-5)
    assert seed == 7


def test_gpt2_uses_its_own_field_names_and_the_shared_aliases() -> None:
    config, _ = build_dummy_config(_source("dummy://gpt2?n_embd=32&n_layer=1&heads=2&vocab=300"))
    assert (config.n_embd, config.n_layer, config.n_head, config.vocab_size) == (32, 1, 2, 300)
    llama, _ = build_dummy_config(_source("dummy://llama?layers=3&hidden=48&heads=4&kv_heads=2"))
    assert (llama.num_hidden_layers, llama.hidden_size, llama.num_key_value_heads) == (3, 48, 2)


@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
def test_every_architecture_builds_and_runs(architecture: str) -> None:
    built = build_dummy_model(_source(f"dummy://{architecture}?seed=1"))
    assert built.model.config.model_type == architecture
    assert sum(p.numel() for p in built.model.parameters()) < 500_000
    inputs = built.tokenizer("hello world", return_tensors="pt")
    logits = built.model(**inputs).logits
    assert logits.shape == (1, inputs["input_ids"].shape[1], built.model.config.vocab_size)
    assert built.model.config.eos_token_id == built.tokenizer.eos_token_id
    assert built.model.config.pad_token_id == built.tokenizer.pad_token_id


def test_the_seed_makes_weights_reproducible() -> None:
    first = build_dummy_model(_source("dummy://llama?seed=3")).model
    again = build_dummy_model(_source("dummy://llama?seed=3")).model
    other = build_dummy_model(_source("dummy://llama?seed=4")).model
    assert _same_weights(first, again)
    assert not _same_weights(first, other)


def test_building_does_not_disturb_the_global_random_state() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_dummy_model(_source("dummy://gpt2?seed=9"))
    assert torch.equal(torch.rand(3), expected)


def test_the_model_records_its_uri() -> None:
    uri = "dummy://llama?seed=2"
    assert build_dummy_model(_source(uri)).model.config._name_or_path == uri


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("dummy://bert", "unknown architecture 'bert'; choose one of gpt2, llama, mistral, qwen2"),
        ("dummy://llama?n_embd=64", "'n_embd' is not a settable llama config field"),
        ("dummy://llama?eos_token_id=5", "'eos_token_id' is not a settable llama config field"),
        ("dummy://llama?hidden_size=big", "hidden_size expects int, got 'big'"),
        ("dummy://llama?rope_parameters=1", "rope_parameters expects a value a URI cannot express"),
        ("dummy://llama?hidden_size=65", "not a multiple of the number of attention heads"),
        ("dummy://llama?vocab_size=256", "vocab_size must be at least 260"),
        ("dummy://llama?seed=x", "seed must be a non-negative integer"),
        ("dummy://llama?hidden_act=nope", "cannot build the model"),
    ],
)
def test_bad_dummy_uris_fail_with_one_line(uri: str, message: str) -> None:
    with pytest.raises(ModelSourceError) as error:
        build_dummy_model(_source(uri))
    assert message in str(error.value)
    assert str(error.value).startswith(uri)
    assert "\n" not in str(error.value)
