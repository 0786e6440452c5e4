"""What a request goes through between HTTP and the scheduler (no FastAPI here).

Resolve the model name (base or adapter), check the limits, render and tokenize the prompt,
look the response up in the cache, admit the request (bounded: slots plus queue), queue its
sequences and gather their tokens, with the per-request timeout. Both the streaming and the
non-streaming routes use :meth:`GenerationService.events`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from kubellm.runtime.serving.batching import Scheduler, Sequence, SequenceEvent
from kubellm.runtime.serving.cache import ResponseCache, cache_key
from kubellm.runtime.serving.engine import ServingEngine
from kubellm.runtime.serving.errors import (
    InvalidRequestError,
    ModelNotFoundError,
    QueueFullError,
    RequestTimeoutError,
    ServingError,
)
from kubellm.runtime.serving.metrics import ServerMetrics
from kubellm.runtime.serving.protocol import Usage
from kubellm.runtime.serving.sampling import SamplingParams
from kubellm.runtime.serving.settings import ServerSettings

__all__ = ["Choice", "GenerationJob", "GenerationResult", "GenerationService", "JobKind"]

JobKind = Literal["completion", "chat", "generate"]
_TOKENIZE_INLINE_CHARS = 4096
"""Prompts longer than this (in characters) are tokenized on a worker thread."""
_PREFIX_CHARS_PER_TOKEN = 8
_PREFIX_MARGIN_TOKENS = 64
RETRY_AFTER_SECONDS = 1
_Queue = asyncio.Queue[list[tuple[int, SequenceEvent]]]
"""A request's events, a list per delivery from the scheduler's thread."""


@dataclass(frozen=True)
class GenerationJob:
    """A validated request: which model, which prompts, how to sample, how many choices each.

    The prompt text is rendered and tokenized only on a cache miss (:meth:`GenerationService.tokenized`):
    a hit is looked up by the request's fields and never needs it.
    """

    kind: JobKind
    model: str
    adapter: str | None
    render: Callable[[], list[str]]
    prompt_count: int
    params: SamplingParams
    n: int
    cache_fields: dict[str, Any]
    prompt_ids: list[list[int]] = field(default_factory=list)

    @property
    def choices(self) -> int:
        """Sequences to generate: ``n`` per prompt."""
        return self.n * self.prompt_count

    @property
    def prompt_tokens(self) -> int:
        """Prompt tokens, each prompt counted once (as OpenAI counts with ``n``)."""
        return sum(len(ids) for ids in self.prompt_ids)


@dataclass
class Choice:
    """One choice's text so far and how it ended."""

    text: str = ""
    finish_reason: str | None = None
    tokens: int = 0


@dataclass
class GenerationResult:
    """A finished (or cached) request."""

    choices: list[Choice]
    usage: Usage
    cached: bool = False

    def pairs(self) -> list[tuple[str, str | None]]:
        """(text, finish_reason) per choice."""
        return [(choice.text, choice.finish_reason) for choice in self.choices]

    def to_cache(self) -> dict[str, Any]:
        """What the cache stores."""
        return {"choices": self.pairs(), "usage": self.usage.as_dict()}

    @classmethod
    def from_cache(cls, stored: dict[str, Any]) -> GenerationResult:
        """Rebuild a cached result."""
        counts = stored["usage"]
        usage = Usage(prompt_tokens=counts["prompt_tokens"], completion_tokens=counts["completion_tokens"])
        choices = [Choice(text=str(text), finish_reason=reason) for text, reason in stored["choices"]]
        return cls(choices=choices, usage=usage, cached=True)


@dataclass
class _Admission:
    """Requests in the server (generating or queued), bounded; used from the event loop only."""

    limit: int
    in_flight: int = field(default=0)

    def acquire(self) -> Callable[[], None]:
        """Take a place; the returned function gives it back (calling it twice is harmless)."""
        if self.in_flight >= self.limit:
            raise QueueFullError("the server is at capacity; retry after a moment")
        self.in_flight += 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.in_flight -= 1

        return release


