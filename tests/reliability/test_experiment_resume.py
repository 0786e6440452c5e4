"""``kubellm experiment`` under faults: a SIGKILL mid-run, and an endpoint that flaps.

The endpoint is a small OpenAI-compatible server on loopback (the runner's behaviour is what is
tested, not a model's): it counts every request that reaches it and stamps each answer with a
key of the request (a hash of prompt and seed), so a resumed run's requests can be matched
against the answers the killed run had already written to ``requests.jsonl``. When flapping,
it fails a fixed share of attempts, at most twice per request, the ways a restarting backend
behind a load balancer does: 503 without ``Retry-After``, 503 with ``Retry-After: 0``, or the
connection closed without an answer.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness.documents import run_document
from tests.reliability.conftest import RecordFigure

KUBELLM = Path(sys.executable).with_name("kubellm")
KEY = re.compile(r"\[ref ([0-9a-f]{12})\]")
QUESTION = re.compile(r"What is (\d+) \+ (\d+)\?")
DROPPED = 0  # the status of an attempt answered by closing the connection


@dataclass
class Endpoint:
    """What the fake endpoint does and what reached it."""

    delay_seconds: float = 0.0
    flap: bool = False
    api_key: str | None = None
    echo: bool = False  # a careless server: its 401 repeats the credentials it was sent
    requests: list[str] = field(default_factory=list)  # request keys, one per attempt
    answered: list[str] = field(default_factory=list)  # keys answered 200
    refused: Counter[int] = field(default_factory=Counter)  # status -> count
    bodies: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def failures_for(self, key: str) -> int:
        """How many attempts of this request fail (0, 1 or 2; the same on every run)."""
        return int(key[:6], 16) % 3 if self.flap else 0

    def handle(self, body: dict[str, Any], authorization: str) -> tuple[int, dict[str, str], dict[str, Any]]:
        prompt = "\n".join(message["content"] for message in body["messages"])
        key = hashlib.sha256(f"{prompt}|{body.get('seed')}".encode()).hexdigest()[:12]
        with self.lock:
            attempt = self.requests.count(key)
            self.requests.append(key)
        if self.api_key is not None and authorization != f"Bearer {self.api_key}":
            return self._refuse(401, {}, f"invalid credentials {authorization!r}" if self.echo else "bad API key")
        if attempt < self.failures_for(key):
            way = (int(key[6:], 16) + attempt) % 3  # 0: dropped, 1: 503, 2: 503 + Retry-After
            return self._refuse(503 if way else DROPPED, {"Retry-After": "0"} if way == 2 else {}, "no backend")
        time.sleep(self.delay_seconds)
        question = QUESTION.search(prompt)
        answer = str(int(question.group(1)) + int(question.group(2))) if question else "?"
        with self.lock:
            self.answered.append(key)
        message = {"role": "assistant", "content": f"{answer} [ref {key}]"}
        usage = {"prompt_tokens": 8, "completion_tokens": 3, "total_tokens": 11}
        choice = {"index": 0, "message": message, "finish_reason": "stop"}
        return 200, {}, {"object": "chat.completion", "model": body["model"], "choices": [choice], "usage": usage}

    def _refuse(self, status: int, headers: dict[str, str], text: str) -> tuple[int, dict[str, str], dict[str, Any]]:
        with self.lock:
            self.refused[status] += 1
        return status, headers, {"error": {"message": text}}


def _handler(endpoint: Endpoint) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def do_GET(self) -> None:
            self._send(200, {}, {"object": "list", "data": [{"id": "fake", "object": "model", "owned_by": "tests"}]})

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode()
            with endpoint.lock:
                endpoint.bodies.append(raw)
            status, headers, payload = endpoint.handle(json.loads(raw), self.headers.get("Authorization", ""))
            if status == DROPPED:
                self.close_connection = True  # no answer at all: the client sees the connection close
                return
            self._send(status, headers, payload)

        def _send(self, status: int, headers: dict[str, str], payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            for name, value in {**headers, "Content-Type": "application/json"}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet: the test counts requests itself

    return Handler


@contextmanager
def serve_endpoint(state: Endpoint) -> Iterator[Endpoint]:
    """Serve ``state`` on a free loopback port (``state.url``) for the ``with`` block."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    """A fake OpenAI-compatible endpoint on a free loopback port."""
    with serve_endpoint(Endpoint()) as state:
        yield state


def experiment_config(tmp_path: Path, rows: int, concurrency: int) -> Path:
    """A three-variant arithmetic experiment whose answers a ``contains`` scorer grades."""
    variants = [
        {"name": "plain", "template": "{{ input }}"},
        {"name": "polite", "template": "Please answer. {{ input }}"},
        {"name": "terse", "template": "Number only. {{ input }}"},
    ]
    dataset = [{"input": f"What is {i} + {i % 7}?", "expected": str(i + i % 7)} for i in range(rows)]
    spec = {
        "target": {"url": "http://unused.invalid/v1", "model": "fake", "api": "chat"},
        "control": "plain",
        "variants": variants,
        "dataset": {"rows": dataset},
        "scorers": [{"name": "contains", "type": "contains"}],
        "primaryMetric": "contains",
        "concurrency": concurrency,
    }
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "experiment.yaml"
    manifest = {"apiVersion": "kubellm.io/v1alpha1", "kind": "PromptExperiment", "metadata": {"name": "faults"}}
    path.write_text(yaml.safe_dump(run_document({**manifest, "spec": spec})))
    return path


def start_experiment(config: Path, url: str, output: Path, **env: str) -> subprocess.Popen[str]:
    """``kubellm experiment`` as a subprocess (stdout and stderr piped)."""
    command = [str(KUBELLM), "experiment", "--config", str(config), "--endpoint", url, "--output", str(output)]
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **env}
    )


def _finished_keys(log: Path) -> set[str]:
    """Request keys with an answer in ``requests.jsonl`` (a line cut short by the kill is skipped)."""
    keys = set()
    for line in log.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        found = KEY.search(record.get("output") or "")
        if found and "error" not in record:
            keys.add(found.group(1))
    return keys


def _wait_until_quiet(endpoint: Endpoint, quiet_seconds: float = 0.5) -> None:
    """Until no request arrived for a while (the dead client's last ones may still be in flight)."""
    seen, since = len(endpoint.requests), time.monotonic()
    while time.monotonic() - since < quiet_seconds:
        time.sleep(0.05)
        if len(endpoint.requests) != seen:
            seen, since = len(endpoint.requests), time.monotonic()


def test_killed_experiment_resumes_without_repeating_finished_requests(
    endpoint: Endpoint, tmp_path: Path, figure: RecordFigure
) -> None:
    rows, output = 40, tmp_path / "out"
    total = 3 * rows
    config = experiment_config(tmp_path, rows, concurrency=4)
    endpoint.delay_seconds = 0.05
    first = start_experiment(config, endpoint.url, output)
    deadline = time.monotonic() + 60
    while len(endpoint.answered) < total // 4 and time.monotonic() < deadline and first.poll() is None:
        time.sleep(0.005)
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=10)
    _wait_until_quiet(endpoint)
    finished = _finished_keys(output / "requests.jsonl")
    sent_before = len(endpoint.requests)
    assert 0 < len(finished) < total, "the kill should land mid-run"

    endpoint.delay_seconds = 0.0
    second = start_experiment(config, endpoint.url, output)
    _, err = second.communicate(timeout=120)
    assert second.returncode == 0, err
    rerun = endpoint.requests[sent_before:]
    repeated = sum(key in finished for key in rerun)
    print(f"\n[experiment] killed after {len(finished)}/{total} answers; the rerun sent {len(rerun)}")
    figure("experiments", "finished requests sent again after SIGKILL", repeated, "0", repeated == 0)
    in_flight = len(set(endpoint.requests[:sent_before]) - finished)
    figure("experiments", "requests in flight at the kill, sent again", in_flight)
    result = json.loads((output / "result.json").read_text())
    completed = result["progress"]["completed"]
    figure("experiments", "killed run complete on rerun", f"{completed}/{total}", str(total), completed == total)
    assert repeated == 0
    assert len(rerun) == len(set(rerun)) == total - len(finished)
    assert result["progress"]["completed"] == total
    assert {r["errors"] for r in result["results"]} == {0}


def test_flapping_endpoint_is_retried_and_the_experiment_completes(
    endpoint: Endpoint, tmp_path: Path, figure: RecordFigure
) -> None:
    rows, output = 16, tmp_path / "out"
    total = 3 * rows
    endpoint.flap = True
    started = time.monotonic()
    process = start_experiment(experiment_config(tmp_path, rows, concurrency=8), endpoint.url, output)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    result = json.loads((output / "result.json").read_text())
    errors = sum(r["errors"] for r in result["results"])
    refused, dropped = endpoint.refused[503], endpoint.refused[DROPPED]
    attempts = len(endpoint.requests)
    print(f"\n[experiment] of {attempts} attempts {refused} got 503, {dropped} were dropped; {errors} requests failed")
    figure("experiments", "failed attempts while flapping (503 / dropped)", f"{refused} / {dropped} of {attempts}")
    figure("experiments", "requests failed under a flapping endpoint", errors, "0", errors == 0)
    figure("experiments", "flapping run wall time (s)", time.monotonic() - started)
    assert refused >= rows and dropped >= rows // 2  # the flapping was real
    assert errors == 0 and result["progress"]["completed"] == total
    assert len(endpoint.answered) == len(set(endpoint.answered)) == total
