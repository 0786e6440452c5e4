"""The OpenAI-compatible client: bodies, retries, Retry-After, timeouts, cache bypass."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest

from kubellm.contract.experiments import GenerationParams
from kubellm.runtime.experiments.client import (
    ClientSettings,
    Completion,
    EndpointClient,
    EndpointUnreachableError,
    RequestError,
    _retry_after,
    request_body,
)
from kubellm.runtime.experiments.templates import RenderedPrompt

Handler = Callable[[httpx.Request], httpx.Response]
CHAT_ANSWER = {
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Paris"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 7, "completion_tokens": 1},
}


BASE = ClientSettings(base_url="http://llm.test/v1", backoff_seconds=0.001, max_retries=3)


def _settings(**overrides: Any) -> ClientSettings:
    return dataclasses.replace(BASE, **overrides)


def _complete(handler: Handler, settings: ClientSettings | None = None) -> Completion:
    async def go() -> Completion:
        async with EndpointClient(settings or _settings(), transport=httpx.MockTransport(handler)) as client:
            return await client.complete({"model": "m", "messages": []})

    return asyncio.run(go())


def _scripted(*responses: httpx.Response | Exception) -> tuple[Handler, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        outcome = responses[min(len(seen), len(responses)) - 1]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    return handler, seen


def test_request_body_carries_decimal_strings_as_numbers_and_the_seed() -> None:
    generation = GenerationParams(max_tokens=16, temperature="0.7", top_p="0.9", stop=["\n"])
    prompt = RenderedPrompt(system="S", user="U")
    chat = request_body("chat", "m", prompt, generation, seed=12)
    assert chat == {
        "model": "m",
        "max_tokens": 16,
        "temperature": 0.7,
        "top_p": 0.9,
        "seed": 12,
        "stream": False,
        "stop": ["\n"],
        "messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}],
    }
    assert request_body("completions", "m", prompt, generation, seed=1)["prompt"] == "S\n\nU"
    assert request_body("chat", "m", prompt, generation, seed=1, max_tokens=160)["max_tokens"] == 160


def test_chat_answer_with_usage_and_cache_bypass_header() -> None:
    handler, seen = _scripted(httpx.Response(200, json=CHAT_ANSWER))
    answer = _complete(handler, _settings(api_key="sk-test"))
    assert (answer.text, answer.prompt_tokens, answer.completion_tokens, answer.finish_reason) == (
        "Paris",
        7,
        1,
        "stop",
    )
    assert answer.latency_seconds >= 0
    request = seen[0]
    assert request.url == "http://llm.test/v1/chat/completions"
    assert request.headers["cache-control"] == "no-cache"
    assert request.headers["authorization"] == "Bearer sk-test"


def test_completions_api() -> None:
    handler, seen = _scripted(httpx.Response(200, json={"choices": [{"text": " 42", "finish_reason": "length"}]}))
    answer = _complete(handler, _settings(api="completions"))
    assert answer.text == " 42" and answer.prompt_tokens is None and answer.finish_reason == "length"
    assert seen[0].url.path == "/v1/completions"


def test_429_is_retried_after_the_delay_the_server_asks() -> None:
    busy = httpx.Response(429, headers={"Retry-After": "0"}, json={"error": {"message": "slow down"}})
    handler, seen = _scripted(busy, busy, httpx.Response(200, json=CHAT_ANSWER))
    assert _complete(handler).text == "Paris"
    assert len(seen) == 3


def test_503_retries_run_out_with_the_server_message() -> None:
    handler, seen = _scripted(httpx.Response(503, json={"error": {"message": "model loading"}}))
    with pytest.raises(RequestError, match=r"^HTTP 503: model loading$") as failure:
        _complete(handler, _settings(max_retries=2))
    assert failure.value.status == 503 and len(seen) == 3


def test_client_errors_are_not_retried() -> None:
    handler, seen = _scripted(httpx.Response(400, json={"error": {"message": "max_tokens too large"}}))
    with pytest.raises(RequestError, match="max_tokens too large"):
        _complete(handler)
    assert len(seen) == 1


def test_an_api_key_the_server_echoes_is_masked_in_the_error() -> None:
    key = "sk-test-0123456789"
    echoed = httpx.Response(401, json={"error": {"message": f"invalid key {key} (Bearer {key})"}})
    handler, seen = _scripted(echoed)
    with pytest.raises(RequestError) as failure:
        _complete(handler, _settings(api_key=key))
    assert str(failure.value) == "HTTP 401: invalid key *** (Bearer ***)"
    assert seen[0].headers["authorization"] == f"Bearer {key}"
    flapping, _ = _scripted(httpx.Response(503, text=f"upstream refused {key}"))
    with pytest.raises(RequestError, match=r"^HTTP 503: upstream refused \*\*\*$"):
        _complete(flapping, _settings(api_key=key, max_retries=1))


def test_connection_errors_are_retried_then_mean_unreachable() -> None:
    handler, seen = _scripted(httpx.ConnectError("Connection refused"))
    with pytest.raises(EndpointUnreachableError, match=r"^cannot reach http://llm.test/v1: Connection refused$"):
        _complete(handler)
    assert len(seen) == 4


def test_a_dropped_connection_is_retried() -> None:
    handler, seen = _scripted(httpx.RemoteProtocolError("peer closed"), httpx.Response(200, json=CHAT_ANSWER))
    assert _complete(handler).text == "Paris" and len(seen) == 2


def test_timeouts_fail_the_request_without_retrying() -> None:
    handler, seen = _scripted(httpx.ReadTimeout("slow"))
    with pytest.raises(RequestError, match=r"^no answer within 5s$"):
        _complete(handler, _settings(timeout_seconds=5))
    assert len(seen) == 1


def test_malformed_answers_are_request_errors() -> None:
    handler, _ = _scripted(httpx.Response(200, json={"choices": []}))
    with pytest.raises(RequestError, match="malformed response"):
        _complete(handler)


def test_retry_after_as_seconds_or_http_date() -> None:
    assert _retry_after(httpx.Response(429, headers={"Retry-After": "3"})) == 3.0
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    delay = _retry_after(httpx.Response(429, headers={"Retry-After": later}))
    assert delay is not None and 25 < delay <= 30
    assert _retry_after(httpx.Response(429, headers={"Retry-After": "soon"})) is None
    assert _retry_after(httpx.Response(429)) is None


def test_list_models() -> None:
    async def go() -> list[str]:
        payload = json.dumps({"data": [{"id": "a"}, {"id": "b"}]}).encode()
        transport = httpx.MockTransport(lambda request: httpx.Response(200, content=payload))
        async with EndpointClient(_settings(), transport=transport) as client:
            return await client.list_models()

    assert asyncio.run(go()) == ["a", "b"]
