"""1,000 streamed requests, one in ten dropped by its client mid-stream.

Every stream read to the end must end with ``data: [DONE]`` and carry a usage chunk that matches
what was generated; afterwards nothing may be left behind: no request place held, no sequence
queued or decoding, the active-request and queue gauges back at zero.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from typing import Any

import httpx

from tests.reliability.conftest import RecordFigure
from tests.reliability.test_server_harness import (
    AREA,
    NAME,
    NO_CACHE,
    RunningServer,
    server_settings,
    serving,
    tiny_engine,
)

STREAMS = 1000
ABORT_EVERY = 10
CLIENTS = 32
MAX_TOKENS = 4


def _body(index: int) -> dict[str, Any]:
    return {
        "model": NAME,
        "prompt": f"stream {index}",
        "max_tokens": MAX_TOKENS,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


async def _stream(client: httpx.AsyncClient, url: str, index: int, abort: bool) -> str | None:
    """Read (or drop) one stream; what is wrong with it, or None."""
    async with client.stream("POST", f"{url}/v1/completions", json=_body(index), headers=NO_CACHE) as response:
        if response.status_code != 200:
            return f"status {response.status_code}: {(await response.aread())[:200]!r}"
        events: list[str] = []
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                events.append(line.removeprefix("data: "))
                if abort and len(events) == 1:
                    return None  # leaving the block drops the connection mid-stream
    return _stream_problem(events, len(tiny_engine().encode(f"stream {index}")))


def _stream_problem(events: list[str], prompt_tokens: int) -> str | None:
    if not events or events[-1] != "[DONE]":
        return f"does not end with [DONE]: {events[-2:]}"
    chunks = [json.loads(event) for event in events[:-1]]
    usage = chunks[-1].get("usage")
    if usage is None or chunks[-1]["choices"]:
        return f"no usage chunk before [DONE]: {chunks[-1]}"
    finish = [choice["finish_reason"] for chunk in chunks for choice in chunk["choices"] if choice["finish_reason"]]
    text_chunks = sum(1 for chunk in chunks for choice in chunk["choices"] if choice["text"])
    generated = usage["completion_tokens"]
    if finish not in (["length"], ["stop"]) or (finish == ["length"] and generated != MAX_TOKENS):
        return f"finish {finish} does not match {generated} tokens of {MAX_TOKENS}"
    if not text_chunks <= generated <= MAX_TOKENS or usage["prompt_tokens"] != prompt_tokens:
        return f"usage {usage} does not match {text_chunks} text chunks and a {prompt_tokens}-token prompt"
    if usage["total_tokens"] != usage["prompt_tokens"] + generated:
        return f"usage does not add up: {usage}"
    return None


async def _all_streams(url: str) -> list[str | None]:
    slots = asyncio.Semaphore(CLIENTS)
    limits = httpx.Limits(max_connections=CLIENTS * 2)

    async def one(client: httpx.AsyncClient, index: int) -> str | None:
        async with slots:
            return await _stream(client, url, index, abort=index % ABORT_EVERY == 0)

    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        return list(await asyncio.gather(*(one(client, index) for index in range(STREAMS))))


def _leftovers(server: RunningServer) -> dict[str, float]:
    scheduler = server.service.scheduler
    return {
        "places held": server.in_flight(),
        "sequences waiting": scheduler.waiting,
        "sequences decoding": len(scheduler._active) if scheduler._active is not None else 0,
        "llm_active_requests": server.metric("llm_active_requests"),
        "llm_queue_size": server.metric("llm_queue_size"),
    }


def test_streams_end_with_done_and_aborted_streams_free_their_slots(figure: RecordFigure) -> None:
    with serving(server_settings(max_concurrent=CLIENTS, max_batch_size=CLIENTS, max_queue=CLIENTS)) as server:
        started = time.perf_counter()
        problems = asyncio.run(_all_streams(server.url))
        seconds = time.perf_counter() - started
        deadline = time.monotonic() + 10
        while any(_leftovers(server).values()) and time.monotonic() < deadline:
            time.sleep(0.05)
        leftovers = _leftovers(server)
    completed = STREAMS - STREAMS // ABORT_EVERY
    bad = [problem for problem in problems if problem is not None]
    print(f"{STREAMS} streams in {seconds:.1f}s; problems: {Counter(p.split(':')[0] for p in bad).most_common(5)}")
    figure(AREA, f"completed streams ending [DONE] with matching usage (of {completed})", completed - len(bad))
    figure(
        AREA,
        f"streams with a problem (of {STREAMS}, {STREAMS // ABORT_EVERY} aborted)",
        len(bad),
        target="0",
        ok=not bad,
    )
    figure(
        AREA,
        "leaked places/sequences/gauges after aborted streams",
        sum(leftovers.values()),
        target="0",
        ok=not any(leftovers.values()),
    )
    assert not bad, bad[:5]
    assert not any(leftovers.values()), leftovers
