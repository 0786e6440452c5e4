"""What the real-model benchmark measures, engine by engine and in this process (see :mod:`benchmarks.real_model`).

- batch-1 decode: a streamed chat reply, tokens after the first over the time they took;
- throughput at each concurrency level on mixed output lengths, and at each level a sequential
  baseline (a sample of the same requests, one at a time, on the same server);
- time to first token and peak resident memory of every server;
- int8 against fp32: weight bytes and greedy token agreement (in-process, same prompts);
- batch-1 requests to kubellm serve, and in-process ``generate`` on the same prompts;
- the memory read bandwidth (best of one thread and every core).
"""

from __future__ import annotations

import gc
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from benchmarks.bandwidth import read_bandwidth
from benchmarks.chat_decode import Reply, streamed_chat
from benchmarks.engines import Engine, peak_rss_mib
from benchmarks.figures import median
from benchmarks.inprocess import Job, scheduler_run, sequential
from benchmarks.load import NO_CACHE, LoadResult, run_load, timed_requests
from benchmarks.processes import ServerFailedError, free_port, running_server

__all__ = [
    "ANSWER_TOKENS",
    "FP32",
    "FP32_EVERY_CORE",
    "FULL",
    "INT8",
    "LLAMA_F32",
    "LLAMA_Q4",
    "LLAMA_Q8",
    "QUESTIONS",
    "QUICK",
    "InProcess",
    "Plan",
    "Served",
    "accuracy",
    "correct",
    "forced_agreement",
    "level_jobs",
    "measure_bandwidth",
    "measure_engine",
    "measure_in_process",
    "question_set",
    "story_prompts",
]

FP32, INT8 = "kubellm serve fp32", "kubellm serve int8"
FP32_EVERY_CORE = "kubellm serve fp32, every core"
"""Measured too when kubellm's default leaves cores unused: what the default thread count costs or saves."""
LLAMA_Q4, LLAMA_F32, LLAMA_Q8 = "llama.cpp Q4_1 (shipped file)", "llama.cpp F32", "llama.cpp Q8_0"
KUBELLM_LLAMACPP, KUBELLM_LLAMACPP_Q8 = "kubellm serve llamacpp Q4_1", "kubellm serve llamacpp Q8_0"
"""kubellm serve with ``--engine llamacpp`` on the shipped Q4_1 file, and on the Q8_0 copy llama.cpp's server gets."""
CHAT_MESSAGE = "Write a long, detailed story about a lighthouse keeper who finds a message in a bottle."
OPENERS = [
    "Once upon a time, in a small village by the sea, there lived an old fisherman who",
    "The spaceship had been drifting for three days when the captain finally",
    "Every morning, before the sun rose over the mountains, the baker",
    "The detective looked at the broken window and said that",
    "In the year 2150, the cities of the world had all",
    "My grandmother always told me that the forest behind our house",
    "The first thing the robot learned about people was that",
    "When the river froze for the first time in a hundred years, the children",
]


@dataclass(frozen=True)
class Plan:
    """How much of each figure one run measures."""

    levels: tuple[int, ...]
    int8_levels: tuple[int, ...]
    requests: int
    lengths: tuple[int, ...]
    baseline_requests: int
    decode_replies: int
    decode_tokens: int
    overhead_prompts: int
    overhead_tokens: int
    agreement_prompts: int
    agreement_tokens: int
    questions: int
    bandwidth_gib: float
    bandwidth_repeats: int

    @property
    def headline(self) -> int:
        """The level the targets speak of: 16 clients, else the widest measured."""
        return 16 if 16 in self.levels else max(self.levels)


FULL = Plan(
    levels=(1, 4, 16, 64),
    int8_levels=(1, 16),
    requests=64,
    lengths=(8, 24, 48, 96),
    baseline_requests=8,
    decode_replies=3,
    decode_tokens=128,
    overhead_prompts=6,
    overhead_tokens=64,
    agreement_prompts=16,
    agreement_tokens=64,
    questions=64,
    bandwidth_gib=2.0,
    bandwidth_repeats=5,
)
QUICK = Plan(
    levels=(1, 4),
    int8_levels=(1, 4),
    requests=8,
    lengths=(8, 16, 24, 32),
    baseline_requests=4,
    decode_replies=1,
    decode_tokens=32,
    overhead_prompts=2,
    overhead_tokens=16,
    agreement_prompts=4,
    agreement_tokens=16,
    questions=8,
    bandwidth_gib=0.5,
    bandwidth_repeats=2,
)


def story_prompts(count: int) -> list[str]:
    """Distinct story openings: a real model continues them rather than stopping at once."""
    return [f"Story {index}. {OPENERS[index % len(OPENERS)]}" for index in range(count)]


def level_jobs(plan: Plan, clients: int) -> list[Job]:
    """The requests of one level: at least ``plan.requests`` (one per client at least), lengths cycling."""
    count = max(plan.requests, clients)
    return [(prompt, plan.lengths[i % len(plan.lengths)]) for i, prompt in enumerate(story_prompts(count))]