class GenerationService:
    """Turns validated requests into sequences on the scheduler and gathers their answers."""

    def __init__(
        self,
        settings: ServerSettings,
        engine: ServingEngine,
        scheduler: Scheduler,
        metrics: ServerMetrics,
        cache: ResponseCache | None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.scheduler = scheduler
        self.metrics = metrics
        self.cache = cache
        limits = settings.serving.limits
        self._admission = _Admission(limit=limits.max_concurrent + limits.max_queue)
        self._mailbox: _Mailbox | None = None

    # --- validation ------------------------------------------------------------------------

    def adapter_for(self, model: str) -> str | None:
        """The adapter a model name selects (None: the base model); unknown names raise."""
        if model == self.settings.served_model_name:
            return None
        if model in self.engine.adapters:
            return model
        known = ", ".join(self.settings.model_names())
        raise ModelNotFoundError(f"the model {model!r} does not exist; this server serves: {known}", param="model")

    def check_limits(self, max_tokens: int, n: int, prompts: int = 1) -> None:
        """``max_tokens`` and ``n`` within the configured caps."""
        limits = self.settings.serving.limits
        if not 1 <= max_tokens <= limits.max_tokens:
            raise InvalidRequestError(
                f"max_tokens must be between 1 and {limits.max_tokens}, got {max_tokens}", param="max_tokens"
            )
        if not 1 <= n <= limits.max_n:
            raise InvalidRequestError(f"n must be between 1 and {limits.max_n}, got {n}", param="n")
        if not 1 <= prompts <= limits.max_batch_size:
            message = f"a request may carry 1 to {limits.max_batch_size} prompts, got {prompts}"
            raise InvalidRequestError(message, param="prompt")

    def prompt_cap(self) -> int:
        """Most prompt tokens accepted: the configured cap, and room for one new token in the context."""
        context = self.engine.max_positions
        cap = self.settings.serving.limits.max_prompt_tokens
        return min(context - 1, cap or context)

    def check_prompt_length(self, prompt_tokens: int, param: str = "prompt", *, at_least: bool = False) -> None:
        """The prompt within :meth:`prompt_cap`; ``at_least``: the count is a lower bound."""
        cap = self.prompt_cap()
        if prompt_tokens > cap:
            counted = f"more than {cap}" if at_least else str(prompt_tokens)
            raise InvalidRequestError(
                f"the prompt has {counted} tokens; this server accepts at most {cap} "
                f"(the model's context is {self.engine.max_positions} tokens): shorten the prompt",
                param=param,
            )

    def build_job(
        self,
        kind: JobKind,
        model: str,
        prompts: list[str] | Callable[[], list[str]],
        params: SamplingParams,
        *,
        n: int,
        cache_fields: dict[str, Any],
        prompt_count: int = 1,
    ) -> GenerationJob:
        """Validate a request; ``prompts`` may be a function that renders them (``prompt_count`` of them)."""
        adapter = self.adapter_for(model)
        render = prompts if callable(prompts) else functools.partial(list, prompts)
        count = prompt_count if callable(prompts) else len(prompts)
        self.check_limits(params.max_tokens, n, count)
        info = self.engine.info
        fields = {**cache_fields, "endpoint": kind, "model": model, "adapter": adapter, "uri": info.uri}
        fields |= {"revision": info.revision, "params": _params_fields(params), "n": n}
        return GenerationJob(kind, model, adapter, render, count, params, n, fields)

    async def tokenized(self, job: GenerationJob) -> GenerationJob:
        """The job with its prompts tokenized and their lengths checked (InvalidRequestError if too long).

        A prompt far past the cap is refused after tokenizing only its start; long prompts are
        tokenized on a worker thread, so a megabyte of text never stalls the event loop.
        """
        if job.prompt_ids:
            return job
        prompts = job.render()
        param = "messages" if job.kind == "chat" else "prompt"
        for prompt in prompts:
            self._refuse_far_too_long(prompt, param)
        if sum(len(prompt) for prompt in prompts) > _TOKENIZE_INLINE_CHARS:
            prompt_ids = await asyncio.to_thread(lambda: [self.engine.encode(prompt) for prompt in prompts])
        else:
            prompt_ids = [self.engine.encode(prompt) for prompt in prompts]
        for ids in prompt_ids:
            if not ids:
                raise InvalidRequestError("the prompt is empty", param=param)
            self.check_prompt_length(len(ids), param)
            self.engine.check_fits(len(ids), job.params.max_tokens)
        return dataclasses.replace(job, prompt_ids=prompt_ids, prompt_count=len(prompt_ids))

    def _refuse_far_too_long(self, prompt: str, param: str) -> None:
        """Refuse a prompt whose start alone is well past the cap (cutting text never adds many tokens)."""
        window = (self.prompt_cap() + _PREFIX_MARGIN_TOKENS) * _PREFIX_CHARS_PER_TOKEN
        if len(prompt) > window:
            self.check_prompt_length(
                len(self.engine.encode(prompt[:window])) - _PREFIX_MARGIN_TOKENS, param, at_least=True
            )

    # --- cache -------------------------------------------------------------------------------

    def cache_key_for(self, job: GenerationJob, tenant: str, bypass: bool) -> str | None:
        """The cache key of a deterministic request (None: not cacheable, no cache, or the caller said no-cache)."""
        if bypass or self.cache is None or not job.params.deterministic:
            return None
        return cache_key(self.settings.serving.cache.key_prefix, tenant, job.cache_fields)

    async def cached(self, job: GenerationJob, key: str | None) -> GenerationResult | None:
        """A cached result for the key, counting hits and misses."""
        if key is None or self.cache is None:
            return None
        stored = await self.cache.get(key)
        counter = self.metrics.cache_hits if stored is not None else self.metrics.cache_misses
        counter.labels(job.model).inc()
        if stored is None:
            return None
        try:
            return GenerationResult.from_cache(stored)
        except (KeyError, TypeError, ValueError):
            self.metrics.cache_errors.labels(job.model).inc()
            return None

    async def remember(self, key: str | None, result: GenerationResult) -> None:
        """Store a complete result under its key."""
        complete = all(choice.finish_reason in ("stop", "length") for choice in result.choices)
        if key is not None and self.cache is not None and complete:
            await self.cache.set(key, result.to_cache())

    # --- generation --------------------------------------------------------------------------

    @contextmanager
    def admitted(self) -> Iterator[None]:
        """Hold one of the server's request places; raises QueueFullError when none is free."""
        release = self._admission.acquire()
        try:
            yield
        finally:
            release()

    def enter_slot(self) -> Callable[[], None]:
        """Take a request place for a stream; call the result when the stream ends."""
        return self._admission.acquire()

    async def events(self, job: GenerationJob) -> AsyncGenerator[tuple[int, SequenceEvent]]:
        """(choice index, event) as tokens arrive; cancels the sequences if the consumer stops early.

        Events a consumer has not taken yet are joined: one event per choice with all their text.
        """
        assert job.prompt_ids, "tokenize the job first (GenerationService.tokenized)"
        loop = asyncio.get_running_loop()
        if self._mailbox is None or not self._mailbox.serves(loop):
            self._mailbox = _Mailbox(loop)
        mailbox = self._mailbox
        queue: _Queue = asyncio.Queue()
        sequences = [
            Sequence(list(ids), _with_seed(job.params, index), mailbox.sink(queue, index), adapter=job.adapter)
            for index, ids in enumerate(ids for ids in job.prompt_ids for _ in range(job.n))
        ]
        self.scheduler.submit(sequences)
        try:
            async with asyncio.timeout(self.settings.serving.limits.request_timeout_seconds):
                async for item in self._drain(queue, len(sequences), job.model):
                    yield item
        except TimeoutError:
            message = "the request timed out and was cancelled; retry later or with a smaller max_tokens"
            raise RequestTimeoutError(message) from None
        finally:
            self.scheduler.cancel(sequences)

    async def _drain(self, queue: _Queue, sequences: int, model: str) -> AsyncIterator[tuple[int, SequenceEvent]]:
        ttft, inter_token = self.metrics.ttft.labels(model), self.metrics.inter_token.labels(model)
        started = last = time.perf_counter()
        finished = 0
        while finished < sequences:
            arrived = await queue.get()
            while not queue.empty():
                arrived.extend(queue.get_nowait())
            now = time.perf_counter()
            for _ in arrived:
                (ttft if last == started else inter_token).observe(now - last)
                last = now
            for index, event in _joined(arrived):
                if event.error is not None:
                    raise ServingError(event.error)
                finished += event.finish_reason is not None
                yield index, event

    async def generate(self, job: GenerationJob) -> GenerationResult:
        """Run a job to the end."""
        choices = [Choice() for _ in range(job.choices)]
        async for index, event in self.events(job):
            choices[index].text += event.text
            choices[index].tokens = event.completion_tokens
            choices[index].finish_reason = event.finish_reason
        return GenerationResult(choices, self.usage(job, choices))

    def usage(self, job: GenerationJob, choices: list[Choice]) -> Usage:
        """Usage of a job whose choices are done; counted in the token metrics."""
        usage = Usage(prompt_tokens=job.prompt_tokens, completion_tokens=sum(choice.tokens for choice in choices))
        self.metrics.observe_tokens(job.model, usage.prompt_tokens, usage.completion_tokens)
        return usage


def _params_fields(params: SamplingParams) -> dict[str, Any]:
    return {
        "max_tokens": params.max_tokens,
        "temperature": params.temperature if not params.greedy else 0.0,
        "top_p": params.top_p,
        "seed": params.seed,
        "stop": list(params.stop),
    }


def _with_seed(params: SamplingParams, index: int) -> SamplingParams:
    """Choice ``index`` of a seeded request draws from ``seed + index``, so the choices differ."""
    if params.seed is None or index == 0:
        return params
    return SamplingParams(params.max_tokens, params.temperature, params.top_p, params.seed + index, params.stop)


def _joined(arrived: list[tuple[int, SequenceEvent]]) -> list[tuple[int, SequenceEvent]]:
    """One event per choice, in order of first arrival: the text joined, the last count and ending."""
    texts: dict[int, list[str]] = {}
    last: dict[int, SequenceEvent] = {}
    for index, event in arrived:
        texts.setdefault(index, []).append(event.text)
        last[index] = event
    if len(last) == len(arrived):
        return arrived
    return [(index, dataclasses.replace(event, text="".join(texts[index]))) for index, event in last.items()]


class _Mailbox:
    """Hands events from the scheduler's thread to one event loop, one ``call_soon_threadsafe`` per burst.

    A decoding step reports a token for every row; waking the loop (and taking the GIL from the
    scheduler) once per token cost more than the step. The first event of a burst schedules one
    delivery; the rest only join the list. Each request's queue gets one list per delivery.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._pending: list[tuple[_Queue, int, SequenceEvent]] = []

    def serves(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Whether this mailbox delivers to ``loop``."""
        return self._loop is loop

    def sink(self, queue: _Queue, index: int) -> Callable[[SequenceEvent], None]:
        """A thread-safe sink that puts choice ``index``'s events on ``queue``."""

        def put(event: SequenceEvent) -> None:
            with self._lock:
                self._pending.append((queue, index, event))
                if len(self._pending) > 1:
                    return  # a delivery is already scheduled
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody is listening any more
                self._loop.call_soon_threadsafe(self._deliver)

        return put

    def _deliver(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
        by_queue: dict[_Queue, list[tuple[int, SequenceEvent]]] = {}
        for queue, index, event in pending:
            by_queue.setdefault(queue, []).append((index, event))
        for queue, events in by_queue.items():
            queue.put_nowait(events)
