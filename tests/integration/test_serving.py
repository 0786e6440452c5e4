"""The inference server for real: uvicorn on a loopback port, the official openai client, real Redis."""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import redis
import torch
import uvicorn
from prometheus_client.parser import text_string_to_metric_families

from kubellm.contract.schema import ModelSource
from kubellm.contract.serving import CacheConfig, GenerationLimits, ServingConfig
from kubellm.runtime.serving import command
from kubellm.runtime.serving.app import create_app
from kubellm.runtime.serving.engine import Engine, load_transformers_engine
from kubellm.runtime.serving.settings import ServerSettings
from tests.harness.cluster import free_port
from tests.harness.redis import RedisServer

pytestmark = pytest.mark.integration

torch.set_num_threads(1)

MODEL = "dummy://llama?hidden_size=32&num_hidden_layers=2&num_attention_heads=4&seed=1"
NAME = "tiny"
NO_CACHE = {"Cache-Control": "no-cache"}


def _settings(cache_url: str | None = None, **limits: int) -> ServerSettings:
    cache = CacheConfig(enabled=True, url=cache_url, ttl_seconds=60) if cache_url else CacheConfig()
    serving = ServingConfig(limits=GenerationLimits(**{"batch_wait_ms": 20, **limits}), cache=cache)
    return ServerSettings(model=ModelSource(uri=MODEL), served_model_name=NAME, serving=serving)


@pytest.fixture(scope="module")
def engine() -> Engine:
    return load_transformers_engine(_settings())


@contextmanager
def serving(engine: Engine, settings: ServerSettings) -> Iterator[str]:
    """A real uvicorn server in a thread; yields its base URL."""
    config = uvicorn.Config(create_app(settings, engine), host="127.0.0.1", port=free_port(), log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{config.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture(scope="module")
def base_url(engine: Engine) -> Iterator[str]:
    with serving(engine, _settings()) as url:
        yield url


def _client(base_url: str, key: str = "none") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key=key, max_retries=0)


def _metric(base_url: str, name: str, **labels: str) -> float:
    text = httpx.get(f"{base_url}/metrics").text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


# --- the OpenAI API -----------------------------------------------------------------------------


def test_the_openai_client_completes_chats_and_lists_models(base_url: str) -> None:
    client = _client(base_url)
    assert [model.id for model in client.models.list()] == [NAME]
    completion = client.completions.create(model=NAME, prompt="Hello", max_tokens=5, temperature=0)
    assert completion.choices[0].finish_reason in ("stop", "length")
    assert completion.usage is not None and 1 <= completion.usage.completion_tokens <= 5
    chat = client.chat.completions.create(
        model=NAME, messages=[{"role": "user", "content": "Hi"}], max_tokens=4, temperature=0, stop=["\n\n"]
    )
    assert chat.choices[0].message.role == "assistant"
    assert chat.usage is not None and chat.usage.total_tokens == chat.usage.prompt_tokens + chat.usage.completion_tokens


def test_the_async_client_streams_with_usage(base_url: str) -> None:
    async def stream() -> tuple[str, Any]:
        client = openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="none", max_retries=0)
        chunks = await client.chat.completions.create(
            model=NAME,
            messages=[{"role": "user", "content": "Hi"}],
            max_tokens=6,
            stream=True,
            stream_options={"include_usage": True},
            extra_headers=NO_CACHE,
        )
        text, usage = "", None
        async for chunk in chunks:
            text += "".join(choice.delta.content or "" for choice in chunk.choices)
            usage = chunk.usage or usage
        await client.close()
        return text, usage

    _, usage = asyncio.run(stream())
    assert usage is not None and 1 <= usage.completion_tokens <= 6


def test_every_stream_ends_with_done(base_url: str) -> None:
    body = {"model": NAME, "prompt": "Hello", "max_tokens": 4, "stream": True}
    with httpx.stream("POST", f"{base_url}/v1/completions", json=body, headers=NO_CACHE) as response:
        events = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]"


