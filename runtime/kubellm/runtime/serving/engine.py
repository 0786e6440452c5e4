"""The engine: owns the model, its tokenizer and adapters, and runs forward passes. No HTTP here.

:class:`ServingEngine` is what the service and the scheduler use of any engine: the tokenizer's
side (prompts, chat templates, text) and the forward passes of :class:`StepModel`.
:func:`load_engine` loads the one ``serving.engine`` names: :class:`Engine` (transformers, here)
or llama.cpp (:mod:`kubellm.runtime.serving.llamacpp`).

The transformers engine loads through :mod:`kubellm.runtime.models` (any source URI, including ``dummy://`` and a
FineTuneJob's output folder), applies the quantization mode, attaches LoRA adapters (each
under its own model name; rows of one batch may use different adapters, as peft's mixed-batch
inference allows) and implements :class:`~kubellm.runtime.serving.batching.StepModel` for
the scheduler.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from collections.abc import Sequence as Seq
from dataclasses import dataclass
from typing import Any

import torch
from peft import PeftModel
from transformers import DynamicCache

from kubellm.contract.serving import EngineName, Quantization, ServedAdapter
from kubellm.runtime.models.compat import peft_deprecations_silenced
from kubellm.runtime.models.hub import translated_hub_errors
from kubellm.runtime.models.loading import load_model
from kubellm.runtime.models.sources import HubSource, ModelSourceError, PathSource, parse_source
from kubellm.runtime.serving.batching import Batch, RowBatch, Sequence
from kubellm.runtime.serving.errors import InvalidRequestError
from kubellm.runtime.serving.quantize import check_supported, load_options, quantize_int8_cpu, weight_bytes
from kubellm.runtime.serving.settings import ServerSettings

__all__ = ["BASE_ADAPTER", "Engine", "EngineInfo", "ServingEngine", "load_engine", "load_transformers_engine"]

log = logging.getLogger(__name__)

BASE_ADAPTER = "__base__"
"""peft's name for "no adapter" in a mixed-adapter batch."""
_PEFT_DEFAULT = "default"


@dataclass(frozen=True)
class EngineInfo:
    """What was loaded, for logs, metrics and ``/v1/models``."""

    engine: EngineName
    uri: str
    revision: str | None
    model_type: str
    base_uri: str | None
    quantization: Quantization
    device: str
    weight_bytes: int
    load_seconds: float


class ServingEngine(ABC):
    """A loaded model and its tokenizer: the text side here, the forward passes in each engine."""

    eos_token_ids: frozenset[int]

    def __init__(self, tokenizer: Any, info: EngineInfo, adapters: Mapping[str, str], max_positions: int) -> None:
        self.tokenizer = tokenizer
        self.info = info
        self.adapters = dict(adapters)
        """Served adapter name -> the engine's adapter name."""
        self.max_positions = max_positions

    # --- text ---------------------------------------------------------------------------

    def encode(self, text: str) -> list[int]:
        """Token ids of a prompt."""
        return [int(token) for token in self.tokenizer.encode(text, add_special_tokens=False)]

    def render_chat(self, messages: Seq[Mapping[str, str]]) -> str:
        """The prompt text of a conversation, ending where the assistant's answer starts."""
        if getattr(self.tokenizer, "chat_template", None):
            rendered = self.tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
            return str(rendered)
        lines = [f"{message['role']}: {message['content']}" for message in messages]
        return "\n".join([*lines, "assistant:"])

    def detokenize(self, token_ids: list[int]) -> str:
        """Text of generated tokens, special tokens skipped."""
        return str(self.tokenizer.decode(token_ids, skip_special_tokens=True))

    def check_fits(self, prompt_tokens: int, max_tokens: int) -> None:
        """The prompt plus the answer must fit the model's context."""
        if prompt_tokens + max_tokens > self.max_positions:
            raise InvalidRequestError(
                f"this model's context is {self.max_positions} tokens; the prompt has {prompt_tokens} and "
                f"max_tokens asks for {max_tokens}: shorten the prompt or lower max_tokens",
                param="max_tokens",
            )

    # --- forward passes (StepModel) -----------------------------------------------------

    def reserve(self, sequence: Sequence) -> bool:
        """Whether ``sequence`` may join the running batch now (room for its prompt and answer)."""
        return True

    def reset(self) -> None:
        """Forget every sequence: a step failed and failed them all."""
        return None

    @abstractmethod
    def prefill(self, sequences: list[Sequence]) -> tuple[RowBatch, torch.Tensor]:
        """A new batch for ``sequences`` (prompts run through the model) and its last-position logits."""

    @abstractmethod
    def decode(self, batch: RowBatch) -> torch.Tensor:
        """One decoding step for every row of the batch: the logits of each row."""

    def decode_joining(self, batch: RowBatch, sequences: list[Sequence]) -> tuple[RowBatch, torch.Tensor] | None:
        """Decode ``batch`` and prefill ``sequences`` in one pass, if this engine can (this one cannot)."""
        return None


