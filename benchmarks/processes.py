"""Servers under test as subprocesses: started, waited for, stopped; their logs kept for errors."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import httpx

from tests.harness.cluster import free_port

__all__ = ["ServerFailedError", "free_port", "kubellm_serve", "rss_mib", "running_server", "venv_tool"]


class ServerFailedError(RuntimeError):
    """A server exited or never became ready; the message ends with its last log lines."""


def venv_tool(name: str) -> str:
    """A console script installed next to this interpreter."""
    return str(Path(sys.executable).with_name(name))


def rss_mib(pid: int) -> float:
    """Resident memory of a process, MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@contextmanager
def running_server(
    argv: Sequence[str], url: str, ready_path: str, env: Mapping[str, str] | None = None, timeout: float = 300
) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``argv``, wait until ``GET url+ready_path`` answers 200, stop it on exit."""
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            list(argv), stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, start_new_session=True
        )
        try:
            _wait_ready(url + ready_path, process, log, timeout)
            yield process
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def kubellm_serve(model: str, port: int, threads: int, *extra: str) -> list[str]:
    """The argv of ``kubellm serve`` on ``model``."""
    argv = [venv_tool("kubellm"), "serve", "--model", model, "--host", "127.0.0.1", "--port", str(port)]
    return [*argv, "--torch-threads", str(threads), "--log-level", "warning", *extra]


def _wait_ready(url: str, process: subprocess.Popen[bytes], log: IO[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerFailedError(f"exited with code {process.returncode}: {_tail(log)}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise ServerFailedError(f"not ready after {timeout:.0f} s: {_tail(log)}")


def _tail(log: IO[bytes], characters: int = 600) -> str:
    log.seek(0)
    return " ".join(log.read().decode(errors="replace")[-characters:].split())
