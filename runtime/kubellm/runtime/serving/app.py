"""The FastAPI application: wiring, lifespan (load, scheduler, cache) and the one error mapping.

``create_app(settings)`` loads the model in the background (``/health`` answers at once,
``/ready`` once loaded); ``create_app(settings, engine)`` serves an engine already loaded
(``kubellm serve`` loads first so a bad model fails fast; tests share one engine).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kubellm.runtime.serving.batching import Scheduler
from kubellm.runtime.serving.cache import CacheStore, MemoryStore, RedisStore, ResponseCache
from kubellm.runtime.serving.engine import ServingEngine, load_engine
from kubellm.runtime.serving.errors import (
    AuthenticationError,
    InvalidRequestError,
    ModelNotFoundError,
    NotReadyError,
    QueueFullError,
    RequestTimeoutError,
    ServingError,
)
from kubellm.runtime.serving.metrics import ServerMetrics
from kubellm.runtime.serving.protocol import error_body
from kubellm.runtime.serving.routes import router
from kubellm.runtime.serving.service import RETRY_AFTER_SECONDS, GenerationService
from kubellm.runtime.serving.settings import ServerSettings
from kubellm.runtime.serving.state import ServerState

__all__ = ["STATUS_OF", "create_app"]

log = logging.getLogger(__name__)

STATUS_OF: dict[type[ServingError], int] = {
    InvalidRequestError: 400,
    AuthenticationError: 401,
    ModelNotFoundError: 404,
    QueueFullError: 429,
    NotReadyError: 503,
    RequestTimeoutError: 503,
}
"""Domain error -> HTTP status; anything else is a 500."""
_RETRY_STATUSES = frozenset({429, 503})


def create_app(settings: ServerSettings, engine: ServingEngine | None = None) -> FastAPI:
    """The server app; it loads ``settings.model`` in the background unless ``engine`` is given."""
    state = ServerState(settings=settings, metrics=ServerMetrics(settings.served_model_name))
    app = FastAPI(title="kubellm", version="1", lifespan=_lifespan(state, engine))
    app.state.kubellm = state
    app.include_router(router)
    _add_exception_handlers(app, state)
    _document_errors_as_answered(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.serving.limits.max_request_bytes)
    return app


# --- lifespan ----------------------------------------------------------------------------------


def _cache_store(settings: ServerSettings) -> CacheStore | None:
    """Redis when a url is set, memory by default, none when the cache is turned off."""
    cache = settings.serving.cache
    if not cache.enabled:
        return None
    if cache.url is not None:
        return RedisStore(cache.url, settings.redis_password)
    return MemoryStore(settings.memory_cache_entries)


def _response_cache(state: ServerState) -> ResponseCache | None:
    store = _cache_store(state.settings)
    if store is None:
        return None
    model, metrics = state.settings.served_model_name, state.metrics
    return ResponseCache(
        store,
        ttl_seconds=state.settings.serving.cache.ttl_seconds,
        on_error=lambda: metrics.cache_errors.labels(model).inc(),
    )


def _start_service(state: ServerState, engine: ServingEngine) -> GenerationService:
    settings, metrics = state.settings, state.metrics
    limits = settings.serving.limits
    scheduler = Scheduler(
        engine,
        max_batch_size=limits.max_batch_size,
        batch_wait_seconds=limits.batch_wait_ms / 1000,
        observe_batch=metrics.observe_batch,
        observe_queue=metrics.observe_queue,
        torch_threads=settings.torch_threads,
    )
    scheduler.start()
    metrics.observe_loaded(engine.info.quantization, engine.info.weight_bytes)
    return GenerationService(settings, engine, scheduler, metrics, _response_cache(state))


async def _load_in_background(state: ServerState) -> None:
    try:
        engine = await asyncio.to_thread(load_engine, state.settings)
    except Exception as error:  # reported by /ready; the message is one line
        state.load_error = str(error) or type(error).__name__
        log.error("model failed to load: %s", state.load_error)
        return
    state.service = _start_service(state, engine)


def _lifespan(state: ServerState, engine: ServingEngine | None) -> Callable[[FastAPI], Any]:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        loading = None
        if engine is not None:
            state.service = _start_service(state, engine)
        else:
            loading = asyncio.create_task(_load_in_background(state))
        try:
            yield
        finally:
            if loading is not None:
                await loading
            if state.service is not None:
                await _stop_service(state.service)

    return lifespan


async def _stop_service(service: GenerationService) -> None:
    await asyncio.to_thread(service.scheduler.stop)
    if service.cache is not None:
        await service.cache.store.close()


# --- errors ------------------------------------------------------------------------------------


def _error_response(state: ServerState, status: int, body: dict[str, Any]) -> JSONResponse:
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)} if status in _RETRY_STATUSES else {}
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    state.metrics.count_response(state.settings.served_model_name, status)
    return JSONResponse(body, status_code=status, headers=headers)


def _status_of(error: ServingError) -> int:
    return next((status for kind, status in STATUS_OF.items() if isinstance(error, kind)), 500)


def _validation_message(error: RequestValidationError) -> tuple[str, str | None]:
    first = error.errors()[0] if error.errors() else {}
    if first.get("type") == "json_invalid":
        reason = (first.get("ctx") or {}).get("error", "invalid JSON")
        return f"the request body is not valid JSON: {reason} at character {first['loc'][-1]}", None
    where = [str(part) for part in first.get("loc", ()) if part != "body" and not _is_type_tag(part)]
    param = ".".join(where) or None
    return f"{param or 'body'}: {first.get('msg', 'invalid request')}", param


def _is_type_tag(part: object) -> bool:
    """pydantic names the member of a union it tried (``constrained-str``, ``list[...]``): not a field."""
    return isinstance(part, str) and (bool(set(part) & set("-[]")) or part in _TYPE_NAMES)


_TYPE_NAMES = frozenset({"str", "int", "float", "bool", "dict", "list", "none"})
_UNPARSABLE_BODY = "There was an error parsing the body"  # FastAPI's detail for a body it cannot decode


def _add_exception_handlers(app: FastAPI, state: ServerState) -> None:
    """Every error leaves as ``{"error": {...}}`` with its status (KServe's ``_add_exception_handlers``)."""

    async def serving_error(_: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, ServingError)
        kind = "invalid_request_error" if _status_of(error) < 500 else "server_error"
        return _error_response(state, _status_of(error), error_body(str(error), kind, error.code, error.param))

    async def validation_error(_: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, RequestValidationError)
        message, param = _validation_message(error)
        return _error_response(state, 400, error_body(message, "invalid_request_error", "invalid_value", param))

    async def http_error(_: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, HTTPException)
        if error.status_code == 400 and error.detail == _UNPARSABLE_BODY:  # e.g. bytes that are not UTF-8
            message = "the request body could not be decoded: send JSON encoded as UTF-8"
            return _error_response(state, 400, error_body(message, "invalid_request_error", "invalid_value"))
        return _error_response(state, error.status_code, error_body(str(error.detail), "invalid_request_error"))

    async def unexpected_error(_: Request, error: Exception) -> JSONResponse:
        log.exception("unexpected error", exc_info=error)
        return _error_response(state, 500, error_body("internal server error", "server_error"))

    app.add_exception_handler(ServingError, serving_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(Exception, unexpected_error)


def _document_errors_as_answered(app: FastAPI) -> None:
    """Drop FastAPI's default 422 from the OpenAPI: validation errors are answered 400 (documented per route)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            for operations in schema.get("paths", {}).values():
                for operation in operations.values():
                    operation.get("responses", {}).pop("422", None)
            for unused in ("HTTPValidationError", "ValidationError"):
                schema.get("components", {}).get("schemas", {}).pop(unused, None)
        return app.openapi_schema or build()

    app.openapi = openapi  # type: ignore[method-assign]


# --- body size ---------------------------------------------------------------------------------


class BodyLimitMiddleware:
    """Answer 413 to a body over ``max_bytes``: by Content-Length up front, or once it streams past the limit.

    A body cut off while streaming makes the app fail to parse it; that answer is replaced by the 413.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self._too_large()(scope, receive, send)
            return
        guard = _BodyGuard(self.max_bytes, receive, send, self._too_large)
        await self.app(scope, guard.receive, guard.send)

    def _too_large(self) -> JSONResponse:
        message = f"the request body exceeds {self.max_bytes} bytes"
        return JSONResponse(error_body(message, "invalid_request_error", "request_too_large"), 413)


class _BodyGuard:
    """Counts body bytes; past the limit it ends the body early and swaps the response for a 413."""

    def __init__(self, max_bytes: int, receive: Receive, send: Send, replacement: Callable[[], JSONResponse]) -> None:
        self.max_bytes, self._receive, self._send, self._replacement = max_bytes, receive, send, replacement
        self.received = 0
        self.exceeded = False

    async def receive(self) -> Message:
        message = await self._receive()
        self.received += len(message.get("body", b""))
        if self.received > self.max_bytes:
            self.exceeded = True
            return {"type": "http.request", "body": b"", "more_body": False}
        return message

    async def send(self, message: Message) -> None:
        if not self.exceeded:
            await self._send(message)
        elif message["type"] == "http.response.start":
            replacement = self._replacement()  # built only for the rare body over the limit
            await self._send({"type": "http.response.start", "status": 413, "headers": replacement.raw_headers})
            await self._send({"type": "http.response.body", "body": replacement.body})
