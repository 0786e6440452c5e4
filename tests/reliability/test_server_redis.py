"""Redis killed and restarted under load: no request fails, and cache hits come back with Redis.

Clients send a steady mix of repeated greedy requests (so most are cache hits) while the real
``redis-server`` behind the cache is killed and, a moment later, started again on the same port.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections import Counter
from contextlib import AsyncExitStack
from dataclasses import dataclass

import httpx

from tests.harness.cluster import free_port
from tests.harness.redis import running_redis
from tests.reliability.conftest import RecordFigure
from tests.reliability.test_server_harness import AREA, NAME, server_settings, serving

CLIENTS = 6
PROMPTS = 12
UP_SECONDS = 2.0
DOWN_SECONDS = 2.0
BACK_SECONDS = 5.0  # longer than the cache's pause after a failure


@dataclass(frozen=True)
class Answer:
    """When a request was sent and answered, with what status and cache outcome."""

    sent: float
    at: float
    status: int
    cache: str | None


async def _load(url: str, stop: asyncio.Event) -> list[Answer]:
    answers: list[Answer] = []

    async def client_loop(client: httpx.AsyncClient, worker: int) -> None:
        sent = 0
        while not stop.is_set():
            body = {"model": NAME, "prompt": f"redis {(worker + sent) % PROMPTS}", "max_tokens": 3, "temperature": 0}
            sent_at = time.monotonic()
            try:
                response = await client.post(f"{url}/v1/completions", json=body)
                cache = response.headers.get("x-kubellm-cache")
                answers.append(Answer(sent_at, time.monotonic(), response.status_code, cache))
            except httpx.HTTPError as error:  # a failure too: counted, not raised
                answers.append(Answer(sent_at, time.monotonic(), 0, type(error).__name__))
            sent += 1

    async with httpx.AsyncClient(timeout=30) as client:
        await asyncio.gather(*(client_loop(client, worker) for worker in range(CLIENTS)))
    return answers


def test_no_request_fails_while_redis_dies_and_hits_resume_when_it_returns(figure: RecordFigure) -> None:
    async def scenario(url: str, port: int, first: subprocess.Popen[bytes]) -> tuple[list[Answer], float, float, float]:
        stop = asyncio.Event()
        load = asyncio.create_task(_load(url, stop))
        await asyncio.sleep(UP_SECONDS)
        await asyncio.to_thread(_kill, first)
        killed_at = time.monotonic()  # once Redis is dead: a thread started under load may begin late
        await asyncio.sleep(DOWN_SECONDS)
        restart_at = time.monotonic()  # from here Redis may be up again (the thread may report it late)
        async with AsyncExitStack() as stack:
            await asyncio.to_thread(stack.enter_context, running_redis(port))
            back_at = time.monotonic()
            await asyncio.sleep(BACK_SECONDS)
            stop.set()
            answers = await load
        return answers, killed_at, restart_at, back_at

    with running_redis() as redis, serving(server_settings(redis.url)) as server:
        answers, killed_at, restart_at, back_at = asyncio.run(scenario(server.url, redis.port, redis.process))
        errors = server.metric("llm_cache_errors_total")
    failed = [answer for answer in answers if answer.status != 200]
    hits_before = sum(1 for a in answers if a.at < killed_at and a.cache == "hit")
    # sent once Redis was dead (a request sent before may still be answered from it, late on a busy loop)
    hits_down = sum(1 for a in answers if killed_at < a.sent and a.at < restart_at and a.cache == "hit")
    hits_after = [a.at - back_at for a in answers if a.at > back_at and a.cache == "hit"]
    print(f"{len(answers)} requests: {Counter((a.status, a.cache) for a in answers)}; cache errors {errors:.0f}")
    figure(
        AREA, f"Redis killed + restarted: failed requests (of {len(answers)})", len(failed), target="0", ok=not failed
    )
    figure(AREA, "Redis down: cache errors counted (bypassed)", int(errors), target="> 0", ok=errors > 0)
    resumed = min(hits_after, default=float("inf"))
    figure(AREA, "Redis back: seconds until cache hits resume", round(resumed, 2), target="< 4", ok=resumed < 4)
    assert not failed, Counter((a.status, a.cache) for a in failed)
    assert hits_before > 0 and hits_down == 0 and errors > 0, (hits_before, hits_down, errors)
    assert resumed < 4, "no cache hit after Redis came back"


def _kill(process: subprocess.Popen[bytes]) -> None:
    process.kill()  # SIGKILL: no goodbye to clients
    process.wait(timeout=10)


def test_no_request_fails_when_redis_is_never_reachable(figure: RecordFigure) -> None:
    unreachable = f"redis://127.0.0.1:{free_port()}/0"
    body = {"model": NAME, "prompt": "no redis", "max_tokens": 2, "temperature": 0}
    with serving(server_settings(unreachable)) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        statuses = [client.post("/v1/completions", json=body).status_code for _ in range(5)]
        errors = server.metric("llm_cache_errors_total")
    failed = sum(status != 200 for status in statuses)
    figure(AREA, "Redis unreachable from the start: failed requests (of 5)", failed, target="0", ok=failed == 0)
    assert failed == 0 and errors >= 1, (statuses, errors)
