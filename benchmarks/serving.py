"""Serving throughput: ``kubellm serve`` vs ``transformers serve`` (default and continuous batching)
vs in-process ``generate``, at 1/4/16/32 concurrent clients and on a variable-output-length load.

All servers are subprocesses serving one folder (a dummy Llama saved with ``save_pretrained``),
with the same number of torch threads; the clients run in this process. Requests are greedy and
streamed; ``kubellm serve`` is asked not to use its response cache.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from benchmarks.figures import Check, FamilyResult, Plot, RunOptions, Table, Target, ratio
from benchmarks.inprocess import (
    Job,
    load_engine_from,
    load_folder,
    save_model,
    scheduler_run,
    sequential,
    static_batches,
)
from benchmarks.load import LoadResult, run_load
from benchmarks.processes import ServerFailedError, free_port, kubellm_serve, running_server, venv_tool

__all__ = ["MODEL", "PEERS", "Peer", "prompts", "run"]

MODEL = (
    "dummy://llama?hidden_size=256&num_hidden_layers=4&num_attention_heads=4&intermediate_size=688"
    "&vocab_size=2048&max_position_embeddings=1024&seed=1"
)
CB_CACHE = ["--cb-block-size", "32", "--cb-num-blocks", "512", "--cb-max-batch-tokens", "1024"]
"""A 16k-token paged cache: on CPU its default sizing claims most of the machine's memory."""
KUBELLM = "kubellm serve"
TS_DEFAULT = "transformers serve"
TS_CB = "transformers serve --continuous-batching"
SEQUENTIAL = "in-process generate, sequential"
STATIC = "in-process generate, static batch"
ENGINE = "kubellm engine in-process (no HTTP)"
VARIABLE = "variable lengths"


@dataclass(frozen=True)
class Peer:
    """A server under test: how to start it and what to call its model."""

    name: str
    argv: Callable[[Path, int, int], list[str]]
    ready_path: str
    model_name: Callable[[Path], str]
    env: Callable[[int], dict[str, str]] = field(default=lambda threads: {})


@dataclass(frozen=True)
class Workload:
    """A named list of requests and the clients sharing them."""

    name: str
    clients: int
    jobs: list[Job]


def _transformers_argv(extra: Sequence[str]) -> Callable[[Path, int, int], list[str]]:
    def argv(folder: Path, port: int, threads: int) -> list[str]:
        return [venv_tool("transformers"), "serve", str(folder), "--host", "127.0.0.1", "--port", str(port), *extra]

    return argv


def _omp(threads: int) -> dict[str, str]:
    return {"OMP_NUM_THREADS": str(threads)}


PEERS = [
    Peer(
        KUBELLM,
        lambda folder, port, threads: kubellm_serve(str(folder), port, threads, "--max-batch-size", "32"),
        "/ready",
        lambda folder: "model",
    ),
    Peer(TS_DEFAULT, _transformers_argv(["--device", "cpu"]), "/health", str, _omp),
    Peer(TS_CB, _transformers_argv(["--device", "cpu", "--continuous-batching", *CB_CACHE]), "/health", str, _omp),
]


def prompts(count: int) -> list[str]:
    """Distinct short prompts."""
    return [f"Question {index}: what is {index} plus {index * 3}? Answer:" for index in range(count)]


def _clients(count: int) -> str:
    return f"{count} client{'s' if count > 1 else ''}"


def workloads(quick: bool) -> list[Workload]:
    """Fixed output length at each concurrency level, then varying output lengths."""
    levels, tokens, least = ([1, 4], 16, 2) if quick else ([1, 4, 16, 32], 64, 4)
    fixed = [Workload(_clients(c), c, [(p, tokens) for p in prompts(max(c, least))]) for c in levels]
    lengths = [4, 8, 16, 32] if quick else [8, 24, 48, 96]
    clients, count = (4, 8) if quick else (16, 16)
    varied = [(p, lengths[i % len(lengths)]) for i, p in enumerate(prompts(count))]
    return [*fixed, Workload(f"{VARIABLE}, {_clients(clients)}", clients, varied)]


