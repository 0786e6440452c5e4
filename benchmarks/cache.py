"""Response cache: hit vs miss latency of ``kubellm serve``, and cached requests/s vs a trivial
FastAPI endpoint (:mod:`benchmarks.trivial_endpoint`) running side by side in this run.

Misses are distinct greedy prompts seen for the first time; hits repeat them. Latencies are
measured one request at a time on one keep-alive connection; requests/s with concurrent clients.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.figures import Check, FamilyResult, Plot, RunOptions, Table, Target, percentile, ratio
from benchmarks.inprocess import save_model
from benchmarks.load import concurrent_requests_per_second, timed_requests
from benchmarks.processes import free_port, kubellm_serve, running_server
from benchmarks.serving import MODEL

__all__ = ["run"]

CLIENTS = 8


def _body(index: int) -> dict[str, Any]:
    return {"model": "model", "prompt": f"Cached question {index}: say something", "max_tokens": 16, "temperature": 0}


def _kubellm(folder: Path, threads: int, count: int, repeats: int) -> dict[str, Any]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with running_server(kubellm_serve(str(folder), port, threads), url, "/ready"):
        endpoint = f"{url}/v1/completions"
        misses = [seconds for seconds, _ in timed_requests(endpoint, count, _body)]
        hits = [seconds for seconds, _ in timed_requests(endpoint, repeats, lambda index: _body(index % count))]
        rps = concurrent_requests_per_second(endpoint, _body(0), CLIENTS, repeats // CLIENTS)
    return {"misses": misses, "hits": hits, "rps": rps}


def _trivial(repeats: int) -> dict[str, Any]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [sys.executable, "-m", "benchmarks.trivial_endpoint", str(port)]
    with running_server(argv, url, "/ready"):
        endpoint = f"{url}/v1/completions"
        timed_requests(endpoint, 20, _body)  # warm-up
        latencies = [seconds for seconds, _ in timed_requests(endpoint, repeats, _body)]
        rps = concurrent_requests_per_second(endpoint, _body(0), CLIENTS, repeats // CLIENTS)
    return {"latencies": latencies, "rps": rps}


def _ms(values: list[float], fraction: float) -> float:
    return percentile(values, fraction) * 1000


def run(options: RunOptions) -> FamilyResult:
    """Misses, then hits, then concurrent hits; the trivial endpoint the same way."""
    count, repeats = (10, 80) if options.quick else (30, 400)
    with tempfile.TemporaryDirectory(prefix="kubellm-bench-cache-") as scratch:
        folder = Path(scratch) / "model"
        save_model(MODEL, folder)
        ours = _kubellm(folder, options.threads, count, repeats)
    plain = _trivial(repeats)
    hits, misses, floor = ours["hits"], ours["misses"], plain["latencies"]
    rows: list[list[str | float | int | None]] = [
        ["kubellm serve, cache miss (16 tokens generated)", _ms(misses, 0.5), _ms(misses, 0.99), None, len(misses)],
        ["kubellm serve, cache hit", _ms(hits, 0.5), _ms(hits, 0.99), ours["rps"], len(hits)],
        ["trivial FastAPI endpoint", _ms(floor, 0.5), _ms(floor, 0.99), plain["rps"], len(floor)],
    ]
    checks = [
        Check("cache hit latency p50 over HTTP", _ms(hits, 0.5), "ms", Target(2.0, at_least=False)),
        Check(
            f"cached requests/s ({CLIENTS} clients) vs a trivial FastAPI endpoint",
            None if (value := ratio(ours["rps"], plain["rps"])) is None else value * 100,
            "%",
            Target(50.0),
            ours=ours["rps"],
            peer_name="trivial FastAPI endpoint",
            peer=plain["rps"],
            raw_unit="req/s",
        ),
        Check("cache hit p50 vs miss p50", ratio(_ms(misses, 0.5), _ms(hits, 0.5)), "x faster"),
    ]
    return FamilyResult(
        name="cache",
        title="Response cache",
        workload=(
            f"`kubellm serve` with its embedded cache on `{MODEL}`; {len(misses)} distinct greedy prompts "
            f"(max_tokens 16) as misses, then {len(hits)} repeats as hits, one at a time on one "
            f"keep-alive connection (http.client); requests/s from {CLIENTS} client threads, one connection each, "
            "repeating one cached request; the trivial endpoint "
            "is a FastAPI app returning a constant JSON body under the same uvicorn, in its own process."
        ),
        tables=[Table("Latency and requests/s", ["path", "p50 ms", "p99 ms", "req/s", "requests"], rows)],
        checks=checks,
        plots=[
            Plot(
                "Latency (lower is better)",
                "ms",
                ["p50", "p99"],
                {
                    "miss": [_ms(misses, 0.5), _ms(misses, 0.99)],
                    "hit": [_ms(hits, 0.5), _ms(hits, 0.99)],
                    "trivial endpoint": [_ms(floor, 0.5), _ms(floor, 0.99)],
                },
                log_scale=True,
            ),
            Plot(
                "Requests/s (higher is better)",
                "req/s",
                [f"{CLIENTS} clients"],
                {"cache hit": [ours["rps"]], "trivial endpoint": [plain["rps"]]},
            ),
        ],
        data={"kubellm": ours, "trivial": plain},
    )
