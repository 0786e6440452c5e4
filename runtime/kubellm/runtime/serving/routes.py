"""The HTTP endpoints: OpenAI-compatible ``/v1/*``, the original ``/generate``, probes and metrics.

Handlers parse, hand the request to :class:`~.service.GenerationService`, and shape the answer
(JSON or Server-Sent Events); errors are raised as domain errors and mapped to statuses in
:mod:`.app`.
"""

from __future__ import annotations

import functools
import hmac
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.background import BackgroundTask

from kubellm.runtime.serving.cache import tenant_of
from kubellm.runtime.serving.errors import AuthenticationError, ServingError
from kubellm.runtime.serving.metrics import CONTENT_TYPE_LATEST
from kubellm.runtime.serving.protocol import (
    DONE_EVENT,
    ChatRequest,
    CompletionRequest,
    ErrorResponse,
    GenerateRequest,
    Usage,
    chat_chunk,
    chat_response,
    completion_chunk,
    completion_response,
    error_body,
    new_id,
    sse_event,
    usage_chunk,
)
from kubellm.runtime.serving.sampling import SamplingParams
from kubellm.runtime.serving.service import Choice, GenerationJob, GenerationResult, GenerationService
from kubellm.runtime.serving.state import ServerState

__all__ = ["CACHE_HEADER", "ERROR_RESPONSES", "TENANT_HEADER", "router"]

CACHE_HEADER = "x-kubellm-cache"
TENANT_HEADER = "x-kubellm-tenant"
DEFAULT_CHAT_MAX_TOKENS = 256

_ERRORS = {
    400: "The request is malformed or breaks a limit.",
    401: "A valid API key is required.",
    404: "No such model.",
    413: "The request body is too large.",
    429: "The server is at capacity; retry after Retry-After seconds.",
    500: "An unexpected error.",
    503: "The model is not loaded yet, or the request timed out; retry after Retry-After seconds.",
}
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": description} for status, description in _ERRORS.items()
}
"""Every error status the server answers, documented in the OpenAPI with its body."""
_STREAMED: dict[int | str, dict[str, Any]] = {
    200: {"description": "JSON, or Server-Sent Events with `stream`", "content": {"text/event-stream": {}}}
}

router = APIRouter(responses=ERROR_RESPONSES)


# Dependencies are async on purpose: FastAPI runs sync ones in its thread pool, a hop per request.
async def server_state(request: Request) -> ServerState:
    """The app's state (settings, metrics, and the service once the model is loaded)."""
    state: ServerState = request.app.state.kubellm
    return state


State = Annotated[ServerState, Depends(server_state)]