class Engine(ServingEngine):
    """A transformers model ready to prefill and decode batches."""

    def __init__(
        self, model: Any, tokenizer: Any, info: EngineInfo, adapters: Mapping[str, str], base_adapter: str | None
    ) -> None:
        super().__init__(tokenizer, info, adapters, _max_positions(model))
        self.model = model
        self._base_adapter = base_adapter
        self._peft = isinstance(model, PeftModel)
        self.device = torch.device(info.device)
        self.eos_token_ids = _eos_token_ids(model, tokenizer)
        pad = tokenizer.pad_token_id
        self.pad_token_id = int(pad if pad is not None else tokenizer.eos_token_id)

    # --- forward passes (StepModel) -----------------------------------------------------

    def prefill(self, sequences: list[Sequence]) -> tuple[Batch, torch.Tensor]:
        """Run the prompts (left-padded) through the model: a new batch and its next-token logits."""
        width = max(len(sequence.prompt_ids) for sequence in sequences)
        rows = [[self.pad_token_id] * (width - len(s.prompt_ids)) + s.prompt_ids for s in sequences]
        masks = [[0] * (width - len(s.prompt_ids)) + [1] * len(s.prompt_ids) for s in sequences]
        input_ids = torch.tensor(rows, dtype=torch.long, device=self.device)
        attention_mask = torch.tensor(masks, dtype=torch.long, device=self.device)
        positions = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)
        cache = DynamicCache(config=self.model.config)
        logits = self._forward(input_ids, attention_mask, positions, cache, sequences)
        batch = Batch(sequences, input_ids[:, -1:], attention_mask, positions[:, -1:], cache)
        return batch, logits

    def decode(self, batch: RowBatch) -> torch.Tensor:
        """One decoding step for every row of the batch."""
        assert isinstance(batch, Batch)
        return self._forward(batch.next_tokens, batch.attention_mask, batch.positions, batch.cache, batch.sequences)

    def _forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        positions: torch.Tensor,
        cache: Any,
        sequences: list[Sequence],
    ) -> torch.Tensor:
        kwargs: dict[str, Any] = {}
        if self._peft:
            kwargs["adapter_names"] = [self._peft_adapter(sequence.adapter) for sequence in sequences]
        output = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=positions,
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
            **kwargs,
        )
        logits: torch.Tensor = output.logits[:, -1, :]
        return logits

    def _peft_adapter(self, served_adapter: str | None) -> str:
        if served_adapter is None:
            return self._base_adapter or BASE_ADAPTER
        return self.adapters[served_adapter]


def _eos_token_ids(model: Any, tokenizer: Any) -> frozenset[int]:
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = configured if isinstance(configured, list) else [configured]
    ids.append(tokenizer.eos_token_id)
    return frozenset(int(token) for token in ids if token is not None)


def _max_positions(model: Any) -> int:
    config = model.config
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return 2048


