"""The servers of the real-model benchmark: how each is started, what it calls the model, its peak memory.

``kubellm serve`` (fp32 and int8) loads the model by its source URI, ``transformers serve`` the
converted folder, llama.cpp (``python -m llama_cpp.server`` from llama-cpp-python) a GGUF file.
llama.cpp is optional: when llama-cpp-python is not installed its engines are skipped, with why.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.processes import kubellm_serve
from benchmarks.serving import PEERS, TS_CB

__all__ = [
    "LLAMA_CPP_MISSING",
    "Engine",
    "kubellm_engine",
    "llama_cpp_engine",
    "llama_cpp_missing",
    "peak_rss_mib",
    "transformers_cb_engine",
]

LLAMA_CPP_MISSING = "llama-cpp-python is not installed (make bench installs it: pip install -e '.[bench]')"
KUBELLM_MODEL_NAME = "model"


@dataclass(frozen=True)
class Engine:
    """A server under test: its argv for a port, its readiness path, its model's name in the API."""

    name: str
    argv: Callable[[int], list[str]]
    ready_path: str
    model: str
    env: dict[str, str] = field(default_factory=dict)
    family: str = "kubellm"
    """kubellm, transformers or llama.cpp: whose figures a ratio compares."""


def kubellm_engine(name: str, model: str, threads: int, *extra: str, env: dict[str, str] | None = None) -> Engine:
    """``kubellm serve --model model`` with ``threads`` torch threads and otherwise default settings."""
    return Engine(
        name, lambda port: kubellm_serve(model, port, threads, *extra), "/ready", KUBELLM_MODEL_NAME, env or {}
    )


def transformers_cb_engine(folder: Path, threads: int) -> Engine:
    """``transformers serve --continuous-batching`` on ``folder``, as the serving benchmark runs it."""
    peer = next(peer for peer in PEERS if peer.name == TS_CB)
    return Engine(
        TS_CB,
        lambda port: peer.argv(folder, port, threads),
        peer.ready_path,
        peer.model_name(folder),
        peer.env(threads),
        family="transformers",
    )


def llama_cpp_engine(name: str, gguf: Path, threads: int) -> Engine:
    """llama-cpp-python's OpenAI server on ``gguf``; requests queue one after another, none interrupts another."""

    def argv(port: int) -> list[str]:
        return [
            *(sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias", KUBELLM_MODEL_NAME),
            *("--host", "127.0.0.1", "--port", str(port), "--n_ctx", "4096"),
            *("--n_threads", str(threads), "--n_threads_batch", str(threads), "--interrupt_requests", "False"),
        ]

    return Engine(name, argv, "/v1/models", KUBELLM_MODEL_NAME, family="llama.cpp")


def llama_cpp_missing() -> str:
    """Why llama.cpp's server cannot run here; empty when it can."""
    return "" if importlib.util.find_spec("llama_cpp") is not None else LLAMA_CPP_MISSING


def peak_rss_mib(pid: int) -> float:
    """Peak resident memory of a running process (``VmHWM``), MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")
