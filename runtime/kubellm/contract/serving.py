"""ModelDeployment's part of the contract: the ``serving`` section and the run document ``kubellm serve`` reads.

- Spec section: :class:`ServingConfig` (engine, precision, limits, cache), embedded as a
  ModelDeployment's ``spec.serving``.
- Run document: :class:`ServerRun` is what one server runs: the model source, its served names,
  the adapters (each a resolved URI) and the serving section. The operator writes it into the
  ModelDeployment's ConfigMap after resolving ``fineTuneJobRef`` and adapter references;
  ``kubellm serve --config`` reads it, and its flags override single fields of it.
"""

from __future__ import annotations

from typing import Annotated, Literal, get_args

from pydantic import Field, StringConstraints, model_validator

from kubellm.contract.schema import (
    SOURCE_URI_PATTERN,
    CelRule,
    ConfigModel,
    Identifier,
    ModelSource,
    SecretKeyRef,
    check,
    check_unique,
    model_section,
)

__all__ = [
    "ENGINES",
    "LLAMACPP_NEEDS_GGUF",
    "LLAMACPP_NO_ADAPTERS",
    "LLAMACPP_ON_CPU",
    "QUANTIZATIONS",
    "SERVER_PORT",
    "CacheConfig",
    "EngineName",
    "GenerationLimits",
    "Quantization",
    "ServedAdapter",
    "ServerRun",
    "ServingConfig",
]

Quantization = Literal["none", "fp16", "bf16", "int8", "int4"]
"""Weight precision when serving: int8 works on CPU and GPU, int4 needs a GPU."""
QUANTIZATIONS: tuple[str, ...] = get_args(Quantization)
EngineName = Literal["transformers", "llamacpp"]
"""What runs the model: transformers (PyTorch) or llama.cpp (GGUF files on CPU)."""
ENGINES: tuple[str, ...] = get_args(EngineName)
LLAMACPP_NEEDS_GGUF = (
    "serving.engine llamacpp serves a .gguf file: set model.uri to one (a FineTuneJob's output is a "
    "transformers folder: serve it with engine transformers)"
)
LLAMACPP_NO_ADAPTERS = (
    "serving.engine llamacpp serves no LoRA adapters: remove adapters (and baseModelName) or use engine transformers"
)
LLAMACPP_ON_CPU = "serving.engine llamacpp runs on CPU: remove the GPU request or use engine transformers"
_LLAMACPP_OWN_PRECISION = CelRule(
    rule="self.engine != 'llamacpp' || self.quantization == 'none'",
    message="serving.engine llamacpp runs the GGUF file at its own precision: leave quantization at none "
    "(serve a Q8_0 or Q4 file for smaller weights)",
    field_path=".quantization",
)
SERVER_PORT = 8000
"""The port ``kubellm serve`` listens on in a pod (the Service and the probes point at it)."""
REDIS_URL_PATTERN = r"^rediss?://[^\s@]+$"


class GenerationLimits(ConfigModel):
    """Per-server limits; requests beyond them get 400, 413, 429 or 503 rather than a crash."""

    cel_rules = (
        CelRule(
            rule="self.maxBatchSize <= self.maxConcurrent",
            message="maxBatchSize must not exceed maxConcurrent",
            field_path=".maxBatchSize",
        ),
    )

    max_tokens: int = Field(
        default=512, ge=1, le=131_072, description="Largest max_tokens a request may ask for (400 above)."
    )
    max_concurrent: int = Field(default=32, ge=1, le=4096, description="Requests generating at once per replica.")
    max_queue: int = Field(
        default=64,
        ge=0,
        le=100_000,
        description="Requests waiting for a slot per replica; beyond it the server answers 429.",
    )
    max_batch_size: int = Field(
        default=32,
        ge=1,
        le=1024,
        description="Sequences decoded together in one batch (default: as many as maxConcurrent's default).",
    )
    batch_wait_ms: int = Field(
        default=5, ge=0, le=1000, description="Milliseconds to wait for more requests before starting a batch."
    )
    max_n: int = Field(default=4, ge=1, le=64, description="Largest n (choices per request) accepted.")
    max_prompt_tokens: int | None = Field(
        default=None,
        ge=1,
        le=1_048_576,
        description="Longest prompt in tokens (400 above). Default: the model's context length.",
    )
    max_request_bytes: int = Field(
        default=1_048_576, ge=1024, le=67_108_864, description="Largest request body in bytes (413 above)."
    )
    request_timeout_seconds: int = Field(
        default=120, ge=1, le=3600, description="A request still running after this many seconds is cancelled (503)."
    )

    @model_validator(mode="after")
    def _batch_within_concurrency(self) -> GenerationLimits:
        check(self.max_batch_size > self.max_concurrent, "maxBatchSize must not exceed maxConcurrent")
        return self


