"""The real-model benchmark's wiring: its arithmetic, its targets, its result, one short kubellm serve pass.

Runs on a tiny ``dummy://`` model and needs no llama.cpp: the llama.cpp engines are reported as
skipped, with why.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from benchmarks.__main__ import FAMILIES, carried_over
from benchmarks.bandwidth import batch1_bound, read_bandwidth
from benchmarks.chat_decode import Reply
from benchmarks.engines import LLAMA_CPP_MISSING, kubellm_engine, llama_cpp_missing
from benchmarks.figures import Check, FamilyResult, RunOptions, Target
from benchmarks.load import LoadResult, RequestRecord
from benchmarks.real_measure import (
    FP32,
    FULL,
    INT8,
    KUBELLM_LLAMACPP,
    LLAMA_F32,
    LLAMA_Q4,
    LLAMA_Q8,
    QUICK,
    InProcess,
    Served,
    correct,
    level_jobs,
    measure_engine,
    question_set,
)
from benchmarks.real_report import BOUND, best_llama_cpp, bound_tps, result
from benchmarks.report import write_results
from benchmarks.serving import TS_CB

TINY = "dummy://llama?hidden_size=32&num_hidden_layers=1&num_attention_heads=2&intermediate_size=64&vocab_size=300"


def _load(tokens_per_second: float, requests: int = 4) -> LoadResult:
    records = [RequestRecord(1.0, 0.1 * (i + 1), 10) for i in range(requests)]
    return LoadResult(records, requests * 10 / tokens_per_second)


def _served(name: str, family: str, decode: float, by_level: dict[int, float]) -> Served:
    return Served(
        name,
        family,
        replies=[Reply(tokens=101, ttft=0.05, decode_seconds=100 / decode)],
        levels={c: _load(tps) for c, tps in by_level.items()},
        baselines={c: _load(decode / 2) for c in by_level},
        per_token=[(1.05, 10)],
        peak_rss_mib=500.0,
    )


def _measured() -> dict[str, Served]:
    return {
        FP32: _served(FP32, "kubellm", 30.0, {1: 25.0, 4: 60.0, 16: 100.0, 64: 110.0}),
        INT8: _served(INT8, "kubellm", 40.0, {1: 35.0, 16: 160.0}),
        TS_CB: _served(TS_CB, "transformers", 15.0, {1: 12.0, 4: 30.0, 16: 50.0, 64: 60.0}),
        KUBELLM_LLAMACPP: _served(KUBELLM_LLAMACPP, "kubellm", 72.0, {1: 70.0, 4: 120.0, 16: 180.0, 64: 190.0}),
        LLAMA_Q4: _served(LLAMA_Q4, "llama.cpp", 90.0, {1: 80.0, 4: 85.0, 16: 90.0, 64: 90.0}),
        LLAMA_F32: _served(LLAMA_F32, "llama.cpp", 35.0, {1: 30.0, 4: 33.0, 16: 34.0, 64: 34.0}),
    }


LOCAL = InProcess(
    bandwidth=20e9,
    weight_bytes={"fp32": 500_000_000, "int8": 125_000_000},
    agreement=90.0,
    forced_agreement=99.0,
    per_token=[(1.0, 10)],
    accuracy={"fp32": 50.0, "int8": 46.875, "llamacpp": 51.5625},
)


def _checks(checks: list[Check]) -> dict[str, Check]:
    return {check.figure: check for check in checks}


def test_the_family_is_registered() -> None:
    assert FAMILIES["real"] == "benchmarks.real_model"


def test_the_bound_is_bandwidth_over_weight_bytes() -> None:
    assert batch1_bound(20e9, 500_000_000) == pytest.approx(40.0)
    assert bound_tps(LOCAL) == pytest.approx(40.0)
    with pytest.raises(ValueError, match="weight bytes must be positive"):
        batch1_bound(1e9, 0)


def test_bandwidth_is_measured() -> None:
    assert read_bandwidth(0.05, 2, threads=1) > 1e8  # bytes/s: any machine reads 50 MiB faster than in 0.5 s


def test_decode_rate_leaves_the_first_token_out() -> None:
    assert Reply(tokens=11, ttft=1.0, decode_seconds=2.0).decode_tokens_per_second == pytest.approx(5.0)
    assert str(Reply(tokens=1, ttft=1.0, decode_seconds=0.0).decode_tokens_per_second) == "nan"


def test_every_level_has_enough_requests_with_mixed_lengths() -> None:
    for clients in FULL.levels:
        jobs = level_jobs(FULL, clients)
        assert len(jobs) >= max(64, clients)
        assert {tokens for _, tokens in jobs} == set(FULL.lengths)
        assert len({prompt for prompt, _ in jobs}) == len(jobs)
    assert FULL.levels == (1, 4, 16, 64)
    assert FULL.headline == 16
    assert QUICK.headline == max(QUICK.levels)


def test_targets_are_judged_with_margins() -> None:
    family = result(_measured(), LOCAL, FULL, RunOptions(quick=False, threads=2), skipped={}, llama_threads=2)
    checks = _checks(family.checks)
    decode = checks["batch-1 decode of kubellm serve fp32, share of the bandwidth bound"]
    assert decode.value == pytest.approx(75.0)  # 30 of 40 tok/s
    assert decode.met is True
    assert decode.margin == pytest.approx(15.0)
    assert decode.peer_name == BOUND
    versus_cb = checks[f"throughput at 16 clients: kubellm serve fp32 / {TS_CB}"]
    assert versus_cb.value == pytest.approx(2.0)
    assert versus_cb.met is True
    versus_llama = checks[f"throughput at 16 clients: kubellm serve fp32 / {LLAMA_Q4}"]
    assert versus_llama.value == pytest.approx(100 / 90)
    assert checks["int8 / fp32 throughput at 16 clients (kubellm serve)"].value == pytest.approx(1.6)
    assert checks["weights smaller by (fp32 bytes / int8 bytes)"].value == pytest.approx(4.0)
    agreement = checks["int8 greedy tokens agreeing with fp32 (free-running)"]
    assert agreement.met is False
    assert agreement.margin == pytest.approx(-5.0)
    engine_versus_cb = checks[f"throughput at 16 clients: {KUBELLM_LLAMACPP} / {TS_CB}"]
    assert engine_versus_cb.value == pytest.approx(3.6)
    assert engine_versus_cb.met is True
    engine_versus_llama = checks[f"throughput at 16 clients: {KUBELLM_LLAMACPP} / {LLAMA_Q4}"]
    assert engine_versus_llama.value == pytest.approx(2.0)
    assert engine_versus_llama.met is True
    assert checks[f"throughput at 16 clients: {KUBELLM_LLAMACPP} / {FP32}"].value == pytest.approx(1.8)
    assert checks[f"batch-1 decode: {KUBELLM_LLAMACPP} / {LLAMA_Q4}"].value == pytest.approx(0.8)
    lost = checks["accuracy lost against fp32 on the question set: int8"]
    assert lost.value == pytest.approx(3.125)  # 2 of 64 questions: more than the 2 points allowed
    assert lost.met is False
    engine_lost = checks[f"accuracy lost against fp32 on the question set: {KUBELLM_LLAMACPP} (Q4_1 file)"]
    assert engine_lost.value == pytest.approx(-1.5625)
    overhead = checks["batch-1 overhead of kubellm serve fp32 over in-process generate (per token, median)"]
    assert overhead.value == pytest.approx(5.0)
    assert overhead.target == Target(10.0, at_least=False)
    assert overhead.met is True


def test_the_question_set_is_the_example_experiment_s_rows_and_answers_are_matched_as_words() -> None:
    questions = question_set()
    assert len(questions) == 64
    assert questions[0] == ("What is the capital of France?", "Paris")
    assert correct("The capital of France is Paris.", "Paris")
    assert correct("paris", "Paris")
    assert not correct("Parisian food", "Paris")
    assert correct("It is 3.14", "3.14")


def test_best_llama_cpp_is_the_fastest_at_the_level() -> None:
    assert best_llama_cpp(_measured(), 16) == LLAMA_Q4
    assert best_llama_cpp({FP32: _measured()[FP32]}, 16) is None


def test_skipped_llama_cpp_is_reported_with_why() -> None:
    measured = {name: served for name, served in _measured().items() if not name.startswith("llama.cpp")}
    skipped = dict.fromkeys((LLAMA_Q4, LLAMA_F32, LLAMA_Q8), LLAMA_CPP_MISSING)
    family = result(measured, LOCAL, FULL, RunOptions(quick=False, threads=2), skipped=skipped, llama_threads=2)
    versus = _checks(family.checks)["throughput at 16 clients: kubellm serve fp32 / llama.cpp"]
    assert versus.value is None
    assert versus.met is None
    assert LLAMA_CPP_MISSING in versus.sentence()
    engines = family.tables[0]
    assert [row[-1] for row in engines.rows if row[0] == LLAMA_Q8] == [f"skipped: {LLAMA_CPP_MISSING}"]


def test_quick_mode_keeps_only_the_structural_targets() -> None:
    family = result(_measured(), LOCAL, QUICK, RunOptions(quick=True, threads=2), skipped={}, llama_threads=2)
    targeted = {check.figure for check in family.checks if check.target is not None}
    assert targeted == {
        "weights smaller by (fp32 bytes / int8 bytes)",
        "batch-1 overhead of kubellm serve fp32 over in-process generate (per token, median)",
    }


def test_the_result_round_trips_and_is_written(tmp_path: Path) -> None:
    family = result(_measured(), LOCAL, FULL, RunOptions(quick=False, threads=2), skipped={}, llama_threads=2)
    assert FamilyResult.from_json(json.loads(json.dumps(family.to_json()))) == family
    run = {
        "started": "now",
        "wall_seconds": 1.0,
        "mode": "full",
        "cores": 2,
        "threads": 2,
        "python": "3",
        "torch": "t",
        "transformers": "x",
    }
    write_results(tmp_path, [family], run)
    readme = (tmp_path / "README.md").read_text()
    assert "margin" in readme
    assert "| batch-1 decode of kubellm serve fp32, share of the bandwidth bound |" in readme
    assert (tmp_path / "real.png").stat().st_size > 0
    other = replace(family, name="serving")
    kept, started = carried_over(tmp_path, [other])
    assert [k.name for k in kept] == ["real"]
    assert started == {"real": "now"}


def test_llama_cpp_availability_is_a_reason_or_nothing() -> None:
    assert llama_cpp_missing() in ("", LLAMA_CPP_MISSING)


def test_one_short_kubellm_serve_pass_on_a_dummy_model() -> None:
    plan = replace(QUICK, levels=(1, 2), requests=2, lengths=(2, 3), baseline_requests=1, decode_tokens=4)
    plan = replace(plan, overhead_prompts=1, overhead_tokens=2)
    served = measure_engine(kubellm_engine(FP32, TINY, 1), plan, plan.levels, overhead=True)
    assert served.error == ""
    assert set(served.levels) == {1, 2}
    assert served.baselines[1] is served.levels[1]
    assert len(served.baselines[2].records) == 1
    assert len(served.replies) == 1
    assert len(served.per_token) == 1
    assert served.peak_rss_mib > 0
