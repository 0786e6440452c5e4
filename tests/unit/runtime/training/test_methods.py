"""Preparing a model for its training method: LoRA adapters with the spec's settings or the defaults."""

from __future__ import annotations

import pytest

from kubellm.contract.schema import ModelSource
from kubellm.contract.training import LoraConfig, TrainingConfig
from kubellm.runtime.training.methods import default_lora_targets, load_for_training, prepare_model

TINY = ModelSource(uri="dummy://llama?hidden_size=32&intermediate_size=64&num_hidden_layers=2&seed=1")


@pytest.mark.parametrize(
    ("lora", "expected"),
    [
        (None, LoraConfig()),  # method lora alone means the default settings, as method full needs nothing more
        ({"rank": 4, "alpha": 8, "dropout": "0", "targetModules": ["q_proj"]}, None),
    ],
)
def test_lora_adapters_take_the_spec_settings_or_the_defaults(
    lora: dict[str, object] | None, expected: LoraConfig | None
) -> None:
    training = TrainingConfig.model_validate({"method": "lora", **({"lora": lora} if lora else {})})
    settings = expected or training.lora
    assert settings is not None
    prepared = prepare_model(load_for_training(TINY, training), training)
    adapter = prepared.model.peft_config["default"]
    targets = list(settings.target_modules) or default_lora_targets("llama")
    assert (adapter.r, adapter.lora_alpha, adapter.lora_dropout) == (
        settings.rank,
        settings.alpha,
        float(settings.dropout),
    )
    assert set(adapter.target_modules) == set(targets)
    assert 0 < prepared.trainable_parameters < prepared.total_parameters
