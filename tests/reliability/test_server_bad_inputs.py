"""Bad requests get their 4xx and a clear OpenAI-shaped error; many of them leave memory flat.

Each case is a request a careless or hostile client sends: a body over the limit, a huge
``max_tokens``, ``n`` too large, broken JSON, bytes that are not UTF-8, an unknown model, no or a
wrong API key, a prompt longer than the model's context or the configured prompt cap.
"""

from __future__ import annotations

import asyncio
import gc
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.reliability.conftest import RecordFigure
from tests.reliability.test_server_harness import AREA, NAME, RunningServer, server_settings, serving

KEY = "reliability-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
JSON = {"content-type": "application/json"}
MAX_BYTES = 65_536
MAX_PROMPT_TOKENS = 300


@dataclass(frozen=True)
class BadRequest:
    """One bad request and what it must get back."""

    name: str
    status: int
    says: str
    """A fragment of the message that tells the caller what to change."""
    path: str = "/v1/completions"
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=lambda: {**AUTH, **JSON})


def _json(value: dict[str, Any]) -> bytes:
    return json.dumps(value).encode()


def _completion(**fields: Any) -> bytes:
    return _json({"model": NAME, "prompt": "Hello", "max_tokens": 2, **fields})


CASES = [
    BadRequest("oversized body", 413, f"exceeds {MAX_BYTES} bytes", body=_completion(prompt="x" * MAX_BYTES)),
    BadRequest("huge max_tokens", 400, "max_tokens must be between 1 and", body=_completion(max_tokens=10**9)),
    BadRequest("n too large", 400, "n must be between 1 and", body=_completion(n=1000)),
    BadRequest("malformed JSON", 400, "not valid JSON", body=b'{"model": "tiny", "prompt": '),
    BadRequest("unknown model", 404, "does not exist", body=_completion(model="no-such-model")),
    BadRequest("missing API key", 401, "API key is required", body=_completion(), headers=JSON),
    BadRequest(
        "invalid API key", 401, "API key is required", body=_completion(), headers={**JSON, "Authorization": "Bearer x"}
    ),
    BadRequest("invalid UTF-8", 400, "UTF-8", body=b'{"model": "tiny", "prompt": "\xff\xfe\xc3\x28"}'),
    BadRequest("prompt over the context", 400, "the model's context is 512", body=_completion(prompt="x" * 2000)),
    BadRequest("prompt over the cap", 400, f"at most {MAX_PROMPT_TOKENS}", body=_completion(prompt="x" * 400)),
    BadRequest(
        "chat prompt over the context",
        400,
        "shorten the prompt",
        path="/v1/chat/completions",
        body=_json({"model": NAME, "messages": [{"role": "user", "content": "x" * 2000}], "max_tokens": 2}),
    ),
    BadRequest(
        "prompt plus max_tokens over the context",
        400,
        "lower max_tokens",
        body=_completion(prompt="x" * 290, max_tokens=250),
    ),
    BadRequest("seed out of range", 400, "seed", body=_completion(seed=10**30, temperature=1)),
    BadRequest(
        "generate: max_length too large",
        400,
        "max_tokens must be",
        path="/generate",
        body=_json({"prompt": "a", "max_length": 10**9}),
    ),
]


@pytest.fixture(scope="module")
def server() -> Any:
    settings = server_settings(
        api_keys=(KEY,), max_tokens=256, max_request_bytes=MAX_BYTES, max_prompt_tokens=MAX_PROMPT_TOKENS
    )
    with serving(settings) as running:
        yield running


def _problem(case: BadRequest, response: httpx.Response) -> str | None:
    """What is wrong with the answer to a bad request (None: it is right)."""
    if response.status_code != case.status:
        return f"status {response.status_code}, expected {case.status}: {response.text[:200]}"
    try:
        error = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        return f"not an OpenAI error body: {response.text[:200]}"
    if not {"message", "type", "param", "code"} <= error.keys():
        return f"error fields missing: {error}"
    if case.says not in error["message"]:
        return f"message {error['message']!r} does not say {case.says!r}"
    if case.status == 401 and response.headers.get("www-authenticate") != "Bearer":
        return "401 without WWW-Authenticate: Bearer"
    return None


def _rss_bytes() -> int:
    """Resident memory of this process, which runs the server (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def _send(client: httpx.Client, url: str, case: BadRequest) -> httpx.Response:
    return client.post(f"{url}{case.path}", content=case.body, headers=case.headers)


def test_each_bad_request_gets_its_4xx_and_a_clear_message(server: RunningServer, figure: RecordFigure) -> None:
    with httpx.Client(timeout=30) as client:
        problems = {case.name: _problem(case, _send(client, server.url, case)) for case in CASES}
        still_serves = client.post(f"{server.url}/v1/completions", content=_completion(), headers={**AUTH, **JSON})
    wrong = {name: problem for name, problem in problems.items() if problem is not None}
    right = len(CASES) - len(wrong)
    figure(
        AREA, "bad requests answered with their 4xx + OpenAI error", f"{right}/{len(CASES)}", target="all", ok=not wrong
    )
    assert not wrong, wrong
    assert still_serves.status_code == 200


def test_memory_stays_flat_over_many_bad_requests(server: RunningServer, figure: RecordFigure) -> None:
    rounds = 60  # x len(CASES) requests

    def hammer(times: int) -> None:
        with httpx.Client(timeout=30) as client:
            for _ in range(times):
                for case in CASES:
                    assert _send(client, server.url, case).status_code == case.status

    hammer(20)  # warm up: allocator pools, lazily built objects
    gc.collect()
    before = _rss_bytes()
    hammer(rounds)
    gc.collect()
    growth_mib = (_rss_bytes() - before) / 2**20
    figure(
        AREA,
        f"RSS growth over {rounds * len(CASES)} bad requests (MiB)",
        round(growth_mib, 1),
        target="< 25",
        ok=growth_mib < 25,
    )
    assert growth_mib < 25


def test_a_megabyte_prompt_is_refused_fast_and_never_stalls_the_server(figure: RecordFigure) -> None:
    huge = _completion(prompt="hello world " * 75_000)  # 0.9 MB of text, 300k tokens
    settings = server_settings(max_request_bytes=2 * 2**20)
    with serving(settings) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        refused, health = asyncio.run(_huge_prompts_and_health(server.url, huge))
        after = client.post("/v1/completions", content=_completion(), headers=JSON)
    figure(AREA, "1 MB prompt: slowest 400 of 4 at once (s)", round(refused, 3), target="< 2", ok=refused < 2)
    figure(AREA, "1 MB prompts: slowest /health meanwhile (s)", round(health, 3), target="< 1", ok=health < 1)
    assert refused < 2 and health < 1, (refused, health)  # tokenizing it all took seconds on the event loop
    assert after.status_code == 200


async def _huge_prompts_and_health(url: str, body: bytes) -> tuple[float, float]:
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:

        async def refuse() -> float:
            started = time.perf_counter()
            response = await client.post("/v1/completions", content=body, headers=JSON)
            assert response.status_code == 400 and "shorten the prompt" in response.text, response.text[:200]
            return time.perf_counter() - started

        async def probe(until: asyncio.Future[list[float]]) -> float:
            slowest = 0.0
            while not until.done():
                started = time.perf_counter()
                assert (await client.get("/health")).status_code == 200
                slowest = max(slowest, time.perf_counter() - started)
                await asyncio.sleep(0.01)
            return slowest

        refusals = asyncio.gather(*(refuse() for _ in range(4)))
        health = await probe(refusals)
        return max(await refusals), health