_CACHE_OFF_HAS_NO_URL = CelRule(
    rule="self.enabled || !has(self.url)",
    message="url must be omitted when enabled is false: a url turns the Redis cache on, enabled: false turns "
    "every cache off",
    field_path=".url",
    reason="FieldValueForbidden",
)
_PASSWORD_NEEDS_URL = CelRule(
    rule="has(self.url) || !has(self.passwordSecretRef)",
    message="passwordSecretRef needs a url: without one the cache is in-process and has no password",
    field_path=".passwordSecretRef",
    reason="FieldValueForbidden",
)


class CacheConfig(ConfigModel):
    """The response cache: only deterministic requests (temperature 0 or a seed) are cached, keyed per tenant.

    Three states, one obvious setting each: nothing set, a bounded in-process cache per replica;
    a ``url``, Redis (shared by every replica); ``enabled: false``, no cache at all.
    """

    cel_rules = (_CACHE_OFF_HAS_NO_URL, _PASSWORD_NEEDS_URL)

    enabled: bool = Field(
        default=True,
        description="false turns the response cache off entirely (then omit url). true (the default) caches: in "
        "Redis when url is set, else in each replica's memory.",
    )
    url: Annotated[str, StringConstraints(pattern=REDIS_URL_PATTERN, max_length=512)] | None = Field(
        default=None,
        description="Cache in Redis at this redis:// or rediss:// URL without credentials, e.g. "
        "redis://redis:6379/0; entries expire there after ttlSeconds. Default: an in-process cache per replica.",
    )
    password_secret_ref: SecretKeyRef | None = Field(
        default=None, description="Secret key holding the Redis password (with url only)."
    )
    ttl_seconds: int = Field(
        default=3600, ge=1, le=2_592_000, description="How long a cached response lives (in Redis: the key's TTL)."
    )
    key_prefix: Identifier = Field(default="kubellm", description="Prefix of every cache key.")

    @model_validator(mode="after")
    def _consistent(self) -> CacheConfig:
        check(not self.enabled and self.url is not None, _CACHE_OFF_HAS_NO_URL.message)
        check(self.url is None and self.password_secret_ref is not None, _PASSWORD_NEEDS_URL.message)
        return self


class ServingConfig(ConfigModel):
    """How the model server runs: engine, precision, limits and cache."""

    cel_rules = (_LLAMACPP_OWN_PRECISION,)

    engine: EngineName = Field(
        default="transformers",
        description=(
            "What runs the model: transformers (PyTorch: any model source, LoRA adapters, quantization, GPUs) "
            "or llamacpp (llama.cpp on CPU, for a .gguf model file at the file's own precision, batched like "
            "transformers: several times faster decoding on CPU; no adapters)."
        ),
    )
    quantization: Quantization = Field(
        default="none",
        description=(
            "Weight precision: none (as stored), fp16, bf16, int8 (CPU or GPU) or int4 (GPU only). "
            "int8 on CPU shrinks weights about 3x but speeds decoding only for models of tens of millions "
            "of parameters and up."
        ),
    )
    limits: GenerationLimits = model_section(GenerationLimits, "Request and batching limits per replica.")
    cache: CacheConfig = model_section(
        CacheConfig, "Response cache: in-process by default, Redis with a url, none with enabled: false."
    )

    @model_validator(mode="after")
    def _llamacpp_own_precision(self) -> ServingConfig:
        check(self.engine == "llamacpp" and self.quantization != "none", _LLAMACPP_OWN_PRECISION.message)
        return self


class ServedAdapter(ConfigModel):
    """A LoRA adapter served on the base model under its own model name."""

    name: Identifier = Field(description="Model name clients request to use this adapter.")
    uri: Annotated[str, StringConstraints(pattern=SOURCE_URI_PATTERN, max_length=1024)] = Field(
        description="Adapter location: hf://, file://, pvc:// or a path."
    )


class ServerRun(ConfigModel):
    """The run document of ``kubellm serve --config FILE``: one model server, references resolved."""

    model: ModelSource = Field(
        description="The model (or a FineTuneJob's output folder) to load; its token arrives as HF_TOKEN."
    )
    served_model_name: Identifier = Field(default="model", description="The model's name in the API.")
    base_model_name: Identifier | None = Field(
        default=None,
        description="When the model is a fine-tuned adapter: also serve its plain base model under this name.",
    )
    adapters: list[ServedAdapter] = Field(
        default_factory=list, max_length=64, description="LoRA adapters on the model, each under its own name."
    )
    serving: ServingConfig = model_section(ServingConfig, "Engine, precision, limits and cache.")

    @model_validator(mode="after")
    def _unique_names(self) -> ServerRun:
        check_unique("model names", self.model_names())
        return self

    @model_validator(mode="after")
    def _llamacpp_serves_one_gguf_file(self) -> ServerRun:
        if self.serving.engine == "llamacpp":
            check(not self.model.uri.lower().endswith(".gguf"), LLAMACPP_NEEDS_GGUF)
            check(bool(self.adapters) or self.base_model_name is not None, LLAMACPP_NO_ADAPTERS)
        return self

    def model_names(self) -> list[str]:
        """Every name a request may put in ``model``: the model first, its base, then the adapters."""
        base = [self.base_model_name] if self.base_model_name else []
        return [self.served_model_name, *base, *(adapter.name for adapter in self.adapters)]
