"""The server's one settings object, built once (by ``kubellm serve`` or a test) and passed down.

The serving contract itself (quantization, limits, cache) is :class:`~kubellm.runtime.config.ServingConfig`,
the same model a ModelDeployment's ``spec.serving`` holds; this adds what the process needs around
it: the model and adapters, names, the listening address and the secrets that arrive as
environment variables.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from kubellm.runtime.config import Identifier, ServingConfig

__all__ = ["DEFAULT_PORT", "AdapterSpec", "ServerSettings"]

DEFAULT_PORT = 8000


class AdapterSpec(BaseModel):
    """A LoRA adapter served on the base model under its own model name."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Identifier
    uri: str


class ServerSettings(BaseModel):
    """Everything ``kubellm serve`` needs to run one model server."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = Field(description="Source URI of the model (or of a FineTuneJob's output folder).")
    model_revision: str | None = Field(default=None, description="Revision of an hf:// model.")
    served_model_name: Identifier = Field(default="model", description="The base model's name in the API.")
    adapters: tuple[AdapterSpec, ...] = Field(default=(), description="LoRA adapters on the base model.")
    base_model_name: Identifier | None = Field(
        default=None,
        description="When the model is a fine-tuned adapter: also serve the plain base model under this name.",
    )
    serving: ServingConfig = Field(default_factory=ServingConfig)
    host: str = "0.0.0.0"  # a pod serves on every interface
    port: int = Field(default=DEFAULT_PORT, ge=1, le=65_535)
    api_keys: tuple[str, ...] = Field(default=(), repr=False, description="Accepted bearer tokens; empty: open.")
    redis_password: str | None = Field(default=None, repr=False)
    device: str | None = Field(default=None, description="torch device; default cuda when visible, else cpu.")
    torch_threads: int | None = Field(
        default=None, ge=1, le=1024, description="CPU threads for torch; default: the cores available minus one."
    )
    max_prompt_tokens: int | None = Field(
        default=None, ge=1, description="Longest prompt in tokens (400 above); default: the model's context less one."
    )
    memory_cache_entries: int = Field(default=1024, ge=0, description="Size of the in-process cache without Redis.")

    def model_names(self) -> list[str]:
        """Every name a request may put in ``model``: the base model first, then the adapters."""
        base = [self.base_model_name] if self.base_model_name else []
        return [self.served_model_name, *base, *(adapter.name for adapter in self.adapters)]
