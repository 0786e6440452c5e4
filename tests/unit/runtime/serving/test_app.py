"""The HTTP app through TestClient: endpoints, streaming, cache header, limits and error mapping."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from kubellm.contract.serving import CacheConfig, GenerationLimits, ServingConfig
from kubellm.runtime.serving.app import create_app
from tests.unit.runtime.serving.conftest import SERVED_NAME, ClientFactory, tiny_settings

GREEDY = {"model": SERVED_NAME, "prompt": "Hello", "max_tokens": 6, "temperature": 0}


def _events(text: str) -> list[Any]:
    lines = [line.removeprefix("data: ") for line in text.split("\n\n") if line.startswith("data: ")]
    return [line if line == "[DONE]" else json.loads(line) for line in lines]


def test_probes_models_and_metrics(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/ready").json() == {"status": "ready"}
    models = client.get("/v1/models").json()
    assert [entry["id"] for entry in models["data"]] == [SERVED_NAME]
    assert "llm_model_weight_bytes" in client.get("/metrics").text


def test_completion_counts_usage_and_honours_max_tokens(client: TestClient) -> None:
    body = client.post("/v1/completions", json=GREEDY).json()
    choice = body["choices"][0]
    assert body["object"] == "text_completion"
    assert choice["finish_reason"] in ("stop", "length")
    assert body["usage"]["prompt_tokens"] > 0
    assert 1 <= body["usage"]["completion_tokens"] <= 6
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]


def test_a_repeated_greedy_request_is_a_cache_hit_unless_no_cache(client: TestClient) -> None:
    first = client.post("/v1/completions", json=GREEDY)
    second = client.post("/v1/completions", json=GREEDY)
    bypass = client.post("/v1/completions", json=GREEDY, headers={"Cache-Control": "no-cache"})
    assert [r.headers["x-kubellm-cache"] for r in (first, second, bypass)] == ["miss", "hit", "miss"]
    assert second.json()["choices"] == first.json()["choices"] == bypass.json()["choices"]


def test_a_cache_turned_off_never_answers_from_memory(make_client: ClientFactory) -> None:
    serving = ServingConfig(limits=GenerationLimits(batch_wait_ms=2), cache=CacheConfig(enabled=False))
    with make_client(serving=serving) as client:
        statuses = [client.post("/v1/completions", json=GREEDY).headers["x-kubellm-cache"] for _ in range(2)]
        metrics = client.get("/metrics").text
    assert statuses == ["miss", "miss"]
    families = text_string_to_metric_families(metrics)
    counted = [s.value for f in families for s in f.samples if s.name.startswith("llm_cache_") and "_total" in s.name]
    assert sum(counted) == 0  # no cache to hit or miss


def test_sampled_requests_are_never_cached_and_tenants_never_share(client: TestClient) -> None:
    sampled = {**GREEDY, "temperature": 0.9}
    assert [client.post("/v1/completions", json=sampled).headers["x-kubellm-cache"] for _ in range(2)] == ["miss"] * 2
    alice = {"Authorization": "Bearer alice"}
    bob = {"Authorization": "Bearer bob"}
    client.post("/v1/completions", json=GREEDY, headers=alice)
    assert client.post("/v1/completions", json=GREEDY, headers=bob).headers["x-kubellm-cache"] == "miss"
    assert client.post("/v1/completions", json=GREEDY, headers=alice).headers["x-kubellm-cache"] == "hit"


def test_a_seeded_request_is_reproducible(client: TestClient) -> None:
    seeded = {**GREEDY, "temperature": 1.0, "seed": 11}
    headers = {"Cache-Control": "no-cache"}
    texts = [
        client.post("/v1/completions", json=seeded, headers=headers).json()["choices"][0]["text"] for _ in range(2)
    ]
    assert texts[0] == texts[1]


def test_chat_stream_has_role_content_usage_and_done(client: TestClient) -> None:
    request = {
        "model": SERVED_NAME,
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": 5,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with client.stream("POST", "/v1/chat/completions", json=request) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = _events(response.read().decode())
    assert events[-1] == "[DONE]"
    assert events[0]["choices"][0]["delta"]["role"] == "assistant"
    assert events[-2]["choices"] == []
    assert events[-2]["usage"]["completion_tokens"] <= 5
    assert any(event["choices"] and event["choices"][0]["finish_reason"] for event in events[:-2])


def test_a_cached_answer_streams_too(client: TestClient) -> None:
    client.post("/v1/completions", json=GREEDY)
    response = client.post("/v1/completions", json={**GREEDY, "stream": True})
    events = _events(response.text)
    assert response.headers["x-kubellm-cache"] == "hit"
    assert events[-1] == "[DONE]"
    assert events[0]["choices"][0]["text"] == client.post("/v1/completions", json=GREEDY).json()["choices"][0]["text"]


def test_n_choices_and_the_original_generate(client: TestClient) -> None:
    body = client.post("/v1/completions", json={**GREEDY, "n": 2, "temperature": 1.0}).json()
    assert [choice["index"] for choice in body["choices"]] == [0, 1]
    two_prompts = client.post("/v1/completions", json={**GREEDY, "prompt": ["Hello", "Bye"], "n": 2}).json()
    assert len(two_prompts["choices"]) == 4
    answer = client.post("/generate", json={"prompt": "Hello", "max_length": 4, "temperature": 0}).json()
    assert set(answer) == {"response", "tokens_used"}
    assert answer["tokens_used"] >= 2


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({**GREEDY, "max_tokens": 10**6}, 400, "max_tokens"),
        ({**GREEDY, "max_tokens": 0}, 400, "max_tokens"),
        ({**GREEDY, "n": 99}, 400, "n"),
        ({**GREEDY, "max_tokens": 500, "prompt": "word " * 200}, 400, "max_tokens"),
        ({**GREEDY, "model": "other"}, 404, "model"),
        ({"model": SERVED_NAME}, 400, "prompt"),
        ({**GREEDY, "temperature": "hot"}, 400, "temperature"),
        ({**GREEDY, "seed": 10**30}, 400, "seed"),
        ({**GREEDY, "prompt": "x" * 600}, 400, "prompt"),
        ({**GREEDY, "prompt": ["ok", 7]}, 400, "prompt"),
    ],
)
def test_bad_requests_get_their_status_and_an_openai_error(
    client: TestClient, body: dict[str, Any], status: int, param: str
) -> None:
    response = client.post("/v1/completions", json=body)
    assert response.status_code == status
    assert response.json()["error"]["param"] == param
    assert response.json()["error"]["message"]


def test_an_oversized_body_is_413(make_client: ClientFactory) -> None:
    with make_client(limits={"max_request_bytes": 2048}) as client:
        response = client.post("/v1/completions", json={**GREEDY, "prompt": "x" * 5000})
        assert response.status_code == 413
        assert "2048" in response.json()["error"]["message"]
        chunked = client.post("/v1/completions", content=iter([b"{" + b" " * 4096 + b"}"]))
        assert chunked.status_code == 413


def test_api_keys_are_required_when_configured(make_client: ClientFactory) -> None:
    with make_client(api_keys=("secret",)) as client:
        missing = client.post("/v1/completions", json=GREEDY)
        wrong = client.get("/v1/models", headers={"Authorization": "Bearer nope"})
        right = client.post("/v1/completions", json=GREEDY, headers={"Authorization": "Bearer secret"})
        assert (missing.status_code, wrong.status_code, right.status_code) == (401, 401, 200)
        assert missing.headers["www-authenticate"] == "Bearer"
        assert client.get("/health").status_code == 200


def test_a_full_server_answers_429_with_retry_after(make_client: ClientFactory) -> None:
    with make_client(limits={"max_concurrent": 1, "max_batch_size": 1, "max_queue": 0}) as client:
        release = client.app.state.kubellm.service.enter_slot()  # type: ignore[attr-defined]
        busy = client.post("/v1/completions", json={**GREEDY, "temperature": 1.0})
        assert busy.status_code == 429
        assert busy.headers["retry-after"] == "1"
        assert busy.json()["error"]["code"] == "rate_limit_exceeded"
        release()
        assert client.post("/v1/completions", json={**GREEDY, "temperature": 1.0}).status_code == 200


def test_not_ready_until_loaded_and_a_failed_load_is_explained() -> None:
    settings = tiny_settings(model="dummy://nosuch")
    with TestClient(create_app(settings)) as client:
        assert client.get("/health").status_code == 200
        for _ in range(200):
            response = client.get("/ready")
            if "failed" in response.text:
                break
        assert response.status_code == 503
        assert "unknown architecture" in response.json()["error"]["message"]
        assert response.headers["retry-after"] == "1"
        assert client.post("/v1/completions", json=GREEDY).status_code == 503


def test_unknown_paths_are_openai_shaped_404s(client: TestClient) -> None:
    response = client.get("/v1/nothing")
    assert response.status_code == 404
    assert "error" in response.json()


def test_a_request_past_its_timeout_is_cancelled_with_503(make_client: ClientFactory) -> None:
    with make_client(limits={"request_timeout_seconds": 1}) as client:
        client.app.state.kubellm.service.scheduler.stop()  # type: ignore[attr-defined]  # nothing will answer
        response = client.post("/v1/completions", json={**GREEDY, "temperature": 1.0})
        assert response.status_code == 503
        assert response.headers["retry-after"] == "1"
        assert "timed out" in response.json()["error"]["message"]


def test_a_huge_negative_or_wrapping_seed_still_samples(client: TestClient) -> None:
    for seed in (-(2**63), 2**63 - 1):
        body = {**GREEDY, "temperature": 1.0, "seed": seed, "n": 2}
        assert client.post("/v1/completions", json=body).status_code == 200


@pytest.mark.parametrize(
    ("content", "says"),
    [(b'{"model": "tiny", "prompt": ', "not valid JSON"), (b'{"model": "tiny", "prompt": "\xff\xfe"}', "UTF-8")],
)
def test_undecodable_bodies_are_400_with_a_clear_message(client: TestClient, content: bytes, says: str) -> None:
    response = client.post("/v1/completions", content=content, headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert says in response.json()["error"]["message"]


def test_a_configured_prompt_cap_is_400_on_the_prompt(make_client: ClientFactory) -> None:
    with make_client(limits={"max_prompt_tokens": 10}) as client:
        response = client.post("/v1/completions", json={**GREEDY, "prompt": "x" * 11})
        chat = {"model": SERVED_NAME, "messages": [{"role": "user", "content": "x" * 50}], "max_tokens": 2}
        chat_response = client.post("/v1/chat/completions", json=chat)
        assert client.post("/v1/completions", json={**GREEDY, "prompt": "x" * 10}).status_code == 200
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "prompt"
    assert "at most 10" in response.json()["error"]["message"]
    assert (chat_response.status_code, chat_response.json()["error"]["param"]) == (400, "messages")


def test_a_cache_hit_skips_rendering_and_tokenizing(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    chat = {**GREEDY, "messages": [{"role": "user", "content": "Hi"}]}
    client.post("/v1/completions", json=GREEDY)
    client.post("/v1/chat/completions", json=chat)
    engine = client.app.state.kubellm.service.engine  # type: ignore[attr-defined]

    def fail(*_: object) -> None:
        raise AssertionError("a hit must not need the prompt's tokens")

    monkeypatch.setattr(engine, "encode", fail)
    monkeypatch.setattr(engine, "render_chat", fail)
    assert client.post("/v1/completions", json=GREEDY).headers["x-kubellm-cache"] == "hit"
    assert client.post("/v1/chat/completions", json=chat).headers["x-kubellm-cache"] == "hit"


def test_the_openapi_documents_the_error_statuses_answered(client: TestClient) -> None:
    operation = client.get("/openapi.json").json()["paths"]["/v1/completions"]["post"]
    assert {"400", "401", "404", "413", "429", "503"} <= operation["responses"].keys()
    assert "422" not in operation["responses"]
    assert "text/event-stream" in operation["responses"]["200"]["content"]


def test_a_prompt_far_past_the_cap_is_refused_from_its_start(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = client.app.state.kubellm.service.engine  # type: ignore[attr-defined]
    encode = engine.encode
    lengths: list[int] = []

    def counting(text: str) -> list[int]:
        lengths.append(len(text))
        return [int(token) for token in encode(text)]

    monkeypatch.setattr(engine, "encode", counting)
    response = client.post("/v1/completions", json={**GREEDY, "prompt": "word " * 100_000})
    assert response.status_code == 400
    assert "more than 511 tokens" in response.json()["error"]["message"]
    assert max(lengths) < 10_000  # only the start was tokenized