TTFT_NOTE = (
    "Time to first token is the first streamed chunk that carries text. kubellm serve holds back text that ends "
    "in an incomplete UTF-8 character; a random model over a byte-level vocabulary emits many raw bytes, so its "
    "first text can come several tokens after its first token, while transformers serve streams replacement "
    "characters at once. Compare TTFT across servers with that in mind. Requests that produced no text (an end "
    "token first) are left out of TTFT."
)

Measured = dict[str, dict[str, LoadResult | str]]
"""peer -> workload -> its result, or why it could not run."""


def _measure_server(peer: Peer, folder: Path, loads: list[Workload], threads: int) -> dict[str, LoadResult | str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    try:
        with running_server(peer.argv(folder, port, threads), url, peer.ready_path, peer.env(threads)):
            model = peer.model_name(folder)
            run_load(url, model, [(p, 4) for p in prompts(4)], 4)  # warm-up: first requests, batch buffers
            run_load(url, model, [(p, 4) for p in prompts(4)], 1)
            return {load.name: run_load(url, model, load.jobs, load.clients) for load in loads}
    except (ServerFailedError, httpx.HTTPError, OSError) as error:
        reason = f"{type(error).__name__}: {' '.join(str(error).split())[:400]}"
        return {load.name: reason for load in loads}


def _measure_in_process(folder: Path, loads: list[Workload]) -> Measured:
    model, tokenizer = load_folder(folder)
    static_batches(model, tokenizer, loads[-1].jobs[:4], 4)  # warm-up
    fixed = [load for load in loads if not load.name.startswith(VARIABLE)]
    widest = max(fixed, key=lambda load: load.clients)
    one_at_a_time = sequential(model, tokenizer, widest.jobs[:8])  # independent of the client count
    measured: Measured = {SEQUENTIAL: {}, STATIC: {}, ENGINE: {}}
    for load in loads:
        is_fixed = load in fixed
        measured[SEQUENTIAL][load.name] = one_at_a_time if is_fixed else sequential(model, tokenizer, load.jobs)
        measured[STATIC][load.name] = static_batches(model, tokenizer, load.jobs, load.clients)
    engine = load_engine_from(folder)
    scheduler_run(engine, loads[-1].jobs[:4], 4)  # warm-up
    for load in loads:
        measured[ENGINE][load.name] = scheduler_run(engine, load.jobs, load.clients)[0]
    return measured


def run(options: RunOptions) -> FamilyResult:
    """Measure every peer on every workload and compare."""
    loads = workloads(options.quick)
    with tempfile.TemporaryDirectory(prefix="kubellm-bench-serving-") as scratch:
        folder = Path(scratch) / "model"
        parameters = save_model(MODEL, folder)
        measured: Measured = {peer.name: _measure_server(peer, folder, loads, options.threads) for peer in PEERS}
        measured.update(_measure_in_process(folder, loads))
    return _result(measured, loads, options, parameters)


# --- the report -------------------------------------------------------------------------------------


def _tps(measured: Measured, peer: str, load: str) -> float | None:
    result = measured.get(peer, {}).get(load)
    return result.tokens_per_second if isinstance(result, LoadResult) else None


def _why(measured: Measured, peer: str, load: str) -> str:
    result = measured.get(peer, {}).get(load)
    return result if isinstance(result, str) else ""


def _row(peer: str, load: str, result: LoadResult | str) -> list[str | float | int | None]:
    if isinstance(result, str):
        return [load, peer, None, None, None, None, None, None, result]
    figures = result.summary()
    ttft = None if math.isnan(figures["ttft_p50_ms"]) else figures["ttft_p50_ms"]
    keys = ("tokens_per_second", "requests_per_second", "latency_p50_ms", "latency_p95_ms")
    return [load, peer, *(figures[key] for key in keys), ttft, int(figures["tokens"]), ""]


def _ratio_check(measured: Measured, load: str, peer: str, target: Target | None) -> Check:
    ours, theirs = _tps(measured, KUBELLM, load), _tps(measured, peer, load)
    return Check(
        figure=f"throughput, {load}: kubellm serve / {peer}",
        value=ratio(ours, theirs),
        unit="x",
        target=target,
        ours=ours,
        peer_name=peer,
        peer=theirs,
        raw_unit="tok/s",
        why_missing=_why(measured, peer, load) or _why(measured, KUBELLM, load),
    )


def _checks(measured: Measured, loads: list[Workload], quick: bool) -> list[Check]:
    fixed = [load for load in loads if not load.name.startswith(VARIABLE)]
    headline = next((load for load in fixed if load.clients == 16), fixed[-1]).name
    varied = loads[-1].name
    return [
        _ratio_check(measured, headline, TS_CB, None if quick else Target(1.5)),
        _ratio_check(measured, headline, SEQUENTIAL, None if quick else Target(4.0)),
        _ratio_check(measured, headline, TS_DEFAULT, None),
        _ratio_check(measured, headline, STATIC, None),
        _ratio_check(measured, varied, TS_CB, None),
        _ratio_check(measured, varied, STATIC, None),
        _ratio_check(measured, headline, ENGINE, None),
    ]


def _plots(measured: Measured, loads: list[Workload]) -> list[Plot]:
    names = [load.name for load in loads]
    peers = [*(peer.name for peer in PEERS), SEQUENTIAL, STATIC, ENGINE]
    throughput = {peer: [_tps(measured, peer, name) for name in names] for peer in peers}

    def ttft(peer: str, name: str) -> float | None:
        result = measured[peer].get(name)
        value = result.summary()["ttft_p50_ms"] if isinstance(result, LoadResult) else float("nan")
        return None if math.isnan(value) else value

    servers = [peer.name for peer in PEERS]
    return [
        Plot("Throughput (higher is better)", "tokens/s", names, throughput),
        Plot(
            "Time to first token, p50 (lower is better)", "ms", names, {p: [ttft(p, n) for n in names] for p in servers}
        ),
    ]


def _result(measured: Measured, loads: list[Workload], options: RunOptions, parameters: int) -> FamilyResult:
    columns = ["workload", "peer", "tok/s", "req/s", "p50 ms", "p95 ms", "TTFT p50 ms", "tokens", "error"]
    rows = [_row(peer, load.name, measured[peer][load.name]) for load in loads for peer in measured]
    fixed_tokens = loads[0].jobs[0][1]
    varied = sorted({tokens for _, tokens in loads[-1].jobs})
    workload = (
        f"`{MODEL}` ({parameters / 1e6:.1f}M parameters, random weights, "
        f"byte-level tokenizer), saved once and served by every peer; greedy, streamed completions; "
        f"{fixed_tokens} new tokens per request at {', '.join(load.name for load in loads[:-1])} "
        f"(at least {len(loads[0].jobs)} requests per level); then max_tokens cycling {varied} "
        f"({loads[-1].name}, {len(loads[-1].jobs)} requests); {options.threads} torch thread(s) in every server "
        f"and in-process; `transformers serve --continuous-batching` with `{' '.join(CB_CACHE)}` (its default "
        "cache sizing takes a share of all system memory on CPU: over 12 GiB here). Tokens are those generated "
        "(a random model may stop early at its end token)."
    )
    return FamilyResult(
        name="serving",
        title="Serving throughput",
        workload=workload,
        tables=[Table("Every peer on every workload", columns, rows)],
        checks=_checks(measured, loads, options.quick),
        plots=_plots(measured, loads),
        notes=[TTFT_NOTE],
        data={"parameters": parameters}
        | {peer: {k: v if isinstance(v, str) else v.summary() for k, v in by.items()} for peer, by in measured.items()},
    )
