"""The runner: the paired plan, bounded concurrency, the request log and resuming."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from kubellm.contract.experiments import ExperimentConfig
from kubellm.runtime.experiments.client import ClientSettings, EndpointClient, EndpointUnreachableError
from kubellm.runtime.experiments.runner import (
    PlannedRequest,
    Progress,
    RequestKey,
    RequestLog,
    RequestRecord,
    pending_requests,
    plan_requests,
    send_requests,
)
from kubellm.runtime.experiments.templates import compile_variants


def _config(**overrides: Any) -> ExperimentConfig:
    spec: dict[str, Any] = {
        "variants": [{"name": "a", "template": "A {{ input }}"}, {"name": "b", "template": "B {{ input }}"}],
        "dataset": {"rows": [{"input": "one"}, {"input": "two"}, {"input": "three"}]},
        "scorers": [{"name": "valid", "type": "json"}],
        "samples": 2,
        "generation": {"seed": 100, "temperature": "0.8"},
    }
    spec.update(overrides)
    return ExperimentConfig.model_validate(spec)


def _plan(config: ExperimentConfig) -> list[PlannedRequest]:
    return plan_requests(config, config.dataset.rows or [], compile_variants(config.variants), "chat", "m")


def test_plan_is_paired_row_by_row_with_shared_seeds() -> None:
    planned = _plan(_config())
    assert len(planned) == 2 * 3 * 2
    assert [p.key for p in planned[:4]] == [
        RequestKey("a", 0, 0),
        RequestKey("b", 0, 0),
        RequestKey("a", 0, 1),
        RequestKey("b", 0, 1),
    ]
    seeds: dict[tuple[int, int], set[int]] = {(p.key.row, p.key.sample): set() for p in planned}
    for p in planned:
        seeds[(p.key.row, p.key.sample)].add(p.body["seed"])
    assert all(len(s) == 1 for s in seeds.values())  # every variant gets the same seed
    assert len({next(iter(s)) for s in seeds.values()}) == 6  # and each row and sample its own
    assert planned[0].body["messages"][-1]["content"] == "A one"


def test_a_variant_may_ask_for_its_own_model() -> None:
    config = _config(variants=[{"name": "a", "template": "x"}, {"name": "b", "template": "x", "model": "adapter-b"}])
    models = {p.key.variant: p.body["model"] for p in _plan(config)}
    assert models == {"a": "m", "b": "adapter-b"}


def test_a_variant_may_have_its_own_token_budget() -> None:
    config = _config(variants=[{"name": "a", "template": "x"}, {"name": "b", "template": "x", "maxTokens": 160}])
    budgets = {p.key.variant: p.body["max_tokens"] for p in _plan(config)}
    assert budgets == {"a": config.generation.max_tokens, "b": 160}


def test_examples_as_messages_are_sent_as_earlier_turns() -> None:
    variant = {
        "name": "b",
        "style": "fewShot",
        "template": "{{ input }}",
        "examples": [{"input": "zero", "output": "0"}],
        "examplesAs": "messages",
    }
    planned = _plan(_config(variants=[{"name": "a", "template": "{{ input }}"}, variant]))
    messages = next(p.body["messages"] for p in planned if p.key == RequestKey("b", 0, 0))
    assert messages == [
        {"role": "user", "content": "zero"},
        {"role": "assistant", "content": "0"},
        {"role": "user", "content": "one"},
    ]


def test_request_log_round_trip_and_a_cut_line_is_skipped(tmp_path: Path) -> None:
    log = RequestLog(tmp_path / "requests.jsonl")
    record = RequestRecord(variant="a", row=0, sample=0, fingerprint="f", output="x", latency_seconds=0.1)
    log.append(record)
    with log.path.open("a") as handle:
        handle.write('{"variant": "b", "row": 0, "sam')  # killed mid-write
    assert log.load() == {record.key: record}


def test_only_failed_missing_or_changed_requests_are_pending() -> None:
    planned = _plan(_config())[:4]
    ok = RequestRecord(variant="a", row=0, sample=0, fingerprint=planned[0].fingerprint, output="x")
    failed = RequestRecord(variant="b", row=0, sample=0, fingerprint=planned[1].fingerprint, error="HTTP 500")
    changed = RequestRecord(variant="a", row=0, sample=1, fingerprint="old-spec", output="x")
    done = {r.key: r for r in (ok, failed, changed)}
    assert [p.key for p in pending_requests(planned, done)] == [planned[1].key, planned[2].key, planned[3].key]


class _Server:
    def __init__(self, fail_with: Exception | None = None) -> None:
        self.seen: list[dict[str, Any]] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self.fail_with = fail_with

    async def handle(self, request: httpx.Request) -> httpx.Response:
        if self.fail_with is not None:
            raise self.fail_with
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        await asyncio.sleep(0.002)
        self.in_flight -= 1
        body = json.loads(request.content)
        self.seen.append(body)
        if body["seed"] % 5 == 0:
            return httpx.Response(400, json={"error": {"message": "rejected"}})
        return httpx.Response(200, json={"choices": [{"message": {"content": body["messages"][-1]["content"]}}]})


def _send(
    planned: list[PlannedRequest], server: _Server, tmp_path: Path
) -> tuple[dict[RequestKey, RequestRecord], str]:
    stream = io.StringIO()

    async def go() -> dict[RequestKey, RequestRecord]:
        settings = ClientSettings(base_url="http://llm.test/v1", max_retries=1, backoff_seconds=0.001)
        async with EndpointClient(settings, transport=httpx.MockTransport(server.handle)) as client:
            progress = Progress(total=len(planned), output_dir=tmp_path, stream=stream)
            return await send_requests(planned, client, 3, RequestLog(tmp_path / "requests.jsonl"), progress)

    return asyncio.run(go()), stream.getvalue()


def test_send_bounds_concurrency_records_failures_and_resumes(tmp_path: Path) -> None:
    planned = _plan(_config())
    server = _Server()
    records, progress = _send(planned, server, tmp_path)
    assert len(server.seen) == 12 and server.most_in_flight == 3
    assert sorted(records) == sorted(p.key for p in planned)
    failed = [r for r in records.values() if r.failed]
    assert failed and all(r.error == "HTTP 400: rejected" for r in failed)
    assert records[RequestKey("b", 2, 0)].output == "B three"
    assert progress.splitlines()[-1] == f"experiment: 12/12 requests (100%), {len(failed)} failed"
    assert json.loads((tmp_path / "progress.json").read_text()) == {"completed": 12, "total": 12, "percent": 100}

    again = _Server()
    _send(planned, again, tmp_path)
    assert len(again.seen) == len(failed)  # only the failed requests are tried again


def test_unreachable_endpoint_stops_the_run(tmp_path: Path) -> None:
    planned = _plan(_config())
    with pytest.raises(EndpointUnreachableError, match="cannot reach"):
        _send(planned, _Server(fail_with=httpx.ConnectError("refused")), tmp_path)
    assert not (tmp_path / "requests.jsonl").exists()
