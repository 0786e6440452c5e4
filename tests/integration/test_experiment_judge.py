"""The judge scorer end to end: a scripted target and a scripted judge, both OpenAI-compatible, on loopback.

The target answers arithmetic questions; the ``careful`` variant is right 90% of the time in a
short answer, the ``rambling`` one half of the time in a long one. The judge reads the reference
and the answer from its prompt and grades 5 when the answer holds the reference's number, 1 when
not; its first reply to some prompts has no grade (the runner must ask again), and it never
grades the answers to row 0 (failed judgements, counted, not scored 0). Both servers count their
requests, which is how the tests see that a restarted run and each early-stopping look ask the
judge nothing twice.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvicorn
import yaml
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from kubellm.runtime.experiments import command
from tests.harness.documents import run_document

pytestmark = pytest.mark.integration

QUESTION = re.compile(r"What is (\d+) \+ (\d+)\?")
REFERENCE = re.compile(r"## Reference answer\n(.*?)(?:\n\n|$)", re.DOTALL)
ANSWER = re.compile(r"## Answer to grade\n(.*?)(?:\n\n|$)", re.DOTALL)
ROWS = 40


@dataclass
class Counted:
    """The requests a scripted server saw."""

    prompts: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, prompt: str) -> int:
        with self.lock:
            self.prompts.append(prompt)
            return len(self.prompts)


def _coin(text: str) -> float:
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) / 16**8


def _target_answer(prompt: str, seed: int) -> str:
    question = QUESTION.search(prompt)
    if question is None:
        return "I do not know."
    truth = int(question.group(1)) + int(question.group(2))
    careful = "carefully" in prompt
    value = truth if _coin(f"{prompt}|{seed}") < (0.9 if careful else 0.5) else truth + 1
    if careful:
        return str(value)
    return f"Well, there are many ways to think about adding numbers, and after some thought I believe it is {value}."


def _judge_reply(messages: list[dict[str, str]]) -> str:
    prompt = messages[0]["content"]
    if "What is 0 + 0?" in prompt:
        return "I would rather not say."  # never a grade: a failed judgement
    if len(messages) == 1 and _coin(prompt) < 0.15:
        return "This answer looks reasonable to me."  # no grade: the runner asks again
    reference, answer = REFERENCE.search(prompt), ANSWER.search(prompt)
    assert reference is not None and answer is not None
    right = re.search(rf"\b{re.escape(reference.group(1).strip())}\b", answer.group(1)) is not None
    return f"Grade: {5 if right else 1}"


def _completion(body: dict[str, Any], text: str, count: int) -> JSONResponse:
    choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
    return JSONResponse(
        {
            "id": f"chatcmpl-{count}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"],
            "choices": [choice],
            "usage": {"prompt_tokens": 10, "completion_tokens": len(text.split()), "total_tokens": 20},
        }
    )


def _app(name: str, counted: Counted, judge: bool) -> FastAPI:
    app = FastAPI()

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": name, "object": "model", "owned_by": "tests"}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> JSONResponse:
        body = await request.json()
        messages = body["messages"]
        count = counted.record("\n".join(m["content"] for m in messages))
        if judge:
            assert body["model"] == "grader" and body["temperature"] == 0.0
            return _completion(body, _judge_reply(messages), count)
        prompt = "\n".join(m["content"] for m in messages)
        return _completion(body, _target_answer(prompt, int(body.get("seed", 0))), count)

    return app


@contextmanager
def _serve(app: FastAPI) -> Iterator[str]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # TCP_NODELAY, see the runner test
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off", ws="none"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@dataclass
class Servers:
    target: str
    judge: str
    target_requests: Counted
    judge_requests: Counted


@pytest.fixture
def servers() -> Iterator[Servers]:
    target, judge = Counted(), Counted()
    with _serve(_app("scripted", target, judge=False)) as target_url, _serve(_app("grader", judge, True)) as judge_url:
        yield Servers(target_url, judge_url, target, judge)


def _manifest(judge_url: str, early_stopping: bool = False) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "target": {"url": "http://unused.invalid/v1", "model": "scripted", "api": "chat"},
        "control": "rambling",
        "variants": [
            {"name": "rambling", "template": "Answer. {{ input }}"},
            {"name": "careful", "template": "Answer carefully with just the number. {{ input }}"},
        ],
        "dataset": {"rows": [{"input": f"What is {i} + {i % 7}?", "expected": str(i + i % 7)} for i in range(ROWS)]},
        "scorers": [
            {"name": "quality", "type": "judge", "judge": {"url": judge_url, "rubric": "The sum is right."}},
            {"name": "latency", "type": "latency", "weight": "0"},
        ],
        "primaryMetric": "quality",
        "concurrency": 4,
    }
    if early_stopping:
        spec["earlyStopping"] = {"looks": 4}
    return {
        "apiVersion": "kubellm.io/v1alpha1",
        "kind": "PromptExperiment",
        "metadata": {"name": "judged"},
        "spec": spec,
    }


def _run(servers: Servers, tmp_path: Path, output: Path, early_stopping: bool = False) -> dict[str, Any]:
    config = tmp_path / "experiment.yaml"
    config.write_text(yaml.safe_dump(run_document(_manifest(servers.judge, early_stopping))), encoding="utf-8")
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    argv = ["--config", str(config), "--endpoint", servers.target, "--output", str(output)]
    assert command.run(parser.parse_args(argv)) == 0
    result: dict[str, Any] = json.loads((output / "result.json").read_text())
    return result


def _first_asks(counted: Counted) -> list[str]:
    """The judge prompts as first sent (a retry carries the reply and a reminder after them)."""
    return [prompt for prompt in counted.prompts if "Your reply has no grade" not in prompt]


def test_the_judge_ranks_the_planted_better_variant_higher(servers: Servers, tmp_path: Path) -> None:
    output = tmp_path / "out"
    result = _run(servers, tmp_path, output)
    print(f"\n[judge] {result['summary']}")
    assert result["winner"] == "careful"
    quality = {r["name"]: next(m for m in r["metrics"] if m["name"] == "quality") for r in result["results"]}
    assert quality["careful"]["mean"] > quality["rambling"]["mean"] + 0.2
    assert 0.0 <= quality["rambling"]["mean"] <= 1.0
    (judge,) = result["judges"]
    assert judge["failed"] == 2  # row 0, both variants: excluded and counted, never a 0
    assert judge["judged"] == 2 * ROWS - 2
    assert judge["meanGradeReferenceFirst"] is not None and judge["meanGradeReferenceLast"] is not None
    lengths = {v["variant"]: v["meanAnswerChars"] for v in judge["variants"]}
    assert lengths["rambling"] > 5 * lengths["careful"]
    assert judge["lengthGradeCorrelation"] < 0  # here the long answers are the worse ones
    asks = _first_asks(servers.judge_requests)
    assert len(asks) == len(set(asks)) == 2 * ROWS  # one judgement asked per answer
    retries = len(servers.judge_requests.prompts) - len(asks)
    assert retries > 2  # the replies without a grade were asked again (row 0's twice included)
    report = (output / "report.md").read_text()
    assert "## Judges" in report and "mean answer length (chars)" in report
    assert "2 failed judgements" in report


def test_a_restarted_run_asks_the_judge_nothing_it_has_judged(servers: Servers, tmp_path: Path) -> None:
    output = tmp_path / "out"
    first = _run(servers, tmp_path, output)
    asked = len(servers.judge_requests.prompts)
    assert _run(servers, tmp_path, output)["judges"] == first["judges"]
    assert len(servers.judge_requests.prompts) == asked  # everything came from judgements.jsonl
    assert len(servers.target_requests.prompts) == 2 * ROWS

    log = output / "judgements.jsonl"
    lines = log.read_text().splitlines()
    log.write_text("\n".join(lines[: len(lines) // 2]) + "\n")  # as if killed halfway through judging
    _run(servers, tmp_path, output)
    again = _first_asks(servers.judge_requests)[2 * ROWS :]
    assert len(again) == len(lines) - len(lines) // 2  # only the judgements that were lost


def test_each_early_stopping_look_judges_only_the_new_answers(servers: Servers, tmp_path: Path) -> None:
    result = _run(servers, tmp_path, tmp_path / "out", early_stopping=True)
    rows = result["sequential"]["rows"]
    asks = _first_asks(servers.judge_requests)
    assert len(asks) == len(set(asks)) == 2 * rows
    assert result["judges"][0]["judged"] + result["judges"][0]["failed"] == 2 * rows
