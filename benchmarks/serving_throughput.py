"""Serving benchmark (not a test): throughput, batch-1 overhead, cache hits, int8, as ratios of one run.

Starts ``kubellm serve`` (this file with ``--serve``, as a subprocess, so the clients never share
its interpreter) on a dummy Llama, then measures:

1. throughput: ``--clients`` concurrent clients x ``--tokens`` new tokens (greedy, cache bypassed)
   against the server, vs the same prompts one after another through in-process
   ``model.generate``, and vs one in-process left-padded ``generate`` batch; tokens/s counted
   from what was actually generated (a random model may stop early at its end token);
2. batch-1 overhead: one request at a time over HTTP vs one in-process ``generate`` call;
3. cache hits: p50/p99 latency and requests/s of a repeated greedy request over HTTP, vs a
   trivial FastAPI endpoint (same uvicorn, same machine);
4. int8 vs fp32 (in process, through the scheduler, ``--clients`` sequences at once): decode
   tokens/s, weight bytes and greedy token agreement (on random weights greedy choices are
   fragile, so agreement is a lower bound of what a trained model shows).

Not measured here: ``transformers serve --continuous-batching`` (run it by hand on the same model
folder for that column of goals.md).

    .venv/bin/python benchmarks/serving_throughput.py --clients 16 --tokens 64
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import torch

from kubellm.runtime.serving.command import default_torch_threads

DEFAULT_MODEL = (
    "dummy://llama?hidden_size=256&num_hidden_layers=4&num_attention_heads=4&intermediate_size=688"
    "&vocab_size=2048&max_position_embeddings=1024&seed=1"
)
NO_CACHE = {"Cache-Control": "no-cache"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _prompts(count: int) -> list[str]:
    return [f"Question {index}: what is {index} plus {index * 3}? Answer:" for index in range(count)]


# --- the server under test ---------------------------------------------------------------------------


@contextmanager
def running_server(model: str, port: int, max_batch_size: int, threads: int) -> Iterator[str]:
    """``kubellm serve`` in a subprocess; yields its base URL once ready."""
    argv = [sys.executable, __file__, "--serve", "--model", model, "--port", str(port)]
    argv += ["--max-batch-size", str(max_batch_size), "--torch-threads", str(threads)]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, process)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def _wait_ready(url: str, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited: {process.stderr.read() if process.stderr else ''}")
        try:
            if httpx.get(f"{url}/ready", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit("the server did not become ready")


async def _completion(client: httpx.AsyncClient, url: str, prompt: str, tokens: int, headers: dict[str, str]) -> int:
    body = {"model": "model", "prompt": prompt, "max_tokens": tokens, "temperature": 0}
    response = await client.post(f"{url}/v1/completions", json=body, headers=headers)
    response.raise_for_status()
    return int(response.json()["usage"]["completion_tokens"])


async def _concurrent(url: str, prompts: list[str], tokens: int) -> tuple[int, float]:
    async with httpx.AsyncClient(timeout=600) as client:
        started = time.perf_counter()
        counts = await asyncio.gather(*(_completion(client, url, p, tokens, NO_CACHE) for p in prompts))
        return sum(counts), time.perf_counter() - started


async def _one_at_a_time(url: str, prompts: list[str], tokens: int) -> tuple[int, float]:
    async with httpx.AsyncClient(timeout=600) as client:
        started, total = time.perf_counter(), 0
        for prompt in prompts:
            total += await _completion(client, url, prompt, tokens, NO_CACHE)
        return total, time.perf_counter() - started


async def _latencies(url: str, path: str, body: dict[str, Any] | None, count: int) -> list[float]:
    async with httpx.AsyncClient(timeout=60) as client:
        latencies = []
        for _ in range(count):
            started = time.perf_counter()
            response = await (client.post(url + path, json=body) if body else client.get(url + path))
            response.raise_for_status()
            latencies.append(time.perf_counter() - started)
        return latencies


# --- in-process baselines ---------------------------------------------------------------------------


def _generate(model: Any, tokenizer: Any, prompts: list[str], tokens: int) -> int:
    """Greedy ``generate`` on a left-padded batch of prompts; tokens generated before each end token."""
    tokenizer.padding_side = "left"
    inputs = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.inference_mode():
        output = model.generate(**inputs, max_new_tokens=tokens, do_sample=False)
    new = output[:, inputs["input_ids"].shape[1] :]
    eos = set(model.generation_config.eos_token_id or [])
    return sum(next((i + 1 for i, t in enumerate(row.tolist()) if t in eos), len(row)) for row in new)


def _timed(function: Any, *args: Any) -> tuple[int, float]:
    started = time.perf_counter()
    result = function(*args)
    return int(result), time.perf_counter() - started


def _in_process(model_uri: str, prompts: list[str], tokens: int) -> dict[str, float]:
    from kubellm.runtime.models.loading import load_model  # noqa: PLC0415

    loaded = load_model(model_uri)
    model, tokenizer = loaded.model.eval(), loaded.tokenizer
    _generate(model, tokenizer, prompts, 4)  # warm-up at full batch size
    sequential = [_timed(_generate, model, tokenizer, [prompt], tokens) for prompt in prompts]
    seq_tokens, seq_seconds = sum(t for t, _ in sequential), sum(s for _, s in sequential)
    batch_tokens, batch_seconds = _timed(_generate, model, tokenizer, prompts, tokens)
    single_tokens, single_seconds = sequential[0]
    return {
        "sequential_tps": seq_tokens / seq_seconds,
        "batch_tps": batch_tokens / batch_seconds,
        "single_seconds_per_token": single_seconds / max(1, single_tokens),
    }


# --- int8 vs fp32 -----------------------------------------------------------------------------------


def _scheduler_run(engine: Any, prompts: list[str], tokens: int) -> tuple[list[list[int]], float]:
    from kubellm.runtime.serving.batching import Scheduler, Sequence  # noqa: PLC0415
    from kubellm.runtime.serving.sampling import SamplingParams  # noqa: PLC0415

    scheduler = Scheduler(engine, max_batch_size=len(prompts), batch_wait_seconds=0.0)
    sequences = [Sequence(engine.encode(p), SamplingParams(max_tokens=tokens, temperature=0)) for p in prompts]
    scheduler.start()
    started = time.perf_counter()
    scheduler.submit(sequences)
    while not all(sequence.finished for sequence in sequences):
        time.sleep(0.001)
    elapsed = time.perf_counter() - started
    scheduler.stop()
    return [sequence.output_ids for sequence in sequences], elapsed


def _agreement(reference: list[list[int]], other: list[list[int]]) -> float:
    pairs = [(a, b) for ref, oth in zip(reference, other, strict=True) for a, b in zip(ref, oth, strict=False)]
    return sum(a == b for a, b in pairs) / max(1, len(pairs))


def _int8_vs_fp32(model_uri: str, prompts: list[str], tokens: int) -> dict[str, float]:
    from kubellm.runtime.config import ServingConfig  # noqa: PLC0415
    from kubellm.runtime.serving.engine import load_engine  # noqa: PLC0415
    from kubellm.runtime.serving.settings import ServerSettings  # noqa: PLC0415

    results = {}
    for mode in ("none", "int8"):
        engine = load_engine(ServerSettings(model=model_uri, serving=ServingConfig(quantization=mode)))
        _scheduler_run(engine, prompts, 4)  # warm-up at full batch size
        outputs, seconds = _scheduler_run(engine, prompts, tokens)
        results[mode] = (outputs, sum(len(o) for o in outputs) / seconds, engine.info.weight_bytes)
    return {
        "fp32_tps": results["none"][1],
        "int8_tps": results["int8"][1],
        "fp32_bytes": results["none"][2],
        "int8_bytes": results["int8"][2],
        "agreement": _agreement(results["none"][0], results["int8"][0]),
    }


# --- trivial endpoint for the cache comparison -------------------------------------------------------


@contextmanager
def trivial_endpoint(port: int) -> Iterator[str]:
    """A FastAPI app answering a constant JSON body, in a uvicorn thread."""
    import uvicorn  # noqa: PLC0415
    from fastapi import FastAPI  # noqa: PLC0415

    app = FastAPI()

    @app.post("/v1/completions")
    async def constant() -> dict[str, str]:
        return {"text": "cached"}

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


# --- main ---------------------------------------------------------------------------------------------


def _report_throughput(url: str, args: argparse.Namespace, baseline: dict[str, float]) -> None:
    prompts = _prompts(args.clients)
    asyncio.run(_concurrent(url, prompts, 4))  # warm-up at full batch size
    tokens, seconds = asyncio.run(_concurrent(url, prompts, args.tokens))
    server_tps = tokens / seconds
    print(f"server, {args.clients} concurrent clients: {server_tps:8.1f} tok/s ({tokens} tokens in {seconds:.2f}s)")
    print(f"in-process sequential generate:       {baseline['sequential_tps']:8.1f} tok/s")
    print(f"in-process one batch of {args.clients} (generate): {baseline['batch_tps']:8.1f} tok/s")
    print(f"  ratio server / sequential generate:  {server_tps / baseline['sequential_tps']:.2f}x (goal >= 4x)")
    print(f"  ratio server / one static batch:     {server_tps / baseline['batch_tps']:.2f}x")
    one_tokens, one_seconds = asyncio.run(_one_at_a_time(url, prompts[:4], args.tokens))
    overhead = (one_seconds / max(1, one_tokens)) / baseline["single_seconds_per_token"] - 1
    print(f"batch-1 overhead over in-process generate (per token): {overhead * 100:+.1f}% (goal <= 10%)")


def _report_cache(url: str, requests: int) -> None:
    body = {"model": "model", "prompt": "cached question", "max_tokens": 16, "temperature": 0}
    asyncio.run(_latencies(url, "/v1/completions", body, 2))
    hits = asyncio.run(_latencies(url, "/v1/completions", body, requests))
    with trivial_endpoint(_free_port()) as trivial:
        asyncio.run(_latencies(trivial, "/v1/completions", body, 10))
        plain = asyncio.run(_latencies(trivial, "/v1/completions", body, requests))
    p50, p99 = _percentile(hits, 0.5) * 1000, _percentile(hits, 0.99) * 1000
    rps, plain_rps = len(hits) / sum(hits), len(plain) / sum(plain)
    print(f"cache hit latency p50 {p50:.2f} ms, p99 {p99:.2f} ms (goal p50 <= 2 ms)")
    print(f"cache hits {rps:.0f} req/s vs trivial FastAPI {plain_rps:.0f} req/s: {rps / plain_rps:.2f} (goal >= 0.5)")


def _report_int8(args: argparse.Namespace) -> None:
    figures = _int8_vs_fp32(args.model, _prompts(args.clients), args.tokens)
    print(f"int8 vs fp32 decode ({args.clients} at once): {figures['int8_tps']:.1f} vs {figures['fp32_tps']:.1f} tok/s")
    print(f"  speed-up {figures['int8_tps'] / figures['fp32_tps']:.2f}x (goal >= 1.5x)")
    size_ratio = figures["fp32_bytes"] / figures["int8_bytes"]
    print(f"  weights {figures['fp32_bytes']:,} -> {figures['int8_bytes']:,} bytes: {size_ratio:.2f}x smaller")
    print(f"  greedy agreement with fp32 (random weights): {figures['agreement'] * 100:.1f}%")


def main() -> int:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL, help="model source (default: a ~5M-parameter dummy Llama)")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients (default: %(default)s)")
    parser.add_argument("--tokens", type=int, default=64, help="new tokens per request (default: %(default)s)")
    parser.add_argument("--cache-requests", type=int, default=300, help="requests for the cache figures")
    parser.add_argument(
        "--threads", type=int, default=default_torch_threads(), help="torch threads, everywhere (default: cores - 1)"
    )
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    torch.set_num_threads(args.threads)
    if args.serve:
        return _serve(rest, args.model)
    print(f"model {args.model}, {torch.get_num_threads()} torch threads")
    baseline = _in_process(args.model, _prompts(args.clients), args.tokens)
    with running_server(args.model, _free_port(), args.clients, args.threads) as url:
        _report_throughput(url, args, baseline)
        _report_cache(url, args.cache_requests)
    _report_int8(args)
    return 0


def _serve(rest: list[str], model: str) -> int:
    from kubellm.runtime.serving import command  # noqa: PLC0415

    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    return command.run(parser.parse_args(["--model", model, "--log-level", "warning", *rest]))


if __name__ == "__main__":
    sys.exit(main())
