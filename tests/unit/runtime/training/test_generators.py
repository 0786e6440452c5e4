"""The models behind data augmentation (a server through a mock transport, a dummy model in-process),
and where new rows land in prepare_data: the training split only."""

from __future__ import annotations

import asyncio
import io
import json
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from kubellm.contract.training import AugmentationConfig, AugmentationServer, TrainingRun
from kubellm.runtime.models.loading import load_model
from kubellm.runtime.models.tokenizer import build_byte_tokenizer
from kubellm.runtime.training import pipeline
from kubellm.runtime.training.augmentation import Output, Request, RowGenerator, Seed
from kubellm.runtime.training.errors import AugmentationError
from kubellm.runtime.training.generators import LocalGenerator, ServerGenerator, server_request
from kubellm.runtime.training.outputs import QUALITY_FILE
from kubellm.runtime.training.reporting import Reporter

MODEL = "dummy://llama?hidden_size=48&intermediate_size=96&num_attention_heads=4&seed=1"
SERVER = AugmentationServer(url="http://llm.test/v1", model="support")


def _requests(count: int) -> list[Request]:
    return [
        Request(n, Seed(f"d:{n}", f"question {n}", "answer"), f"Rewrite: question {n}") for n in range(1, count + 1)
    ]


def test_a_server_request_is_a_chat_completion_with_a_seed_per_row() -> None:
    config = AugmentationConfig(temperature="0.5", max_tokens=64)
    body = server_request("support", config, 10, _requests(3)[2])
    assert body == {
        "model": "support",
        "messages": [{"role": "user", "content": "Rewrite: question 3"}],
        "max_tokens": 64,
        "temperature": 0.5,
        "seed": 13,
        "stream": False,
    }


def test_the_server_answers_and_a_failed_request_is_an_output_with_its_error() -> None:
    seen: list[dict[str, Any]] = []

    def handle(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append({"auth": request.headers.get("authorization"), "url": str(request.url), **body})
        if body["seed"] == 2:
            return httpx.Response(400, json={"error": {"message": "prompt too long"}})
        text = "Reworded " + body["messages"][0]["content"]
        return httpx.Response(200, json={"choices": [{"message": {"content": text}, "finish_reason": "stop"}]})

    generator = ServerGenerator(SERVER, AugmentationConfig(), 0, "sk-1", transport=httpx.MockTransport(handle))
    outputs = generator.generate(_requests(3))
    assert outputs == [
        Output("Reworded Rewrite: question 1"),
        Output(None, "HTTP 400: prompt too long"),
        Output("Reworded Rewrite: question 3"),
    ]
    assert {entry["auth"] for entry in seen} == {"Bearer sk-1"}
    assert {entry["url"] for entry in seen} == {"http://llm.test/v1/chat/completions"}


def test_an_unreachable_server_stops_the_job(monkeypatch: pytest.MonkeyPatch) -> None:
    async def no_wait(_: float) -> None:
        return None

    monkeypatch.setattr(asyncio, "sleep", no_wait)  # the client's backoff between retries

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    generator = ServerGenerator(SERVER, AugmentationConfig(), 0, transport=httpx.MockTransport(refuse))
    with pytest.raises(AugmentationError, match=r"cannot reach http://llm\.test/v1"):
        generator.generate(_requests(1))


@pytest.fixture(scope="module")
def dummy() -> Any:
    return load_model(MODEL)


def test_the_base_model_generates_in_process_reproducibly(dummy: Any) -> None:
    config = AugmentationConfig(temperature="0.8", max_tokens=6)
    generator = LocalGenerator(dummy.model, dummy.tokenizer, config, seed=3)
    first = generator.generate(_requests(3))
    assert all(output.text is not None and output.error is None for output in first)
    assert generator.generate(_requests(3)) == first
    greedy = AugmentationConfig(temperature="0", max_tokens=6)
    by_seed = [LocalGenerator(dummy.model, dummy.tokenizer, greedy, seed).generate(_requests(2)) for seed in (3, 99)]
    assert by_seed[0] == by_seed[1]  # greedy decoding ignores the seed


def test_an_instruction_too_long_for_the_model_fails_alone(dummy: Any) -> None:
    context = dummy.model.config.max_position_embeddings
    config = AugmentationConfig(max_tokens=4)
    requests = _requests(2)
    long = Request(3, requests[0].seed, "word " * context)
    outputs = LocalGenerator(dummy.model, dummy.tokenizer, config, seed=0).generate([requests[0], long, requests[1]])
    assert outputs[1] == Output(None, "the instruction and maxTokens exceed the model's context length")
    assert outputs[0].text is not None and outputs[2].text is not None


class Rewriter:
    """A stand-in model: every answer is a new wording of the seed row's prompt."""

    batch_size = 4

    def generate(self, requests: Sequence[Request]) -> list[Output]:
        return [Output(f"Please tell me (variant {request.number}): {request.seed.prompt}") for request in requests]


@contextmanager
def _rewriter(job: TrainingRun) -> Iterator[RowGenerator]:
    yield Rewriter()


def test_new_rows_go_to_the_training_split_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data.jsonl"
    data.write_text(
        "".join(json.dumps({"prompt": f"What is {n} + 1?", "response": f" {n + 1}"}) + "\n" for n in range(20))
    )
    spec = {
        "baseModel": {"uri": MODEL},
        "dataset": {"uri": f"file://{data}", "validationPercent": 20},
        "training": {"method": "full", "maxSeqLength": 64},
    }
    tokenizer = build_byte_tokenizer()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    quiet = Reporter(None, stream=io.StringIO())
    plain = pipeline.prepare_data(TrainingRun.model_validate(spec), tokenizer, tmp_path / "a", quiet)
    monkeypatch.setattr(pipeline, "open_generator", _rewriter)
    job = TrainingRun.model_validate({**spec, "dataAugmentation": {"rowsPerExample": 2}})
    augmented = pipeline.prepare_data(job, tokenizer, tmp_path / "b", quiet)
    assert augmented.evaluation == plain.evaluation
    assert augmented.train[: len(plain.train)] == plain.train
    new = augmented.train[len(plain.train) :]
    assert len(new) == 2 * len(plain.train) == 32
    texts = [str(tokenizer.decode(example.input_ids)) for example in new]
    assert all(text.startswith("Please tell me (variant ") for text in texts)
    question = re.compile(r"What is \d+ \+ 1\?")
    trained_on = {question.findall(text)[0] for text in texts}
    held_out = {question.findall(str(tokenizer.decode(example.input_ids)))[0] for example in plain.evaluation}
    assert len(trained_on) == 16 and len(held_out) == 4
    assert not trained_on & held_out
    quality = json.loads((tmp_path / "b" / QUALITY_FILE).read_text())
    assert quality["rows"] == 20 and quality["kept"] == 20
    assert quality["augmentation"] == {
        "model": MODEL,
        "requested": 32,
        "generated": 32,
        "invalid": 0,
        "failed": 0,
        "duplicates": 0,
        "failedChecks": 0,
        "kept": 32,
    }
    assert augmented.quality.augmentation is not None