# --- one server -------------------------------------------------------------------------------------


@dataclass
class Served:
    """What one server measured, or why it could not."""

    engine: str
    family: str
    replies: list[Reply] = field(default_factory=list)
    levels: dict[int, LoadResult] = field(default_factory=dict)
    baselines: dict[int, LoadResult] = field(default_factory=dict)
    per_token: list[tuple[float, int]] = field(default_factory=list)
    """Batch-1 non-streamed requests: (seconds, tokens generated); measured on kubellm fp32 only."""
    peak_rss_mib: float = float("nan")
    error: str = ""

    def decode_tps(self) -> float | None:
        """Median batch-1 decode tokens/s over the streamed replies."""
        rates = [r.decode_tokens_per_second for r in self.replies if not math.isnan(r.decode_tokens_per_second)]
        return median(rates) if rates else None

    def tps(self, clients: int) -> float | None:
        """Throughput at ``clients`` concurrent clients."""
        result = self.levels.get(clients)
        return None if result is None else result.tokens_per_second

    def baseline_tps(self, clients: int) -> float | None:
        """The sequential baseline measured at that level."""
        result = self.baselines.get(clients)
        return None if result is None else result.tokens_per_second


def _warm_up(url: str, model: str) -> None:
    warm = [(prompt, 4) for prompt in story_prompts(4)]
    run_load(url, model, warm, 4)
    run_load(url, model, warm, 1)
    streamed_chat(url, model, CHAT_MESSAGE, 4)


def _levels(url: str, model: str, plan: Plan, levels: tuple[int, ...]) -> tuple[dict[int, LoadResult], ...]:
    measured, baselines = {}, {}
    for clients in levels:
        jobs = level_jobs(plan, clients)
        measured[clients] = run_load(url, model, jobs, clients)
        one_at_a_time = jobs[: plan.baseline_requests]
        baselines[clients] = measured[clients] if clients == 1 else run_load(url, model, one_at_a_time, 1)
    return measured, baselines


def _server_per_token(url: str, model: str, plan: Plan) -> list[tuple[float, int]]:
    prompts = story_prompts(plan.overhead_prompts)

    def body(index: int) -> dict[str, Any]:
        return {"model": model, "prompt": prompts[index], "max_tokens": plan.overhead_tokens, "temperature": 0}

    answers = timed_requests(f"{url}/v1/completions", len(prompts), body, NO_CACHE)
    return [(seconds, int(answer["usage"]["completion_tokens"])) for seconds, answer in answers]


def measure_engine(engine: Engine, plan: Plan, levels: tuple[int, ...], *, overhead: bool = False) -> Served:
    """Start ``engine``, measure decode, every level (and batch-1 requests for the overhead), stop it."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    served = Served(engine.name, engine.family)
    print(f"[benchmarks] real: {engine.name} ...", flush=True)
    try:
        with running_server(engine.argv(port), url, engine.ready_path, engine.env) as process:
            _warm_up(url, engine.model)
            served.replies = [
                streamed_chat(url, engine.model, CHAT_MESSAGE, plan.decode_tokens) for _ in range(plan.decode_replies)
            ]
            served.levels, served.baselines = _levels(url, engine.model, plan, levels)
            served.per_token = _server_per_token(url, engine.model, plan) if overhead else []
            served.peak_rss_mib = peak_rss_mib(process.pid)
    except (ServerFailedError, httpx.HTTPError, OSError, KeyError, ValueError) as error:
        served.error = f"{type(error).__name__}: {' '.join(str(error).split())[:400]}"
    return served


# --- in this process --------------------------------------------------------------------------------


@dataclass
class InProcess:
    """What is measured without a server: bandwidth, weights, int8 agreement, in-process generate."""

    bandwidth: float
    """Bytes per second."""
    weight_bytes: dict[str, int]
    """fp32 / int8 -> bytes of the loaded weights."""
    agreement: float
    """Percent of positions where int8's free-running greedy output equals fp32's (up to the shorter)."""
    forced_agreement: float
    """Percent of positions where int8's next-token choice equals fp32's on fp32's own output."""
    per_token: list[tuple[float, int]]
    """In-process ``generate``, one prompt at a time: (seconds, tokens); the server's prompts and lengths."""
    accuracy: dict[str, float] = field(default_factory=dict)
    """fp32 / int8 / llamacpp -> percent of the question set answered correctly (greedy, in-process)."""


def _engine(source: str, quantization: str, engine: str = "transformers") -> Any:
    from kubellm.contract.schema import ModelSource  # noqa: PLC0415
    from kubellm.contract.serving import ServingConfig  # noqa: PLC0415
    from kubellm.runtime.serving.engine import load_engine  # noqa: PLC0415
    from kubellm.runtime.serving.settings import ServerSettings  # noqa: PLC0415

    serving = ServingConfig.model_validate({"quantization": quantization, "engine": engine})
    return load_engine(ServerSettings(model=ModelSource(uri=source), serving=serving))


