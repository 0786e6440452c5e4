"""Every Prometheus metric of the server, in one place, labelled by served model name only.

Names follow ``shared/design/conventions.md`` (the Grafana dashboard queries exactly these).
Each server gets its own registry, so several apps in one process (tests) never collide.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "ServerMetrics"]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
_TOKEN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ServerMetrics:
    """The server's metrics; ``model`` labels are the base model's or an adapter's served name."""

    def __init__(self, model_name: str, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.model_name = model_name
        reg = self.registry
        self.requests = Counter(
            "llm_requests_total", "Requests answered, by HTTP status.", ["model", "status"], registry=reg
        )
        self.duration = Histogram(
            "llm_request_duration_seconds", "Request latency.", ["model"], buckets=_LATENCY_BUCKETS, registry=reg
        )
        self.active = Gauge("llm_active_requests", "Requests being generated or waiting.", ["model"], registry=reg)
        self.ttft = Histogram(
            "llm_time_to_first_token_seconds", "Time to first token.", ["model"], buckets=_LATENCY_BUCKETS, registry=reg
        )
        self.inter_token = Histogram(
            "llm_inter_token_latency_seconds", "Time between tokens.", ["model"], buckets=_TOKEN_BUCKETS, registry=reg
        )
        self.prompt_tokens = Counter("llm_prompt_tokens", "Prompt tokens processed.", ["model"], registry=reg)
        self.generation_tokens = Counter("llm_generation_tokens", "Tokens generated.", ["model"], registry=reg)
        self.queue_size = Gauge("llm_queue_size", "Sequences waiting to join the batch.", ["model"], registry=reg)
        self.batch_size = Histogram(
            "llm_batch_size", "Rows per decoding step.", ["model"], buckets=_BATCH_BUCKETS, registry=reg
        )
        self.cache_hits = Counter("llm_cache_hits", "Responses served from the cache.", ["model"], registry=reg)
        self.cache_misses = Counter("llm_cache_misses", "Cacheable requests not in the cache.", ["model"], registry=reg)
        self.cache_errors = Counter("llm_cache_errors", "Cache failures (bypassed).", ["model"], registry=reg)
        self.weight_bytes = Gauge(
            "llm_model_weight_bytes", "Bytes of the loaded weights.", ["model", "quantization"], registry=reg
        )
        self.ready = Gauge("llm_model_ready", "1 once the model is loaded.", ["model"], registry=reg)

        # Observed by the scheduler at every step: look the labelled children up once.
        self._batch_size = self.batch_size.labels(model_name)
        self._queue_size = self.queue_size.labels(model_name)

    def observe_batch(self, rows: int) -> None:
        """One decoding step over ``rows`` sequences."""
        self._batch_size.observe(rows)

    def observe_queue(self, waiting: int) -> None:
        """Sequences waiting for a place in the batch."""
        self._queue_size.set(waiting)

    def observe_loaded(self, quantization: str, weight_bytes: int) -> None:
        """The model is loaded: its precision and size."""
        self.weight_bytes.labels(self.model_name, quantization).set(weight_bytes)
        self.ready.labels(self.model_name).set(1)

    def observe_tokens(self, model: str, prompt: int, generated: int) -> None:
        """Tokens a request used."""
        self.prompt_tokens.labels(model).inc(prompt)
        self.generation_tokens.labels(model).inc(generated)

    @contextmanager
    def track_request(self, model: str) -> Iterator[None]:
        """Count a request as active while it runs and time it."""
        gauge = self.active.labels(model)
        gauge.inc()
        started = time.perf_counter()
        try:
            yield
        finally:
            gauge.dec()
            self.duration.labels(model).observe(time.perf_counter() - started)

    def count_response(self, model: str, status: int) -> None:
        """A request ended with this HTTP status."""
        self.requests.labels(model, str(status)).inc()

    def exposition(self) -> bytes:
        """The text format Prometheus scrapes."""
        return generate_latest(self.registry)
