"""Batch-1 overhead: one request at a time through ``kubellm serve`` vs one in-process ``generate``.

Both run the same saved model with the same torch threads; requests are greedy, not streamed,
and bypass the response cache. The figure is the time per generated token, server over
in-process, minus one.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from benchmarks.figures import Check, FamilyResult, Plot, RunOptions, Table, Target, median
from benchmarks.inprocess import load_folder, save_model, sequential
from benchmarks.load import NO_CACHE, timed_requests
from benchmarks.processes import free_port, kubellm_serve, running_server
from benchmarks.serving import MODEL, prompts

__all__ = ["run"]


def _server_per_token(folder: Path, jobs: list[str], tokens: int, threads: int) -> list[tuple[float, int]]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"

    def body(index: int) -> dict[str, Any]:
        return {"model": "model", "prompt": jobs[index % len(jobs)], "max_tokens": tokens, "temperature": 0}

    with running_server(kubellm_serve(str(folder), port, threads), url, "/ready"):
        timed_requests(f"{url}/v1/completions", 2, body, NO_CACHE)  # warm-up
        answers = timed_requests(f"{url}/v1/completions", len(jobs), body, NO_CACHE)
    return [(seconds, int(answer["usage"]["completion_tokens"])) for seconds, answer in answers]


def _in_process_per_token(folder: Path, jobs: list[str], lengths: list[int]) -> list[tuple[float, int]]:
    """The same prompts, each asked for as many tokens as the server generated: equal work."""
    model, tokenizer = load_folder(folder)
    sequential(model, tokenizer, [(p, 8) for p in jobs[:2]])  # warm-up
    result = sequential(model, tokenizer, list(zip(jobs, lengths, strict=True)))
    return [(record.latency, record.tokens) for record in result.records]


def _per_token_ms(timings: list[tuple[float, int]]) -> list[float]:
    return [seconds * 1000 / max(1, tokens) for seconds, tokens in timings]


def run(options: RunOptions) -> FamilyResult:
    """Alternate the server and in-process runs on the same prompts; compare medians per token."""
    count, tokens = (3, 16) if options.quick else (6, 64)
    jobs = prompts(count)
    with tempfile.TemporaryDirectory(prefix="kubellm-bench-overhead-") as scratch:
        folder = Path(scratch) / "model"
        parameters = save_model(MODEL, folder)
        served = _server_per_token(folder, jobs, tokens, options.threads)
        generated = _in_process_per_token(folder, jobs, [max(1, n) for _, n in served])
    server, local = _per_token_ms(served), _per_token_ms(generated)
    server_ms, local_ms = median(server), median(local)
    overhead = (server_ms / local_ms - 1) * 100
    check = Check(
        figure="batch-1 overhead of kubellm serve over in-process generate (per token, median)",
        value=overhead,
        unit="%",
        target=Target(10.0, at_least=False),
        ours=server_ms,
        peer_name="in-process generate",
        peer=local_ms,
        raw_unit="ms/token",
    )
    rows: list[list[str | float | int | None]] = [
        ["kubellm serve over HTTP (non-streamed)", server_ms, min(server), sum(n for _, n in served)],
        ["in-process model.generate", local_ms, min(local), sum(n for _, n in generated)],
    ]
    return FamilyResult(
        name="overhead",
        title="Batch-1 overhead",
        workload=(
            f"`{MODEL}` ({parameters / 1e6:.1f}M parameters), {count} prompts one at a time, {tokens} new tokens, "
            f"greedy, {options.threads} torch thread(s); time per generated token, request sent to answer read; "
            "in-process, each prompt asks for as many tokens as the server generated for it (a random model may "
            "stop early at its end token)."
        ),
        tables=[Table("Time per generated token", ["path", "median ms/token", "best ms/token", "tokens"], rows)],
        checks=[check],
        plots=[
            Plot(
                "Time per token at batch 1 (lower is better)",
                "ms/token",
                ["median"],
                {"kubellm serve": [server_ms], "in-process generate": [local_ms]},
            )
        ],
        data={"server_ms_per_token": server, "in_process_ms_per_token": local, "parameters": parameters},
    )