def _bearer(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


async def authenticate(request: Request, state: State) -> str:
    """Check the API key when keys are configured; the tenant id that scopes cache entries."""
    token = _bearer(request)
    if state.settings.api_keys:
        if token is None or not any(hmac.compare_digest(token, key) for key in state.settings.api_keys):
            raise AuthenticationError("a valid API key is required: send it as 'Authorization: Bearer <key>'")
        return tenant_of(token)
    header = request.headers.get(TENANT_HEADER)
    return tenant_of(None, header) if header else tenant_of(token)


Tenant = Annotated[str, Depends(authenticate)]


def _no_cache(request: Request) -> bool:
    return "no-cache" in request.headers.get("cache-control", "").lower()


# --- probes, metrics, models ----------------------------------------------------------------


@router.get("/health")
async def health() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@router.get("/ready")
async def ready(state: State) -> dict[str, str]:
    """Readiness: the model is loaded."""
    state.ready_service()
    return {"status": "ready"}


@router.get("/metrics", responses={200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {}}}})
async def metrics(state: State) -> Response:
    """Prometheus metrics."""
    return Response(state.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


@router.get("/v1/models")
async def list_models(state: State, _: Tenant) -> dict[str, Any]:
    """The base model and every adapter, by served name."""
    settings, created = state.settings, int(state.started_at)
    base = {"id": settings.served_model_name, "object": "model", "created": created, "owned_by": "kubellm"}
    entries = [{**base, "root": settings.model.uri, "parent": None}]
    if settings.base_model_name:
        root = state.service.engine.info.base_uri if state.service is not None else None
        entries.append({**base, "id": settings.base_model_name, "root": root, "parent": None})
    for adapter in settings.adapters:
        entries.append({**base, "id": adapter.name, "root": adapter.uri, "parent": settings.served_model_name})
    return {"object": "list", "data": entries}


# --- generation -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Shape:
    """How one endpoint shapes its answers."""

    prefix: str
    chunk_kind: str
    response: Callable[[str, str, list[tuple[str, str | None]], Usage], dict[str, Any]]
    chunk: Callable[[str, str, int, str, str | None], dict[str, Any]]
    first_chunk: Callable[[str, str, int], dict[str, Any]] | None = None


def _chat_delta_chunk(response_id: str, model: str, index: int, text: str, finish: str | None) -> dict[str, Any]:
    return chat_chunk(response_id, model, index, {"content": text} if text else {}, finish)


def _chat_role_chunk(response_id: str, model: str, index: int) -> dict[str, Any]:
    return chat_chunk(response_id, model, index, {"role": "assistant", "content": ""}, None)


_COMPLETION = _Shape("cmpl", "text_completion", completion_response, completion_chunk)
_CHAT = _Shape("chatcmpl", "chat.completion.chunk", chat_response, _chat_delta_chunk, _chat_role_chunk)


@router.post("/v1/completions", response_model=None, responses=_STREAMED)
async def completions(body: CompletionRequest, request: Request, state: State, tenant: Tenant) -> Response:
    """OpenAI text completions, streamed or not."""
    service = state.ready_service()
    max_tokens = body.max_tokens if body.max_tokens is not None else 16
    prompts = body.prompts()
    sampling = body.sampling(max_tokens)
    job = service.build_job("completion", body.model, prompts, sampling, n=body.n, cache_fields={"prompt": prompts})
    return await _answer(
        service, job, _COMPLETION, request, tenant=tenant, stream=body.stream, usage=body.include_usage()
    )


@router.post("/v1/chat/completions", response_model=None, responses=_STREAMED)
async def chat_completions(body: ChatRequest, request: Request, state: State, tenant: Tenant) -> Response:
    """OpenAI chat completions, streamed or not."""
    service = state.ready_service()
    requested = body.requested_max_tokens()
    default_max_tokens = min(DEFAULT_CHAT_MAX_TOKENS, state.settings.serving.limits.max_tokens)
    max_tokens = requested if requested is not None else default_max_tokens
    messages = body.message_dicts()
    sampling = body.sampling(max_tokens)
    render = functools.partial(_render_chat, service, messages)
    job = service.build_job("chat", body.model, render, sampling, n=body.n, cache_fields={"messages": messages})
    return await _answer(service, job, _CHAT, request, tenant=tenant, stream=body.stream, usage=body.include_usage())


def _render_chat(service: GenerationService, messages: list[dict[str, str]]) -> list[str]:
    return [service.engine.render_chat(messages)]


@router.post("/generate")
async def generate(body: GenerateRequest, request: Request, state: State, tenant: Tenant) -> JSONResponse:
    """The original API: prompt, max_length (new tokens), temperature -> response, tokens_used (prompt + new)."""
    service = state.ready_service()
    sampling = SamplingParams(max_tokens=body.max_length, temperature=body.temperature)
    model = state.settings.served_model_name
    job = service.build_job("generate", model, [body.prompt], sampling, n=1, cache_fields={"prompt": body.prompt})
    result, status = await _result(service, job, request, tenant)
    payload = {"response": result.choices[0].text, "tokens_used": result.usage.total_tokens}
    return JSONResponse(payload, headers={CACHE_HEADER: status})


async def _result(
    service: GenerationService, job: GenerationJob, request: Request, tenant: str
) -> tuple[GenerationResult, str]:
    key = service.cache_key_for(job, tenant, _no_cache(request))
    cached = await service.cached(job, key)
    if cached is not None:
        service.metrics.count_response(job.model, 200)
        return cached, "hit"
    job = await service.tokenized(job)
    with service.admitted(), service.metrics.track_request(job.model):
        result = await service.generate(job)
    await service.remember(key, result)
    service.metrics.count_response(job.model, 200)
    return result, "miss"


async def _answer(
    service: GenerationService,
    job: GenerationJob,
    shape: _Shape,
    request: Request,
    *,
    tenant: str,
    stream: bool,
    usage: bool,
) -> Response:
    if not stream:
        result, status = await _result(service, job, request, tenant)
        body = shape.response(new_id(shape.prefix), job.model, result.pairs(), result.usage)
        return JSONResponse(body, headers={CACHE_HEADER: status})
    key = service.cache_key_for(job, tenant, _no_cache(request))
    cached = await service.cached(job, key)
    release: Callable[[], None] = _nothing
    if cached is not None:
        events = _cached_stream(job, shape, cached, usage)
    else:
        job = await service.tokenized(job)
        release = service.enter_slot()
        events = _live_stream(service, job, shape, key=key, include_usage=usage, release=release)
    service.metrics.count_response(job.model, 200)
    headers = {CACHE_HEADER: "hit" if cached is not None else "miss", "Cache-Control": "no-cache"}
    # The stream gives its place back when it ends; the background task covers a stream never started
    # (async, so Starlette calls it on the loop instead of hopping to its thread pool).
    return StreamingResponse(
        events, media_type="text/event-stream", headers=headers, background=BackgroundTask(_call, release)
    )


def _nothing() -> None:
    return None


async def _call(function: Callable[[], None]) -> None:
    function()


async def _cached_stream(
    job: GenerationJob, shape: _Shape, result: GenerationResult, include_usage: bool
) -> AsyncIterator[str]:
    response_id = new_id(shape.prefix)
    for index, (text, finish) in enumerate(result.pairs()):
        if shape.first_chunk is not None:
            yield sse_event(shape.first_chunk(response_id, job.model, index))
        yield sse_event(shape.chunk(response_id, job.model, index, text, finish))
    if include_usage:
        yield sse_event(usage_chunk(response_id, job.model, shape.chunk_kind, result.usage))
    yield DONE_EVENT


async def _live_stream(
    service: GenerationService,
    job: GenerationJob,
    shape: _Shape,
    *,
    key: str | None,
    include_usage: bool,
    release: Callable[[], None],
) -> AsyncIterator[str]:
    response_id = new_id(shape.prefix)
    choices = [Choice() for _ in range(job.choices)]
    try:
        with service.metrics.track_request(job.model):
            if shape.first_chunk is not None:
                for index in range(job.choices):
                    yield sse_event(shape.first_chunk(response_id, job.model, index))
            try:
                async with aclosing(service.events(job)) as events:  # a client abort cancels the sequences now
                    async for index, event in events:
                        _record(choices[index], event.text, event.completion_tokens, event.finish_reason)
                        if event.text or event.finish_reason:
                            yield sse_event(shape.chunk(response_id, job.model, index, event.text, event.finish_reason))
            except ServingError as error:
                yield sse_event(error_body(str(error), error.code, error.code))
            else:
                result = GenerationResult(choices, service.usage(job, choices))
                await service.remember(key, result)
                if include_usage:
                    yield sse_event(usage_chunk(response_id, job.model, shape.chunk_kind, result.usage))
            yield DONE_EVENT
    finally:
        release()


def _record(choice: Choice, text: str, tokens: int, finish_reason: str | None) -> None:
    choice.text += text
    choice.tokens = tokens
    choice.finish_reason = finish_reason
