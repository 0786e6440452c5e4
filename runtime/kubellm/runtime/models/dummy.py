"""``dummy://<architecture>?<config fields>``: random weights of a real architecture, built offline.

The query keys are the architecture config's own field names (``hidden_size``,
``num_hidden_layers`` for Llama; ``n_embd``, ``n_layer`` for GPT-2), plus short aliases
(``hidden``, ``layers``, ``heads``, ``kv_heads``, ``intermediate``, ``positions``, ``vocab``)
that mean the same on every architecture. Every field left out gets a small default
(:attr:`DummyArchitecture.defaults`), so ``dummy://llama`` is a ~150k-parameter model that
trains in milliseconds per step. ``seed=N`` (default 0) fixes the weights: the same URI always
builds the same model, which is what lets a LoRA adapter trained on it be served later.

The tokenizer is :func:`kubellm.runtime.models.tokenizer.build_byte_tokenizer` with the
model's vocabulary size; token ids (bos, eos, pad) come from it and cannot be set in the URI.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

import torch
from huggingface_hub.errors import StrictDataclassError
from transformers import CONFIG_MAPPING, AutoModelForCausalLM, PretrainedConfig, PreTrainedModel

from kubellm.runtime.models.sources import DummySource, ModelSourceError
from kubellm.runtime.models.tokenizer import (
    BOS_EOS_TOKEN,
    CHAT_END_TOKEN,
    PAD_TOKEN,
    build_byte_tokenizer,
    minimum_vocab_size,
    special_token_id,
)

__all__ = [
    "ARCHITECTURES",
    "DummyArchitecture",
    "DummyModel",
    "architecture_of",
    "build_dummy_config",
    "build_dummy_model",
    "build_dummy_tokenizer",
]

ConfigValue = int | float | bool | str

_LLAMA_ALIASES = {
    "hidden": "hidden_size",
    "layers": "num_hidden_layers",
    "heads": "num_attention_heads",
    "kv_heads": "num_key_value_heads",
    "intermediate": "intermediate_size",
    "positions": "max_position_embeddings",
    "vocab": "vocab_size",
}
_LLAMA_DEFAULTS: dict[str, ConfigValue] = {
    "vocab_size": 512,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "max_position_embeddings": 512,
}


@dataclass(frozen=True)
class DummyArchitecture:
    """An architecture a dummy model can have: small defaults, aliases and LoRA targets."""

    model_type: str
    defaults: dict[str, ConfigValue]
    aliases: dict[str, str]
    lora_targets: tuple[str, ...] = field(default=())
    """Default LoRA target modules (the attention projections peft itself picks)."""


ARCHITECTURES: dict[str, DummyArchitecture] = {
    "llama": DummyArchitecture("llama", _LLAMA_DEFAULTS, _LLAMA_ALIASES, ("q_proj", "v_proj")),
    "mistral": DummyArchitecture("mistral", _LLAMA_DEFAULTS, _LLAMA_ALIASES, ("q_proj", "v_proj")),
    "qwen2": DummyArchitecture("qwen2", _LLAMA_DEFAULTS, _LLAMA_ALIASES, ("q_proj", "v_proj")),
    "gpt2": DummyArchitecture(
        "gpt2",
        {"vocab_size": 512, "n_embd": 64, "n_layer": 2, "n_head": 4, "n_positions": 512},
        {
            "hidden": "n_embd",
            "layers": "n_layer",
            "heads": "n_head",
            "intermediate": "n_inner",
            "positions": "n_positions",
            "vocab": "vocab_size",
        },
        ("c_attn",),
    ),
}

# Set from the tokenizer, or meaningless in a URI.
_RESERVED = {"transformers_version", "architectures", "id2label", "label2id", "bos_token_id", "eos_token_id"}
_RESERVED |= {"pad_token_id"}
_POSITION_FIELDS = ("max_position_embeddings", "n_positions")
_AUTO_MODEL: Any = AutoModelForCausalLM  # its from_config is untyped


@dataclass
class DummyModel:
    """A freshly built random-weight model with its tokenizer."""

    model: PreTrainedModel
    tokenizer: Any
    architecture: DummyArchitecture
    seed: int


def architecture_of(source: DummySource) -> DummyArchitecture:
    """The architecture a dummy URI names, or a clear error listing the known ones."""
    try:
        return ARCHITECTURES[source.name]
    except KeyError:
        known = ", ".join(sorted(ARCHITECTURES))
        raise ModelSourceError(f"{source.uri}: unknown architecture {source.name!r}; choose one of {known}") from None


def build_dummy_config(source: DummySource) -> tuple[PretrainedConfig, int]:
    """The architecture config (small defaults, URI overrides) and the weight seed."""
    architecture = architecture_of(source)
    config_class: Any = CONFIG_MAPPING[architecture.model_type]
    fields = {f.name: f for f in dataclasses.fields(config_class)}
    values: dict[str, ConfigValue] = dict(architecture.defaults)
    seed = 0
    for key, raw in source.options.items():
        if key == "seed":
            seed = _parse_seed(source.uri, raw)
            continue
        name = architecture.aliases.get(key, key)
        if name not in fields or name in _RESERVED:
            raise ModelSourceError(f"{source.uri}: {key!r} is not a settable {architecture.model_type} config field")
        values[name] = _coerce(source.uri, name, raw, fields[name].type)
    if "num_key_value_heads" in fields and "num_key_value_heads" not in values:
        values["num_key_value_heads"] = values.get("num_attention_heads", 4)  # no grouped-query attention
    if int(values["vocab_size"]) < minimum_vocab_size():
        raise ModelSourceError(f"{source.uri}: vocab_size must be at least {minimum_vocab_size()} (bytes + specials)")
    return _instantiate(source.uri, config_class, values), seed


def build_dummy_tokenizer(source: DummySource) -> Any:
    """Just the tokenizer a dummy model would have (no weights are built)."""
    config, _ = build_dummy_config(source)
    return _tokenizer_for(config)


def _tokenizer_for(config: PretrainedConfig) -> Any:
    positions = next((int(getattr(config, name)) for name in _POSITION_FIELDS if hasattr(config, name)), 2048)
    return build_byte_tokenizer(int(config.vocab_size), model_max_length=positions)


def build_dummy_model(source: DummySource) -> DummyModel:
    """Random weights of the architecture, reproducible from the URI's seed, and its tokenizer."""
    config, seed = build_dummy_config(source)
    tokenizer = _tokenizer_for(config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            model = _AUTO_MODEL.from_config(config)
        except (KeyError, ValueError, RuntimeError) as error:
            raise ModelSourceError(f"{source.uri}: cannot build the model: {error!r}") from None
    # Only the config records the URI: peft would look a model-level name up on the Hub.
    model.config._name_or_path = source.uri
    model.generation_config.eos_token_id = [special_token_id(BOS_EOS_TOKEN), special_token_id(CHAT_END_TOKEN)]
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return DummyModel(model=model, tokenizer=tokenizer, architecture=architecture_of(source), seed=seed)


def _parse_seed(uri: str, raw: str) -> int:
    if not re.fullmatch(r"[0-9]+", raw):
        raise ModelSourceError(f"{uri}: seed must be a non-negative integer, got {raw!r}")
    return int(raw)


def _coerce(uri: str, name: str, raw: str, declared: object) -> ConfigValue:
    """Read a query value as the type the config field declares (``int | None``, ``float``...)."""
    words = set(re.findall(r"[A-Za-z_][A-Za-z_.]*", declared if isinstance(declared, str) else str(declared)))
    lowered = raw.lower()
    if "bool" in words and lowered in ("true", "false"):
        return lowered == "true"
    if "int" in words and re.fullmatch(r"-?[0-9]+", raw):
        return int(raw)
    if "float" in words and re.fullmatch(r"-?[0-9.]+([eE][-+]?[0-9]+)?", raw):
        return float(raw)
    if "str" in words or "Literal" in words:
        return raw
    expected = " or ".join(sorted(words & {"bool", "int", "float"})) or "a value a URI cannot express"
    raise ModelSourceError(f"{uri}: {name} expects {expected}, got {raw!r}")


def _instantiate(uri: str, config_class: Any, values: dict[str, ConfigValue]) -> PretrainedConfig:
    special = {
        "bos_token_id": special_token_id(BOS_EOS_TOKEN),
        "eos_token_id": special_token_id(BOS_EOS_TOKEN),
        "pad_token_id": special_token_id(PAD_TOKEN),
    }
    try:
        config: PretrainedConfig = config_class(**values, **special)
        return config
    except (StrictDataclassError, ValueError, TypeError) as error:
        detail = " ".join(str(error).split())
        raise ModelSourceError(f"{uri}: invalid configuration: {detail}") from None
