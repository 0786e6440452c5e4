"""``kubellm experiment`` end to end against a scripted OpenAI-compatible server on loopback.

The server answers arithmetic questions. Its answers are deterministic (a hash of the prompt and
the seed) and planted: prompts that carry worked examples (the few-shot variant) or the
instruction "Add carefully." are answered correctly 95% of the time, the others half of the time,
so the few-shot variant must win, significantly, and a prompt search must find that instruction.
The server counts every request, which is how the tests see that a killed run resumes without
repeating the requests it had finished.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
import pytest
import uvicorn
import yaml
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from kubellm.runtime.experiments import command
from tests.harness.documents import run_document

pytestmark = pytest.mark.integration

QUESTION = re.compile(r"What is (\d+) \+ (\d+)\?\s*$")
ROWS = 40
PLANTED_INSTRUCTION = "Add carefully."


@dataclass
class Script:
    """What the scripted server does and what it saw."""

    delay_seconds: float = 0.0
    throttle_first: int = 0  # answer the first N requests with 429 + Retry-After: 0
    requests: list[tuple[str, int]] = field(default_factory=list)
    cache_headers: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, prompt: str, seed: int, cache_control: str) -> int:
        with self.lock:
            self.requests.append((prompt, seed))
            self.cache_headers[cache_control] += 1
            return len(self.requests)


def _answer(prompt: str, seed: int) -> str:
    question = QUESTION.search(prompt)
    if question is None:
        return "I do not know."
    truth = int(question.group(1)) + int(question.group(2))
    coin = int(hashlib.sha256(f"{prompt}|{seed}".encode()).hexdigest()[:8], 16) / 16**8
    correct = coin < (0.95 if "Examples:" in prompt or PLANTED_INSTRUCTION in prompt else 0.5)
    value = truth if correct else truth + 1
    if "step by step" in prompt:
        return f"First I add the numbers carefully.\nAnswer: {value}"
    return str(value)


def _app(script: Script) -> FastAPI:
    app = FastAPI()

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": "scripted", "object": "model", "owned_by": "tests"}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> JSONResponse:
        body = await request.json()
        prompt = "\n".join(message["content"] for message in body["messages"])
        count = script.record(prompt, int(body.get("seed", 0)), request.headers.get("cache-control", ""))
        if count <= script.throttle_first:
            return JSONResponse({"error": {"message": "busy"}}, status_code=429, headers={"Retry-After": "0"})
        if script.delay_seconds:
            time.sleep(script.delay_seconds)  # a sync sleep in the loop: one request at a time, like a busy server
        text = _answer(prompt, int(body.get("seed", 0)))
        usage = {"prompt_tokens": len(prompt.split()), "completion_tokens": len(text.split())}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        return JSONResponse(
            {
                "id": f"chatcmpl-{count}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": usage,
            }
        )

    return app


@dataclass
class ScriptedServer:
    url: str
    script: Script


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    script = Script()
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on such sockets, and without it
    # every response waits out the client's delayed ACK (about 40 ms).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(_app(script), log_level="warning", lifespan="off", ws="none")
    instance = uvicorn.Server(config)
    thread = threading.Thread(target=instance.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not instance.started and time.monotonic() < deadline:
        time.sleep(0.02)
    yield ScriptedServer(url=f"http://127.0.0.1:{sock.getsockname()[1]}/v1", script=script)
    instance.should_exit = True
    thread.join(timeout=10)
    sock.close()


def _manifest(rows: int = ROWS, bad_template: bool = False) -> dict[str, Any]:
    few_shot = "Examples:\nWhat is 1 + 1? 2\nWhat is 2 + 5? 7\n\nWhat is {{ vars.a }} + {{ vars.b }}?"
    return {
        "apiVersion": "kubellm.io/v1alpha1",
        "kind": "PromptExperiment",
        "metadata": {"name": "arithmetic"},
        "spec": {
            "target": {"url": "http://unused.invalid/v1", "model": "scripted", "api": "chat"},
            "timeoutSeconds": 600,
            "control": "zero-shot",
            "variants": [
                {"name": "zero-shot", "template": "Answer with a number. {{ input }}"},
                {
                    "name": "few-shot",
                    "style": "fewShot",
                    "examples": [{"input": "What is 1 + 1?", "output": "2"}],
                    "template": few_shot.replace("vars.b", "vars.missing") if bad_template else few_shot,
                },
                {
                    "name": "cot",
                    "style": "chainOfThought",
                    "system": "You are careful.",
                    "template": "Think step by step. {{ input }}",
                },
            ],
            "dataset": {
                "rows": [
                    {"input": f"What is {i} + {i * 3 % 17}?", "expected": str(i + i * 3 % 17), "vars": _vars(i)}
                    for i in range(rows)
                ]
            },
            "scorers": [
                {"name": "exact", "type": "exact"},
                {"name": "number", "type": "regex", "pattern": r"\d", "weight": "0.5"},
                {"name": "latency", "type": "latency", "weight": "0"},
            ],
            "primaryMetric": "exact",
            "concurrency": 4,
            "alpha": "0.05",
            "correction": "holm",
        },
    }


def _vars(i: int) -> dict[str, str]:
    return {"a": str(i), "b": str(i * 3 % 17)}


def _write_config(tmp_path: Path, manifest: dict[str, Any]) -> Path:
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(run_document(manifest)), encoding="utf-8")
    return path


def _args(config: Path, endpoint: str, output: Path, *extra: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    return parser.parse_args(["--config", str(config), "--endpoint", endpoint, "--output", str(output), *extra])


def test_the_scripted_server_speaks_openai(server: ScriptedServer) -> None:
    """The official client works against the test server, so the runner is tested against the real protocol."""
    client = openai.OpenAI(base_url=server.url, api_key="unused")
    assert [model.id for model in client.models.list()] == ["scripted"]
    answer = client.chat.completions.create(
        model="scripted", messages=[{"role": "user", "content": "What is 2 + 2?"}], seed=1
    )
    assert answer.choices[0].message.content in {"4", "5"}
    assert answer.usage is not None and answer.usage.completion_tokens == 1


def test_planted_variant_wins_significantly(
    server: ScriptedServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server.script.throttle_first = 2  # the first requests get 429: retried, not failed
    config = _write_config(tmp_path, _manifest())
    output = tmp_path / "out"

    assert command.run(_args(config, server.url, output)) == 0

    result = json.loads((output / "result.json").read_text())
    print(f"\n[experiment] {result['summary']}")
    assert result["winner"] == "few-shot"
    assert result["progress"] == {"completed": 3 * ROWS, "total": 3 * ROWS, "percent": 100}
    few_shot = next(c for c in result["comparisons"] if c["variant"] == "few-shot")
    assert few_shot["significant"] and few_shot["adjustedPValue"] < 0.01 and few_shot["difference"] > 0.3
    by_name = {r["name"]: r for r in result["results"]}
    assert {r["errors"] for r in by_name.values()} == {0}
    exact = {name: next(m for m in r["metrics"] if m["name"] == "exact") for name, r in by_name.items()}
    assert exact["few-shot"]["ciLow"] > exact["zero-shot"]["ciHigh"]
    assert 0.2 < exact["cot"]["mean"] < 0.8  # its final answer was extracted from the reasoning
    assert by_name["cot"]["latencyP50Seconds"] is not None and by_name["cot"]["completionTokens"] > 0
    report = (output / "report.md").read_text()
    assert "few-shot (winner)" in report and "| few-shot vs zero-shot |" in report
    assert (output / "scores.png").read_bytes()[:4] == b"\x89PNG"
    assert "few-shot (winner)" in capsys.readouterr().out
    assert len(server.script.requests) == 3 * ROWS + 2
    assert server.script.cache_headers == Counter({"no-cache": 3 * ROWS + 2})
    seeds = Counter(seed for _, seed in set(server.script.requests))
    assert seeds == dict.fromkeys(range(ROWS), 3)  # paired: one seed per row, the same for the 3 variants


def test_early_stopping_ends_once_the_winner_is_clear(server: ScriptedServer, tmp_path: Path) -> None:
    manifest = _manifest()
    manifest["spec"]["earlyStopping"] = {"looks": 4}
    output = tmp_path / "out"
    assert command.run(_args(_write_config(tmp_path, manifest), server.url, output)) == 0
    result = json.loads((output / "result.json").read_text())
    print(f"\n[experiment] early stopping: {result['summary']}")
    sequential = result["sequential"]
    assert result["winner"] == "few-shot"
    assert sequential["stoppedEarly"] and sequential["look"] < 4 and sequential["rows"] < ROWS
    assert result["summary"].startswith(f"stopped early (look {sequential['look']} of 4")
    assert len(server.script.requests) == 3 * sequential["rows"]  # no row after the stop was sent
    assert float(sequential["level"]) < 0.05  # an early look is tested strictly


def test_unreachable_endpoint_is_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}/v1"
    config = _write_config(tmp_path, _manifest(rows=3))

    code = command.run(_args(config, closed, tmp_path / "out", "--max-retries", "1"))

    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert len(err) == 1 and err[0].startswith(f"kubellm experiment: cannot reach {closed}")


def test_template_error_names_variant_and_variable(
    server: ScriptedServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _write_config(tmp_path, _manifest(rows=3, bad_template=True))

    code = command.run(_args(config, server.url, tmp_path / "out"))

    err = capsys.readouterr().err.strip()
    assert code == 2
    assert (
        err == "kubellm experiment: variant 'few-shot': template uses undefined variable 'vars.missing' (dataset row 1)"
    )
    assert server.script.requests == []


_RUN_COMMAND = """
import argparse, sys
from kubellm.runtime.experiments import command
parser = argparse.ArgumentParser()
command.add_arguments(parser)
sys.exit(command.run(parser.parse_args(sys.argv[1:])))
"""


def test_killed_run_resumes_without_repeating_finished_requests(server: ScriptedServer, tmp_path: Path) -> None:
    server.script.delay_seconds = 0.02
    config = _write_config(tmp_path, _manifest())
    output = tmp_path / "out"
    argv = ["--config", str(config), "--endpoint", server.url, "--output", str(output)]
    process = subprocess.Popen([sys.executable, "-c", _RUN_COMMAND, *argv], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while len(server.script.requests) < 30 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=10)
    _wait_until_quiet(server.script)  # requests the dead client had already sent may still be in the server
    finished = _logged_keys(output / "requests.jsonl")
    first_run = list(server.script.requests)
    assert 20 <= len(finished) < 3 * ROWS, "the kill should land mid-run"

    server.script.delay_seconds = 0.0
    assert command.run(_args(config, server.url, output)) == 0

    resumed = server.script.requests[len(first_run) :]
    print(f"\n[resume] killed after {len(finished)} answers; the rerun sent {len(resumed)} of {3 * ROWS}")
    # The rerun sent each unfinished request once and nothing else: with every request answered
    # in the end, no finished one can be among them.
    assert len(resumed) == len(set(resumed)) == 3 * ROWS - len(finished)
    in_flight = len(set(first_run)) - len(finished)  # sent by the killed run, never logged
    assert len(set(first_run) & set(resumed)) == in_flight
    result = json.loads((output / "result.json").read_text())
    assert result["progress"]["completed"] == 3 * ROWS and result["winner"] == "few-shot"


def _wait_until_quiet(script: Script, quiet_seconds: float = 0.5) -> None:
    seen, since = len(script.requests), time.monotonic()
    while time.monotonic() - since < quiet_seconds:
        time.sleep(0.05)
        if len(script.requests) != seen:
            seen, since = len(script.requests), time.monotonic()


def _logged_keys(path: Path) -> set[tuple[str, int, int]]:
    keys = set()
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by the kill
        if "error" not in record:
            keys.add((record["variant"], record["row"], record["sample"]))
    return keys


def _search_manifest(rows: int) -> dict[str, Any]:
    manifest = _manifest(rows)
    spec = manifest["spec"]
    spec["variants"] = spec["variants"][:1]  # the control alone
    spec["optimize"] = {
        "instructions": ["Be brief.", PLANTED_INSTRUCTION, "Answer now."],
        "proposals": {"count": 2},
        "fewShot": {"maxExamples": 2, "trainFraction": "0.2"},
        "trials": 10,
        "searchFraction": "0.4",
        "seed": 3,
    }
    return manifest


def _question(prompt: str) -> str:
    found = QUESTION.search(prompt)
    assert found is not None, prompt
    return found.group(0)


def test_prompt_search_finds_the_planted_instruction_and_confirms_it_on_held_out_rows(
    server: ScriptedServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = 60
    config = _write_config(tmp_path, _search_manifest(rows))
    output = tmp_path / "out"

    assert command.run(_args(config, server.url, output)) == 0

    result = json.loads((output / "result.json").read_text())
    print(f"\n[prompt search] {result['summary']}")
    found = result["optimization"]
    assert found["splits"] == {"train": 12, "search": 24, "heldOut": 24}
    assert found["completed"] == 10 and found["bestTrial"] > 0
    assert found["instruction"] == PLANTED_INSTRUCTION
    assert found["bestScore"] > found["controlScore"] + 0.2
    assert result["winner"] == "optimized"
    assert {r["name"]: r["samples"] for r in result["results"]} == {"zero-shot": 24, "optimized": 24}
    variant = yaml.safe_load((output / found["variantKey"]).read_text())
    assert variant["name"] == "optimized" and variant["template"].startswith("{% raw %}Add carefully.")
    assert found["template"] == variant["template"]
    report = (output / "report.md").read_text()
    assert "## Prompt search" in report and "24 held out" in report
    assert (output / "search.png").read_bytes()[:4] == b"\x89PNG"
    assert "optimized-variant.yaml" in capsys.readouterr().out

    # The split the winner was chosen on and the rows it was confirmed on never share a question.
    asked = [_question(prompt) for prompt, _ in server.script.requests[2:]]  # after the two proposals
    searched, confirmed = set(asked[: -2 * 24]), set(asked[-2 * 24 :])
    assert len(searched) == 24 and len(confirmed) == 24
    assert not searched & confirmed

    sent = len(server.script.requests)
    assert command.run(_args(config, server.url, output)) == 0  # a rerun resumes: nothing is asked again
    assert len(server.script.requests) == sent
    assert json.loads((output / "result.json").read_text())["optimization"] == found