QUESTIONS = Path(__file__).resolve().parents[1] / "examples" / "promptexperiment.yaml"
"""The question set: the example PromptExperiment's rows (short factual questions with one-word answers)."""
ANSWER_TOKENS = 16


def question_set() -> list[tuple[str, str]]:
    """(question, expected answer) of every row of the example PromptExperiment's dataset."""
    documents = [doc for doc in yaml.safe_load_all(QUESTIONS.read_text(encoding="utf-8")) if doc]
    spec = next(doc["spec"] for doc in documents if doc.get("kind") == "PromptExperiment")
    return [(str(row["input"]), str(row["expected"])) for row in spec["dataset"]["rows"]]


def correct(answer: str, expected: str) -> bool:
    """Whether the answer contains the expected one as a word (case and punctuation aside)."""
    words = re.findall(r"[\w.]+", answer.lower())
    return expected.lower() in {word.strip(".") for word in words}


def accuracy(engine: Any, questions: list[tuple[str, str]]) -> float:
    """Percent of ``questions`` the engine answers correctly: greedy, as a chat, all at once through its scheduler."""
    prompts = [engine.render_chat([{"role": "user", "content": question}]) for question, _ in questions]
    outputs = scheduler_run(engine, [(prompt, ANSWER_TOKENS) for prompt in prompts], 8)[1]
    answers = [engine.detokenize(ids) for ids in outputs]
    hits = sum(correct(answer, expected) for answer, (_, expected) in zip(answers, questions, strict=True))
    return hits / len(questions) * 100


def forced_agreement(reference: Any, other: Any, prompts: list[list[int]], outputs: list[list[int]]) -> float:
    """Share of positions where both models pick the same next token, fed the reference's own output."""
    import torch  # noqa: PLC0415

    same = total = 0
    with torch.inference_mode():
        for prompt, output in zip(prompts, outputs, strict=True):
            if not output:
                continue
            ids = torch.tensor([prompt + output[:-1]])
            start = len(prompt) - 1
            ours = reference.model(input_ids=ids).logits[0, start:].argmax(-1)
            theirs = other.model(input_ids=ids).logits[0, start:].argmax(-1)
            same += int((ours == theirs).sum())
            total += len(output)
    return same / max(1, total)


def _int8_figures(source: str, plan: Plan) -> tuple[dict[str, int], float, float, dict[str, float]]:
    from benchmarks.quantization import agreement  # noqa: PLC0415

    jobs = [(prompt, plan.agreement_tokens) for prompt in story_prompts(plan.agreement_prompts)]
    fp32, int8 = _engine(source, "none"), _engine(source, "int8")
    reference = scheduler_run(fp32, jobs, len(jobs))[1]
    quantized = scheduler_run(int8, jobs, len(jobs))[1]
    prompts = [fp32.encode(prompt) for prompt, _ in jobs]
    forced = forced_agreement(fp32, int8, prompts, reference)
    weights = {"fp32": int(fp32.info.weight_bytes), "int8": int(int8.info.weight_bytes)}
    questions = question_set()[: plan.questions]
    accuracies = {"fp32": accuracy(fp32, questions), "int8": accuracy(int8, questions)}
    accuracies["llamacpp"] = accuracy(_engine(source, "none", "llamacpp"), questions)
    return weights, agreement(reference, quantized) * 100, forced * 100, accuracies


def _generate_per_token(source: str, plan: Plan, lengths: list[int]) -> list[tuple[float, int]]:
    """In-process ``generate`` on the server's prompts, each asked for as many tokens as the server made."""
    from kubellm.runtime.models.loading import load_model  # noqa: PLC0415

    loaded = load_model(source)
    model = loaded.model.eval()
    prompts = story_prompts(plan.overhead_prompts)
    sequential(model, loaded.tokenizer, [(p, 8) for p in prompts[:2]])  # warm-up
    result = sequential(model, loaded.tokenizer, list(zip(prompts, lengths, strict=True)))
    return [(record.latency, record.tokens) for record in result.records]


def measure_bandwidth(plan: Plan) -> float:
    """The best read bandwidth, bytes/s, on one thread and on every core (a busy machine may favour either)."""
    cores = len(os.sched_getaffinity(0))
    return max(read_bandwidth(plan.bandwidth_gib, plan.bandwidth_repeats, threads) for threads in {1, cores})


def measure_in_process(source: str, plan: Plan, server_lengths: list[int], bandwidth: float) -> InProcess:
    """int8 figures, then in-process generate (each model freed before the next), with the measured bandwidth."""
    weights, agreed, forced, accuracies = _int8_figures(source, plan)
    gc.collect()
    per_token = _generate_per_token(source, plan, server_lengths) if server_lengths else []
    gc.collect()
    return InProcess(bandwidth, weights, agreed, forced, per_token, accuracies)
