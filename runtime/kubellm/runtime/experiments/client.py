"""An async client for OpenAI-compatible servers, as an experiment needs it.

It sends one chat or completions request at a time per call (the runner bounds concurrency),
retries with exponential backoff on 429, 502, 503, 504 and connection errors (honouring a
``Retry-After`` header), applies a per-request timeout, and asks the server not to answer from
its response cache (``Cache-Control: no-cache``) so every variant is measured on fresh
generations. Latency is the time of the attempt that succeeded. The API key never appears in
an error text, even when the server repeats it.

Errors are two exceptions: :class:`EndpointUnreachableError` (no connection after the retries: the
run stops, since every other request would fail the same way) and :class:`RequestError` (this
request failed; the runner records it and goes on).
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from types import TracebackType
from typing import Any, Literal

import httpx

from kubellm.contract.experiments import GenerationParams
from kubellm.runtime.errors import CommandError

from .templates import RenderedPrompt

__all__ = [
    "RETRYABLE_STATUS",
    "Api",
    "ClientSettings",
    "Completion",
    "EndpointClient",
    "EndpointUnreachableError",
    "RequestError",
    "redact",
    "request_body",
]

Api = Literal["chat", "completions"]
RETRYABLE_STATUS = frozenset({429, 502, 503, 504})
_PATHS: dict[Api, str] = {"chat": "chat/completions", "completions": "completions"}


class RequestError(CommandError):
    """One request failed for good (after any retries)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class EndpointUnreachableError(RequestError):
    """The server could not be reached at all."""


@dataclass(frozen=True)
class ClientSettings:
    """Where to send requests and how patiently."""

    base_url: str
    api: Api = "chat"
    api_key: str | None = None
    timeout_seconds: float = 120.0
    max_retries: int = 4
    backoff_seconds: float = 0.5
    max_backoff_seconds: float = 30.0
    max_connections: int = 16


@dataclass(frozen=True)
class Completion:
    """A generated answer and what it cost."""

    text: str
    latency_seconds: float
    prompt_tokens: int | None
    completion_tokens: int | None
    finish_reason: str | None


def request_body(
    api: Api,
    model: str,
    prompt: RenderedPrompt,
    generation: GenerationParams,
    seed: int,
    *,
    max_tokens: int | None = None,
) -> dict[str, Any]:
    """The JSON body of one request; ``seed`` is the same for every variant on a row and sample.

    ``max_tokens`` is the variant's own budget, when it has one (else ``generation.max_tokens``).
    """
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": max_tokens or generation.max_tokens,
        "temperature": float(Decimal(generation.temperature)),
        "top_p": float(Decimal(generation.top_p)),
        "seed": seed,
        "stream": False,
    }
    if generation.stop:
        body["stop"] = list(generation.stop)
    if api == "chat":
        body["messages"] = prompt.messages()
    else:
        body["prompt"] = prompt.prompt()
    return body


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _error_text(response: httpx.Response, api_key: str | None) -> str:
    try:
        detail = response.json().get("error", {}).get("message")
    except (ValueError, AttributeError):
        detail = None
    text = detail or response.text[:200].strip() or response.reason_phrase
    return redact(f"HTTP {response.status_code}: {text}", api_key)


def redact(text: str, api_key: str | None) -> str:
    """``text`` with the API key masked.

    Some servers repeat the credentials they were sent in their errors ("invalid key sk-..."),
    and an error text travels on: into ``requests.jsonl``, the result, the report ConfigMap.
    """
    return text.replace(api_key, "***") if api_key else text


@dataclass(frozen=True)
class _Retry:
    """A failed attempt worth another try, and the delay the server asked for."""

    error: RequestError
    retry_after: float | None = None


class EndpointClient:
    """A pooled HTTP client for one OpenAI-compatible base URL (use as ``async with``)."""

    def __init__(self, settings: ClientSettings, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.settings = settings
        headers = {"Cache-Control": "no-cache", "User-Agent": "kubellm-experiment"}
        if settings.api_key:
            headers["Authorization"] = f"Bearer {settings.api_key}"
        limits = httpx.Limits(
            max_connections=settings.max_connections, max_keepalive_connections=settings.max_connections
        )
        timeout = httpx.Timeout(settings.timeout_seconds, connect=min(10.0, settings.timeout_seconds))
        self._http = httpx.AsyncClient(
            base_url=settings.base_url, headers=headers, timeout=timeout, limits=limits, transport=transport
        )

    async def __aenter__(self) -> EndpointClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self._http.aclose()

    async def list_models(self) -> list[str]:
        """Model ids from ``GET /models`` (also proves the server is reachable)."""
        response, _ = await self._send("GET", "models", None)
        try:
            return [str(entry["id"]) for entry in response.json()["data"]]
        except (ValueError, KeyError, TypeError) as error:
            raise RequestError(f"malformed /models response: {error!r}") from None

    async def complete(self, body: Mapping[str, Any]) -> Completion:
        """Send one chat or completions request and return the answer."""
        response, latency = await self._send("POST", _PATHS[self.settings.api], body)
        try:
            return self._parse(response.json(), latency)
        except (ValueError, KeyError, IndexError, TypeError) as error:
            raise RequestError(f"malformed response: {error!r}") from None

    def _parse(self, payload: Mapping[str, Any], latency: float) -> Completion:
        choice = payload["choices"][0]
        text = choice["message"]["content"] if self.settings.api == "chat" else choice["text"]
        usage = payload.get("usage") or {}
        return Completion(
            text=str(text or ""),
            latency_seconds=latency,
            prompt_tokens=usage.get("prompt_tokens"),
            completion_tokens=usage.get("completion_tokens"),
            finish_reason=choice.get("finish_reason"),
        )

    async def _send(self, method: str, path: str, body: Mapping[str, Any] | None) -> tuple[httpx.Response, float]:
        """The successful response and its latency, after retrying transient failures."""
        for attempt in range(self.settings.max_retries + 1):
            started = time.perf_counter()
            outcome = await self._attempt(method, path, body)
            if isinstance(outcome, httpx.Response):
                return outcome, time.perf_counter() - started
            if attempt == self.settings.max_retries:
                raise outcome.error
            await asyncio.sleep(self._delay(attempt, outcome.retry_after))
        raise AssertionError("unreachable")  # pragma: no cover

    async def _attempt(self, method: str, path: str, body: Mapping[str, Any] | None) -> httpx.Response | _Retry:
        """One try: the response, a failure worth retrying, or an exception for one that is not."""
        try:
            response = await self._http.request(method, path, json=body)
        except (httpx.ConnectError, httpx.ConnectTimeout) as error:
            reason = str(error) or type(error).__name__
            return _Retry(EndpointUnreachableError(f"cannot reach {self.settings.base_url}: {reason}"))
        except httpx.TimeoutException:
            raise RequestError(f"no answer within {self.settings.timeout_seconds:g}s") from None
        except httpx.TransportError as error:
            return _Retry(RequestError(f"connection broken: {error or type(error).__name__}"))
        if not response.is_error:
            return response
        failure = RequestError(_error_text(response, self.settings.api_key), response.status_code)
        if response.status_code in RETRYABLE_STATUS:
            return _Retry(failure, _retry_after(response))
        raise failure

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.settings.max_backoff_seconds)
        ceiling = min(self.settings.max_backoff_seconds, self.settings.backoff_seconds * 2**attempt)
        return random.uniform(ceiling / 2, ceiling)  # jitter, not security