# --- loading ------------------------------------------------------------------------------


def _device(settings: ServerSettings) -> str:
    return settings.device or ("cuda" if torch.cuda.is_available() else "cpu")


def _adapter_location(adapter: ServedAdapter) -> str:
    source = parse_source(adapter.uri)
    if isinstance(source, PathSource):
        if not source.path.is_dir():
            raise ModelSourceError(f"adapter {adapter.name}: {adapter.uri}: no folder at {source.path}")
        return str(source.path)
    if isinstance(source, HubSource):
        return source.repo_id
    raise ModelSourceError(f"adapter {adapter.name}: {adapter.uri}: an adapter is a folder or an hf:// repository")


def _attach_adapters(model: Any, adapters: Seq[ServedAdapter]) -> Any:
    for adapter in adapters:
        location = _adapter_location(adapter)
        with translated_hub_errors(adapter.uri), peft_deprecations_silenced():
            if isinstance(model, PeftModel):
                model.load_adapter(location, adapter_name=adapter.name, is_trainable=False)
            else:
                model = PeftModel.from_pretrained(model, location, adapter_name=adapter.name, is_trainable=False)
    return model


def load_engine(settings: ServerSettings) -> ServingEngine:
    """Load the engine ``serving.engine`` names; raises ModelSourceError with a one-line reason."""
    if settings.serving.engine == "llamacpp":
        from kubellm.runtime.serving.llamacpp import load_llamacpp_engine  # noqa: PLC0415  (only when chosen)

        return load_llamacpp_engine(settings)
    return load_transformers_engine(settings)


def load_transformers_engine(settings: ServerSettings) -> Engine:
    """Load a transformers model, apply quantization, attach adapters."""
    started = time.monotonic()
    mode, device = settings.serving.quantization, _device(settings)
    check_supported(mode, device)
    dtype, bnb_config = load_options(mode, device)
    device_map = device if bnb_config else None
    loaded = load_model(settings.model, dtype=dtype, quantization_config=bnb_config, device_map=device_map)
    base_adapter = _PEFT_DEFAULT if isinstance(loaded.model, PeftModel) else None
    if settings.base_model_name and base_adapter is None:
        uri = settings.model.uri
        raise ModelSourceError(f"{uri}: is not an adapter, so there is no base model to serve separately")
    model = _attach_adapters(loaded.model, settings.adapters)
    if bnb_config is None:
        model = model.to(device)
    if mode == "int8" and device == "cpu":
        model = quantize_int8_cpu(model)
    model.eval()
    info = EngineInfo(
        engine="transformers",
        uri=settings.model.uri,
        revision=settings.model.revision,
        model_type=loaded.model_type,
        base_uri=loaded.base_uri,
        quantization=mode,
        device=device,
        weight_bytes=weight_bytes(model),
        load_seconds=time.monotonic() - started,
    )
    log_loaded(info, settings)
    return Engine(model, loaded.tokenizer, info, _served_adapters(settings), base_adapter)


def _served_adapters(settings: ServerSettings) -> dict[str, str]:
    """Served name -> peft adapter name; the plain base model of an adapter is peft's "no adapter"."""
    adapters = {adapter.name: adapter.name for adapter in settings.adapters}
    if settings.base_model_name:
        adapters[settings.base_model_name] = BASE_ADAPTER
    return adapters


def log_loaded(info: EngineInfo, settings: ServerSettings) -> None:
    """The one log line of a loaded model."""
    log.info("model loaded", extra={"fields": _info_fields(info, settings)})


def _info_fields(info: EngineInfo, settings: ServerSettings) -> dict[str, Any]:
    return {
        "model": settings.served_model_name,
        "engine": info.engine,
        "uri": info.uri,
        "quantization": info.quantization,
        "device": info.device,
        "weight_bytes": info.weight_bytes,
        "load_seconds": round(info.load_seconds, 3),
        "adapters": [adapter.name for adapter in settings.adapters],
    }
