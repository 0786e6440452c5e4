"""Training methods: full fine-tuning, LoRA and QLoRA (LoRA on a 4-bit base), through peft.

LoRA targets default to each architecture's attention projections (``q_proj``/``v_proj`` on
Llama-style models, ``c_attn`` on GPT-2), as peft itself picks them; ``lora.targetModules``
overrides. QLoRA loads the base in 4-bit NF4 (:mod:`kubellm.runtime.models.quantization`) and
needs a CUDA GPU and bitsandbytes; without them it stops with a clear error before any work.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from peft import LoraConfig as PeftLoraConfig
from peft import get_peft_model, prepare_model_for_kbit_training
from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING
from transformers.pytorch_utils import Conv1D

from kubellm.contract.schema import ModelSource
from kubellm.contract.training import LoraConfig, TrainingConfig
from kubellm.runtime.models.compat import peft_deprecations_silenced
from kubellm.runtime.models.dummy import ARCHITECTURES
from kubellm.runtime.models.loading import LoadedModel, load_model
from kubellm.runtime.models.quantization import four_bit_config
from kubellm.runtime.training.errors import ConfigError

_prepare_kbit: Any = prepare_model_for_kbit_training  # untyped in peft

__all__ = ["PreparedModel", "default_lora_targets", "load_for_training", "parameter_counts", "prepare_model"]


@dataclass
class PreparedModel:
    """A model set up for one training method."""

    model: Any
    tokenizer: Any
    method: str
    trainable_parameters: int
    total_parameters: int
    model_type: str

    @property
    def trainable_fraction(self) -> float:
        """Share of the parameters the optimizer updates."""
        return self.trainable_parameters / self.total_parameters if self.total_parameters else 0.0


def default_lora_targets(model_type: str) -> list[str]:
    """The attention projections LoRA adapts on this architecture by default."""
    known = ARCHITECTURES.get(model_type)
    if known is not None and known.lora_targets:
        return list(known.lora_targets)
    targets = TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING.get(model_type)
    if not targets:
        raise ConfigError(f"no default LoRA target modules for {model_type!r}: set training.lora.targetModules")
    return list(targets)


def load_for_training(source: ModelSource, training: TrainingConfig) -> LoadedModel:
    """The base model in full precision, or in 4 bits for QLoRA (GPU only)."""
    if training.method == "qlora":
        return load_model(source, quantization_config=four_bit_config(), device_map="auto")
    return load_model(source, dtype=torch.float32)


def parameter_counts(model: Any) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


def prepare_model(loaded: LoadedModel, training: TrainingConfig) -> PreparedModel:
    """Wrap the model for the training method: all weights, or LoRA adapters on a frozen base."""
    model = loaded.model
    if training.method != "full":
        model = _with_adapters(model, loaded.model_type, training)
    model.train()
    trainable, total = parameter_counts(model)
    return PreparedModel(model, loaded.tokenizer, training.method, trainable, total, loaded.model_type)


def _with_adapters(model: Any, model_type: str, training: TrainingConfig) -> Any:
    lora = training.lora or LoraConfig()
    if training.method == "qlora":
        model = _prepare_kbit(model, use_gradient_checkpointing=training.gradient_checkpointing)
    config = PeftLoraConfig(
        r=lora.rank,
        lora_alpha=lora.alpha,
        lora_dropout=float(lora.dropout),
        target_modules=list(lora.target_modules) or default_lora_targets(model_type),
        fan_in_fan_out=any(isinstance(module, Conv1D) for module in model.modules()),  # GPT-2's transposed linears
        task_type="CAUSAL_LM",
    )
    try:
        with peft_deprecations_silenced():
            return get_peft_model(model, config)
    except ValueError as error:
        first_line = str(error).splitlines()[0]
        raise ConfigError(f"training.lora.targetModules: {first_line}") from None
