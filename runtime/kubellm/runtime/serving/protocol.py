"""Request and response shapes of the OpenAI-compatible API and of the original ``/generate``.

Requests are pydantic models (unknown fields ignored, as OpenAI's own server tolerates new
client fields); responses are plain dicts built here, so the routes stay short. SSE framing
(``data: {...}`` events ending with ``data: [DONE]``) lives here too.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from kubellm.runtime.serving.sampling import SamplingParams

__all__ = [
    "DONE_EVENT",
    "ChatMessage",
    "ChatRequest",
    "CompletionRequest",
    "ErrorDetail",
    "ErrorResponse",
    "GenerateRequest",
    "StreamOptions",
    "Usage",
    "chat_chunk",
    "chat_response",
    "completion_chunk",
    "completion_response",
    "error_body",
    "new_id",
    "sse_event",
    "usage_chunk",
]

DONE_EVENT = "data: [DONE]\n\n"
MAX_STOP_SEQUENCES = 4

Text = Annotated[str, Field(max_length=1_000_000)]


class StreamOptions(BaseModel):
    """``stream_options``: ask for a last chunk carrying the usage."""

    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False


class _SamplingRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(max_length=256)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    n: int = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[Annotated[str, Field(min_length=1, max_length=256)]] | None = None
    seed: int | None = Field(default=None, ge=-(2**63), lt=2**63)  # a 64-bit integer, as OpenAI's API
    user: str | None = Field(default=None, max_length=256)

    def stop_sequences(self) -> tuple[str, ...]:
        """``stop`` as a tuple, empty strings dropped."""
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return tuple(stop for stop in stops if stop)

    def include_usage(self) -> bool:
        """Whether a stream ends with a usage chunk."""
        return self.stream_options is not None and self.stream_options.include_usage

    def sampling(self, max_tokens: int) -> SamplingParams:
        """Per-sequence sampling settings."""
        return SamplingParams(
            max_tokens=max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            seed=self.seed,
            stop=self.stop_sequences(),
        )


class CompletionRequest(_SamplingRequest):
    """``POST /v1/completions``."""

    prompt: Text | list[Text]
    max_tokens: int | None = 16

    def prompts(self) -> list[str]:
        """The prompt(s) as a list."""
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)


class ChatMessage(BaseModel):
    """One message; content parts of type text are joined."""

    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: Text | list[dict[str, Any]] | None = None

    def text(self) -> str:
        """The message's text."""
        if isinstance(self.content, list):
            return "".join(str(part.get("text", "")) for part in self.content if part.get("type") == "text")
        return self.content or ""


class ChatRequest(_SamplingRequest):
    """``POST /v1/chat/completions``."""

    messages: list[ChatMessage] = Field(min_length=1, max_length=1024)
    max_tokens: int | None = None
    max_completion_tokens: int | None = None

    def requested_max_tokens(self) -> int | None:
        """``max_completion_tokens`` (the newer name) or ``max_tokens``."""
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    def message_dicts(self) -> list[dict[str, str]]:
        """Messages as role/content dicts, for the chat template and the cache key."""
        return [{"role": message.role, "content": message.text()} for message in self.messages]


class GenerateRequest(BaseModel):
    """The original ``POST /generate``."""

    model_config = ConfigDict(extra="ignore")

    prompt: Text
    max_length: int = 128
    temperature: float = Field(default=0.7, ge=0.0, le=2.0)


class Usage(BaseModel):
    """Token counts of a request."""

    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion."""
        return self.prompt_tokens + self.completion_tokens

    def as_dict(self) -> dict[str, int]:
        """The OpenAI ``usage`` object."""
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }


def new_id(prefix: str) -> str:
    """A response id such as ``cmpl-<hex>``."""
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def _envelope(response_id: str, kind: str, model: str, created: int | None = None) -> dict[str, Any]:
    return {"id": response_id, "object": kind, "created": created or int(time.time()), "model": model}


def completion_response(
    response_id: str, model: str, choices: list[tuple[str, str | None]], usage: Usage
) -> dict[str, Any]:
    """A ``text_completion`` from (text, finish_reason) per choice."""
    body = _envelope(response_id, "text_completion", model)
    body["choices"] = [
        {"index": index, "text": text, "finish_reason": reason, "logprobs": None}
        for index, (text, reason) in enumerate(choices)
    ]
    body["usage"] = usage.as_dict()
    return body


def chat_response(response_id: str, model: str, choices: list[tuple[str, str | None]], usage: Usage) -> dict[str, Any]:
    """A ``chat.completion`` from (text, finish_reason) per choice."""
    body = _envelope(response_id, "chat.completion", model)
    body["choices"] = [
        {"index": index, "message": {"role": "assistant", "content": text}, "finish_reason": reason, "logprobs": None}
        for index, (text, reason) in enumerate(choices)
    ]
    body["usage"] = usage.as_dict()
    return body


def completion_chunk(response_id: str, model: str, index: int, text: str, finish_reason: str | None) -> dict[str, Any]:
    """One streamed piece of a completion."""
    body = _envelope(response_id, "text_completion", model)
    body["choices"] = [{"index": index, "text": text, "finish_reason": finish_reason, "logprobs": None}]
    return body


def chat_chunk(
    response_id: str, model: str, index: int, delta: Mapping[str, str], finish_reason: str | None
) -> dict[str, Any]:
    """One streamed piece of a chat answer."""
    body = _envelope(response_id, "chat.completion.chunk", model)
    body["choices"] = [{"index": index, "delta": dict(delta), "finish_reason": finish_reason, "logprobs": None}]
    return body


def usage_chunk(response_id: str, model: str, kind: str, usage: Usage) -> dict[str, Any]:
    """The last chunk of a stream asked for with ``include_usage``: no choices, the usage."""
    body = _envelope(response_id, kind, model)
    body["choices"] = []
    body["usage"] = usage.as_dict()
    return body


def sse_event(payload: Mapping[str, Any]) -> str:
    """One Server-Sent Event carrying a JSON payload."""
    return f"data: {json.dumps(payload, separators=(',', ':'), ensure_ascii=False)}\n\n"


class ErrorDetail(BaseModel):
    """What went wrong, in OpenAI's words: a message for people, a type, the field at fault, a code."""

    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    """The body of every error answer (documented in the OpenAPI; built by :func:`error_body`)."""

    error: ErrorDetail


def error_body(message: str, kind: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    """The OpenAI error shape."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}
