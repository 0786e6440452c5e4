"""Load at twice the measured capacity: beyond capacity only 429/503 with Retry-After, no crash.

Capacity is measured first (closed loop, as many clients as the server generates for at once);
then requests arrive open-loop at twice that rate for a bounded time. Admitted requests must
succeed, the rest must be turned away cleanly, the server must never hold more requests than
its places, and it must serve normally afterwards with every place given back. (How many are
turned away is reported, not asserted: on a shared machine the capacity itself moves.)
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter
from dataclasses import dataclass

import httpx

from kubellm.contract.schema import ModelSource
from tests.reliability.conftest import RecordFigure
from tests.reliability.test_server_harness import (
    AREA,
    NAME,
    NO_CACHE,
    RunningServer,
    engine_for,
    server_settings,
    serving,
)

# A somewhat larger model than the other checks, so the client side stays cheap next to generation.
MODEL = "dummy://llama?hidden_size=128&num_hidden_layers=4&num_attention_heads=4&seed=2"
CONCURRENT = 8
QUEUE = 8
MAX_TOKENS = 24
MEASURE_SECONDS = 4.0
OVERLOAD_SECONDS = 8.0


@dataclass(frozen=True)
class Answer:
    """One request's outcome."""

    status: int
    retry_after: str | None
    seconds: float


def _body(index: int) -> dict[str, object]:
    return {"model": NAME, "prompt": f"load {index}", "max_tokens": MAX_TOKENS, "temperature": 0}


async def _send(client: httpx.AsyncClient, url: str, index: int) -> Answer:
    started = time.perf_counter()
    response = await client.post(f"{url}/v1/completions", json=_body(index), headers=NO_CACHE)
    return Answer(response.status_code, response.headers.get("retry-after"), time.perf_counter() - started)


async def _capacity(url: str) -> float:
    """Requests per second with exactly as many clients as the server generates for at once."""
    done = 0
    deadline = time.perf_counter() + MEASURE_SECONDS

    async def client_loop(client: httpx.AsyncClient, worker: int) -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            answer = await _send(client, url, worker * 10_000 + done)
            assert answer.status == 200, answer
            done += 1

    async with httpx.AsyncClient(timeout=60) as client:
        started = time.perf_counter()
        await asyncio.gather(*(client_loop(client, worker) for worker in range(CONCURRENT)))
        return done / (time.perf_counter() - started)


async def _overload(server: RunningServer, rate: float) -> tuple[list[Answer], int]:
    """Open-loop arrivals at ``rate`` per second for OVERLOAD_SECONDS; the answers and the peak places held."""
    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=200)
    peak = 0

    async def watch() -> None:
        nonlocal peak
        while True:
            peak = max(peak, server.in_flight())
            await asyncio.sleep(0.005)

    watcher = asyncio.create_task(watch())
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        started = time.perf_counter()
        tasks = []
        for index in range(int(rate * OVERLOAD_SECONDS)):
            await asyncio.sleep(max(0.0, started + index / rate - time.perf_counter()))
            tasks.append(asyncio.create_task(_send(client, server.url, index)))
        answers = list(await asyncio.gather(*tasks))
    watcher.cancel()
    return answers, peak


def _p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98] if len(values) > 1 else (values or [0.0])[0]


def test_twice_the_capacity_gets_only_429_or_503_and_no_crash(figure: RecordFigure) -> None:
    settings = server_settings(max_concurrent=CONCURRENT, max_batch_size=CONCURRENT, max_queue=QUEUE, max_tokens=64)
    settings = settings.model_copy(update={"model": ModelSource(uri=MODEL)})
    with serving(settings, engine_for(MODEL)) as server:
        capacity = asyncio.run(_capacity(server.url))
        answers, peak = asyncio.run(_overload(server, 2 * capacity))
        after = httpx.post(f"{server.url}/v1/completions", json=_body(-1), headers=NO_CACHE, timeout=60)
        health = httpx.get(f"{server.url}/health", timeout=10)
        places_left = server.in_flight()
    statuses = Counter(answer.status for answer in answers)
    unexpected = {status: count for status, count in statuses.items() if status not in (200, 429, 503)}
    turned_away = [answer for answer in answers if answer.status in (429, 503)]
    without_retry_after = sum(1 for answer in turned_away if not answer.retry_after)
    admitted = [answer.seconds for answer in answers if answer.status == 200]
    print(f"statuses at {2 * capacity:.1f} requests/s: {dict(statuses)}")
    figure(AREA, "measured capacity (requests/s)", round(capacity, 1))
    figure(AREA, "2x capacity: answers other than 200/429/503", sum(unexpected.values()), target="0", ok=not unexpected)
    figure(AREA, "2x capacity: share turned away (429/503)", f"{len(turned_away) / len(answers):.0%}")
    places = CONCURRENT + QUEUE
    figure(
        AREA,
        f"2x capacity: peak requests admitted (of {places} places)",
        peak,
        target=f"<= {places}",
        ok=peak <= places,
    )
    figure(
        AREA, "2x capacity: 429/503 without Retry-After", without_retry_after, target="0", ok=not without_retry_after
    )
    figure(AREA, "2x capacity: p99 latency of admitted requests (s)", round(_p99(admitted), 3))
    ok_after = after.status_code == 200 and health.status_code == 200 and places_left == 0
    figure(AREA, "2x capacity: serves normally afterwards, places freed", ok_after, target="True", ok=ok_after)
    assert not unexpected, unexpected
    assert peak <= places, "more requests were admitted than the server has places for"
    assert without_retry_after == 0
    assert ok_after, (after.status_code, health.status_code, places_left)