def test_concurrent_requests_are_batched(base_url: str) -> None:
    before = _metric(base_url, "llm_batch_size_sum") - _metric(base_url, "llm_batch_size_count")

    async def burst() -> list[str]:
        client = openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="none", max_retries=0)
        calls = [
            client.completions.create(
                model=NAME, prompt=f"Prompt {i}", max_tokens=12, temperature=0, extra_headers=NO_CACHE
            )
            for i in range(8)
        ]
        results = await asyncio.gather(*calls)
        await client.close()
        return [result.choices[0].text for result in results]

    assert len(asyncio.run(burst())) == 8
    # sum - count grows only when a step decodes more than one row
    assert _metric(base_url, "llm_batch_size_sum") - _metric(base_url, "llm_batch_size_count") > before


# --- limits ---------------------------------------------------------------------------------------


def test_api_keys_429_and_aborted_streams(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _settings(max_concurrent=1, max_batch_size=1, max_queue=0).model_copy(update={"api_keys": ("k1",)})
    with serving(engine, settings) as url:
        with pytest.raises(openai.AuthenticationError):
            _client(url, "wrong").models.list()
        headers = {"Authorization": "Bearer k1", **NO_CACHE}
        body = {"model": NAME, "prompt": "Hello", "max_tokens": 100, "stream": True}
        statuses = asyncio.run(_burst(f"{url}/v1/completions", {**body, "stream": False}, headers, 6))
        assert {status for status, _ in statuses} == {200, 429}
        assert all(retry == "1" for status, retry in statuses if status == 429)
        with httpx.stream("POST", f"{url}/v1/completions", json=body, headers=headers) as streaming:
            next(streaming.iter_lines())
        # the aborted stream gave its place back
        deadline = time.monotonic() + 10
        while (status := httpx.post(f"{url}/generate", json={"prompt": "a"}, headers=headers).status_code) == 429:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert status == 200


async def _burst(url: str, body: dict[str, Any], headers: dict[str, str], count: int) -> list[tuple[int, str | None]]:
    async with httpx.AsyncClient(timeout=60) as client:
        responses = await asyncio.gather(*(client.post(url, json=body, headers=headers) for _ in range(count)))
    return [(response.status_code, response.headers.get("retry-after")) for response in responses]


# --- the response cache in Redis -------------------------------------------------------------------


def _serve_settings(how: str, redis_url: str, tmp_path: Path) -> ServerSettings:
    """``kubellm serve`` settings asking for Redis with a 3-second TTL, from a spec or from flags."""
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    argv = ["--model", MODEL, "--served-model-name", NAME]
    if how == "spec":  # a url alone, no enabled: a url means Redis
        spec = {"model": {"uri": MODEL}, "serving": {"cache": {"url": redis_url, "ttlSeconds": 3}}}
        (tmp_path / "spec.json").write_text(json.dumps(spec))
        argv += ["--config", str(tmp_path / "spec.json")]
    else:
        argv += ["--redis-url", redis_url, "--cache-ttl", "3"]
    return command.build_settings(parser.parse_args(argv))


def _cache_status(url: str, body: dict[str, Any]) -> str:
    response = httpx.post(f"{url}/v1/completions", json=body, timeout=60)
    assert response.status_code == 200, response.text
    return response.headers["x-kubellm-cache"]


@pytest.mark.parametrize("how", ["spec", "flags"])
def test_a_cache_url_caches_in_redis_which_expires_the_entry_after_its_ttl(
    engine: Engine, redis_server: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    for name in ("REDIS_URL", "CACHE_TTL", "CONFIG", "MODEL"):
        monkeypatch.delenv(f"KUBELLM_{name}", raising=False)
    settings = _serve_settings(how, redis_server.url, tmp_path)
    client = redis.Redis.from_url(redis_server.url)
    before = set(client.keys("kubellm:*"))
    body = {"model": NAME, "prompt": f"Cached by {how}", "max_tokens": 3, "temperature": 0}
    try:
        with serving(engine, settings) as url:
            assert [_cache_status(url, body) for _ in range(2)] == ["miss", "hit"]
            (key,) = set(client.keys("kubellm:*")) - before  # the entry lives in Redis, not in the process
            assert 0 < int(client.pttl(key)) <= 3000  # Redis holds it for ttlSeconds, not the default hour
            deadline = time.monotonic() + 10
            while client.exists(key):
                assert time.monotonic() < deadline, "Redis kept the entry past its TTL"
                time.sleep(0.1)
            assert _cache_status(url, body) == "miss"  # gone from Redis, so generated again
    finally:
        client.close()


# Bad inputs, load beyond capacity, aborted streams, Redis failures and cache isolation are
# checked, with their figures, by tests/reliability/test_server_*.py.
