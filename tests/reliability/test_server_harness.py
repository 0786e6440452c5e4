"""What the server reliability tests share (no tests here): a tiny model, a real server, metrics.

The server is the real app under uvicorn on a free loopback port, in a thread of the test
process, so a test can look at its state (the admission counter) as well as at its metrics.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
import torch
import uvicorn
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from kubellm.contract.schema import ModelSource
from kubellm.contract.serving import CacheConfig, GenerationLimits, ServingConfig
from kubellm.runtime.serving.app import create_app
from kubellm.runtime.serving.engine import Engine, load_transformers_engine
from kubellm.runtime.serving.service import GenerationService
from kubellm.runtime.serving.settings import ServerSettings
from tests.harness.cluster import free_port

__all__ = [
    "AREA",
    "NAME",
    "NO_CACHE",
    "RunningServer",
    "engine_for",
    "metric",
    "server_settings",
    "serving",
    "tiny_engine",
]

AREA = "server"
MODEL = "dummy://llama?hidden_size=32&num_hidden_layers=2&num_attention_heads=4&seed=1"
NAME = "tiny"
NO_CACHE = {"Cache-Control": "no-cache"}


def server_settings(cache_url: str | None = None, *, api_keys: tuple[str, ...] = (), **limits: int) -> ServerSettings:
    """The tiny model's settings; ``limits`` are GenerationLimits fields."""
    cache = CacheConfig(enabled=True, url=cache_url, ttl_seconds=300) if cache_url else CacheConfig()
    serving_config = ServingConfig(limits=GenerationLimits(**{"batch_wait_ms": 5, **limits}), cache=cache)
    return ServerSettings(
        model=ModelSource(uri=MODEL), served_model_name=NAME, serving=serving_config, api_keys=api_keys
    )


@functools.cache
def engine_for(model: str = MODEL) -> Engine:
    """A dummy model, loaded once per session.

    One torch thread: the other core serves HTTP and runs the client; decoding threads that
    share a core with them slow every step down many times over.
    """
    torch.set_num_threads(1)
    return load_transformers_engine(server_settings().model_copy(update={"model": ModelSource(uri=model)}))


def tiny_engine() -> Engine:
    """The tiny model most checks use."""
    return engine_for(MODEL)


@dataclass(frozen=True)
class RunningServer:
    """A started server: its URL and its app."""

    url: str
    app: FastAPI

    @property
    def service(self) -> GenerationService:
        """The generation service (the model is loaded before the server starts)."""
        service: GenerationService | None = self.app.state.kubellm.service
        assert service is not None
        return service

    def in_flight(self) -> int:
        """Requests holding one of the server's places (generating or queued)."""
        return self.service._admission.in_flight

    def metric(self, name: str, **labels: str) -> float:
        """The sum of a metric's samples matching ``labels``."""
        return metric(self.url, name, **labels)


@contextmanager
def serving(settings: ServerSettings, engine: Engine | None = None) -> Iterator[RunningServer]:
    """Serve ``settings`` with the shared engine under uvicorn in a thread until the block ends."""
    app = create_app(settings, engine or tiny_engine())
    config = uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning", timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield RunningServer(f"http://127.0.0.1:{config.port}", app)
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def metric(url: str, name: str, **labels: str) -> float:
    """The sum of a metric's samples matching ``labels``, scraped from ``/metrics``."""
    text = httpx.get(f"{url}/metrics", timeout=30).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(key) == value for key, value in labels.items())
    )
