"""The HTTP load generator: concurrent OpenAI-style clients, streamed, timed per request.

Every client streams (``stream: true``) so that time to first token is measured on the same
requests as throughput and latency; tokens are counted from the usage the server reports at the
end of the stream (both servers send it), else from the chunks that carried text.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from benchmarks.figures import median, percentile

__all__ = ["NO_CACHE", "LoadResult", "RequestRecord", "concurrent_requests_per_second", "run_load", "timed_requests"]

NO_CACHE = {"Cache-Control": "no-cache"}


@dataclass(frozen=True)
class RequestRecord:
    """One request: seconds until the stream ended, until its first text, tokens generated."""

    latency: float
    ttft: float
    tokens: int


@dataclass(frozen=True)
class LoadResult:
    """All requests of one load run and its wall time."""

    records: list[RequestRecord]
    seconds: float

    @property
    def tokens_per_second(self) -> float:
        """Generated tokens over wall time."""
        return sum(r.tokens for r in self.records) / self.seconds

    @property
    def requests_per_second(self) -> float:
        """Finished requests over wall time."""
        return len(self.records) / self.seconds

    def summary(self) -> dict[str, float]:
        """The figures of a row: tok/s, req/s, latency p50/p95 and TTFT p50 in milliseconds."""
        latencies = [r.latency for r in self.records]
        return {
            "tokens_per_second": self.tokens_per_second,
            "requests_per_second": self.requests_per_second,
            "latency_p50_ms": percentile(latencies, 0.5) * 1000,
            "latency_p95_ms": percentile(latencies, 0.95) * 1000,
            "ttft_p50_ms": median([r.ttft for r in self.records if not math.isnan(r.ttft)]) * 1000,
            "tokens": float(sum(r.tokens for r in self.records)),
            "requests": float(len(self.records)),
        }


def _body(model: str, prompt: str, max_tokens: int) -> dict[str, Any]:
    return {
        "model": model,
        "prompt": prompt,
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def _event(line: str) -> dict[str, Any] | None:
    if not line.startswith("data:"):
        return None
    payload = line[5:].strip()
    return None if payload == "[DONE]" else dict(json.loads(payload))


async def streamed_completion(client: httpx.AsyncClient, url: str, body: dict[str, Any]) -> RequestRecord:
    """POST one streamed completion and time it."""
    started = time.perf_counter()
    first = float("nan")
    usage: int | None = None
    chunks = 0
    async with client.stream("POST", f"{url}/v1/completions", json=body, headers=NO_CACHE) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            event = _event(line)
            if event is None:
                continue
            if any(choice.get("text") for choice in event.get("choices") or []):
                chunks += 1
                first = time.perf_counter() - started if chunks == 1 else first
            if event.get("usage"):
                usage = int(event["usage"]["completion_tokens"])
    return RequestRecord(time.perf_counter() - started, first, chunks if usage is None else usage)


async def _client(
    client: httpx.AsyncClient, url: str, model: str, jobs: Sequence[tuple[str, int]]
) -> list[RequestRecord]:
    return [await streamed_completion(client, url, _body(model, prompt, tokens)) for prompt, tokens in jobs]


async def _load(url: str, model: str, jobs: Sequence[tuple[str, int]], clients: int) -> LoadResult:
    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)
    async with httpx.AsyncClient(timeout=900, limits=limits) as client:
        shares = [jobs[index::clients] for index in range(clients)]
        started = time.perf_counter()
        results = await asyncio.gather(*(_client(client, url, model, share) for share in shares if share))
        seconds = time.perf_counter() - started
    return LoadResult([record for result in results for record in result], seconds)


def run_load(url: str, model: str, jobs: Sequence[tuple[str, int]], clients: int) -> LoadResult:
    """``clients`` concurrent clients share ``jobs`` (prompt, max_tokens), each one request at a time."""
    return asyncio.run(_load(url, model, jobs, clients))


def _post(connection: http.client.HTTPConnection, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    connection.request("POST", path, body, headers)
    response = connection.getresponse()
    payload = response.read()
    if response.status != 200:
        raise OSError(f"POST {path} answered {response.status}: {payload[:200]!r}")
    return payload


def timed_requests(
    url: str, count: int, make: Callable[[int], dict[str, Any]], headers: dict[str, str] | None = None
) -> list[tuple[float, dict[str, Any]]]:
    """(seconds, JSON answer) of ``count`` POSTs one after another on one keep-alive connection.

    ``http.client`` rather than an async client: a lighter client leaves the server's latency to measure.
    """
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=600)
    sent = {"Content-Type": "application/json", **(headers or {})}
    answers = []
    try:
        for index in range(count):
            body = json.dumps(make(index)).encode()
            started = time.perf_counter()
            payload = _post(connection, parts.path, body, sent)
            answers.append((time.perf_counter() - started, dict(json.loads(payload))))
    finally:
        connection.close()
    return answers


def concurrent_requests_per_second(url: str, body: dict[str, Any], clients: int, each: int) -> float:
    """Requests/s of ``clients`` threads, one keep-alive connection each, posting the same body ``each`` times."""
    barrier = threading.Barrier(clients + 1)

    def one_client() -> None:
        barrier.wait()
        timed_requests(url, each, lambda _: body)

    threads = [threading.Thread(target=one_client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    return clients * each / (time.perf_counter() - started)
