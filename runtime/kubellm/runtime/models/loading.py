"""Load a causal language model and its tokenizer from any source URI (shared by training and serving).

- ``hf://``: ``from_pretrained`` with the token from ``$HF_TOKEN`` (fed by the resource's
  ``tokenSecretRef``); hub failures become one-line :class:`ModelSourceError`s.
- a path (``file://``, ``pvc://``, ``pkg://`` or plain): a full model folder, or an adapter folder
  (``adapter_config.json``) whose base model is found through the output manifest
  (:mod:`kubellm.runtime.models.layout`) and loaded first, or a ``.gguf`` file, converted once
  into a cached model folder (:mod:`kubellm.runtime.models.gguf`) and loaded from there.
- ``dummy://``: random weights built locally (:mod:`kubellm.runtime.models.dummy`).

Remote code is never trusted: only architectures transformers ships are loaded.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

from kubellm.contract.schema import ModelSource
from kubellm.runtime.models.compat import peft_deprecations_silenced
from kubellm.runtime.models.dummy import build_dummy_model, build_dummy_tokenizer
from kubellm.runtime.models.gguf import converted_gguf, is_gguf
from kubellm.runtime.models.hub import translated_hub_errors
from kubellm.runtime.models.layout import read_manifest
from kubellm.runtime.models.sources import (
    DummySource,
    HubSource,
    ModelSourceError,
    PathSource,
    Source,
    hub_token,
    parse_source,
)

__all__ = ["ADAPTER_CONFIG", "DType", "LoadedModel", "load_model", "load_tokenizer", "resolve_source"]

ADAPTER_CONFIG = "adapter_config.json"
DType = torch.dtype | str


@dataclass
class LoadedModel:
    """A model ready to generate or train, with its tokenizer."""

    model: Any
    """A ``PreTrainedModel``, or a ``PeftModel`` when the source was an adapter folder."""
    tokenizer: Any
    uri: str
    model_type: str
    base_uri: str | None = None
    """For an adapter: the URI of the base model it was applied to."""


def resolve_source(source: ModelSource | str, revision: str | None = None) -> Source:
    """Parse a :class:`ModelSource` (or a bare URI) into a typed source."""
    if isinstance(source, ModelSource):
        return parse_source(source.uri, source.revision)
    return parse_source(source, revision)


def load_model(
    source: ModelSource | str,
    *,
    dtype: DType = "auto",
    quantization_config: BitsAndBytesConfig | None = None,
    device_map: str | dict[str, Any] | None = None,
) -> LoadedModel:
    """Load the model and tokenizer ``source`` names; raises :class:`ModelSourceError` with a one-line reason."""
    parsed = _converted_if_gguf(resolve_source(source))
    if isinstance(parsed, DummySource):
        return _load_dummy(parsed, dtype, quantization_config)
    if isinstance(parsed, PathSource) and (_folder(parsed) / ADAPTER_CONFIG).is_file():
        return _load_adapter(parsed, dtype, quantization_config, device_map)
    location, revision = _location(parsed)
    kwargs = _pretrained_kwargs(parsed, dtype, quantization_config, device_map)
    with translated_hub_errors(parsed.uri):
        model = AutoModelForCausalLM.from_pretrained(location, revision=revision, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(location, revision=revision, token=kwargs.get("token"))
    return LoadedModel(model=model, tokenizer=tokenizer, uri=parsed.uri, model_type=str(model.config.model_type))


def load_tokenizer(source: ModelSource | str) -> Any:
    """Just the tokenizer (cheap: no weights are read or built, except to convert a GGUF file once)."""
    parsed = _converted_if_gguf(resolve_source(source))
    if isinstance(parsed, DummySource):
        return build_dummy_tokenizer(parsed)
    location, revision = _location(parsed)
    token = hub_token() if isinstance(parsed, HubSource) else None
    with translated_hub_errors(parsed.uri):
        return AutoTokenizer.from_pretrained(location, revision=revision, token=token)


def _converted_if_gguf(source: Source) -> Source:
    """A ``.gguf`` file stands for the model folder converted from it (converted now if not cached)."""
    if isinstance(source, PathSource) and is_gguf(source.path):
        return PathSource(uri=source.uri, path=converted_gguf(source.uri, source.path))
    return source


def _folder(source: PathSource) -> Path:
    if not source.path.exists():
        raise ModelSourceError(f"{source.uri}: path {source.path} does not exist")
    if not source.path.is_dir():
        raise ModelSourceError(
            f"{source.uri}: {source.path} is a file; a model is a folder with config.json, or a .gguf file"
        )
    return source.path


def _location(source: Source) -> tuple[str, str | None]:
    if isinstance(source, HubSource):
        return source.repo_id, source.revision
    if isinstance(source, PathSource):
        folder = _folder(source)
        if not (folder / "config.json").is_file() and not (folder / ADAPTER_CONFIG).is_file():
            raise ModelSourceError(f"{source.uri}: no model in {folder} (neither config.json nor {ADAPTER_CONFIG})")
        return str(folder), None
    raise ModelSourceError(f"{source.uri}: a dummy model has no files to load")


def _pretrained_kwargs(
    source: Source,
    dtype: DType,
    quantization_config: BitsAndBytesConfig | None,
    device_map: str | dict[str, Any] | None,
) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"dtype": dtype, "trust_remote_code": False}
    if isinstance(source, HubSource):
        kwargs["token"] = hub_token()
    if quantization_config is not None:
        kwargs["quantization_config"] = quantization_config
    if device_map is not None:
        kwargs["device_map"] = device_map
    return kwargs


def _load_dummy(source: DummySource, dtype: DType, quantization_config: BitsAndBytesConfig | None) -> LoadedModel:
    built = build_dummy_model(source)
    model: Any = built.model
    if quantization_config is not None:
        model = _requantized(model, quantization_config)
    elif isinstance(dtype, torch.dtype):
        model = model.to(dtype)
    return LoadedModel(model=model, tokenizer=built.tokenizer, uri=source.uri, model_type=built.architecture.model_type)


def _requantized(model: Any, quantization_config: BitsAndBytesConfig) -> Any:
    """Quantization happens while loading, so save the random weights and load them back."""
    name = model.config._name_or_path
    with tempfile.TemporaryDirectory(prefix="kubellm-dummy-") as folder:
        model.save_pretrained(folder)
        quantized = AutoModelForCausalLM.from_pretrained(
            folder, quantization_config=quantization_config, device_map="auto"
        )
    quantized.config._name_or_path = name
    return quantized


def _adapter_base(folder: Path) -> tuple[str, str | None]:
    manifest = read_manifest(folder)
    if manifest is not None:
        return manifest.base_model, manifest.base_revision
    base = json.loads((folder / ADAPTER_CONFIG).read_text()).get("base_model_name_or_path")
    if not isinstance(base, str) or not base:
        raise ModelSourceError(f"{folder}: the adapter names no base model (base_model_name_or_path)")
    if "://" in base or Path(base).exists():
        return base, None
    return f"hf://{base}", None


def _load_adapter(
    source: PathSource,
    dtype: DType,
    quantization_config: BitsAndBytesConfig | None,
    device_map: str | dict[str, Any] | None,
) -> LoadedModel:
    folder = _folder(source)
    base_uri, base_revision = _adapter_base(folder)
    base = load_model(
        ModelSource(uri=base_uri, revision=base_revision) if base_revision else base_uri,
        dtype=dtype,
        quantization_config=quantization_config,
        device_map=device_map,
    )
    with translated_hub_errors(source.uri), peft_deprecations_silenced():
        model = PeftModel.from_pretrained(base.model, str(folder), is_trainable=False)
    tokenizer = AutoTokenizer.from_pretrained(str(folder)) if (folder / "tokenizer_config.json").is_file() else None
    return LoadedModel(
        model=model,
        tokenizer=tokenizer if tokenizer is not None else base.tokenizer,
        uri=source.uri,
        model_type=base.model_type,
        base_uri=base_uri,
    )
