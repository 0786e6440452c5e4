"""Operator metrics: reconciles, errors, durations and writes per kind, in one registry.

Labels are bounded: ``kind`` is one of the three custom resource kinds, ``child`` one of the
child kinds the builders produce, ``outcome`` one of ``ok``/``waiting``/``error``. Three gauges
watch the process itself: passes in flight, the objects it keeps per-object memory for
(which must drop back when those objects are deleted), and whether it leads (across the
replicas of one operator, the sum is 1).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

__all__ = ["OperatorMetrics"]


class OperatorMetrics:
    """The operator's Prometheus metrics (a registry of its own, so tests can build several)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.reconciles = Counter(
            "kubellm_operator_reconciles_total",
            "Reconcile passes by kind and outcome.",
            ["kind", "outcome"],
            registry=self.registry,
        )
        self.errors = Counter(
            "kubellm_operator_reconcile_errors_total", "Failed reconcile passes.", ["kind"], registry=self.registry
        )
        self.duration = Histogram(
            "kubellm_operator_reconcile_duration_seconds",
            "Time of one reconcile pass.",
            ["kind"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.writes = Counter(
            "kubellm_operator_writes_total",
            "Writes to the API server (child applies and status patches).",
            ["kind", "child"],
            registry=self.registry,
        )

        self.in_flight = Gauge(
            "kubellm_operator_reconciles_in_flight", "Reconcile passes running now.", ["kind"], registry=self.registry
        )
        self.tracked = Gauge(
            "kubellm_operator_tracked_objects",
            "Objects the operator keeps per-object memory for (owner locks, child versions).",
            registry=self.registry,
        )
        self.leader = Gauge(
            "kubellm_operator_leader",
            "1 while this process runs Kopf (it holds the leader Lease, or runs without election), else 0.",
            registry=self.registry,
        )

    def track(self, count: Callable[[], float]) -> None:
        """Report ``count()`` as the number of tracked objects at each scrape."""
        self.tracked.set_function(count)

    def serve(self, port: int) -> None:
        """Expose the metrics over HTTP on ``port``."""
        start_http_server(port, registry=self.registry)

    def count_write(self, kind: str, child: str) -> None:
        """One write on behalf of a ``kind`` resource (``child`` is ``status`` for status patches)."""
        self.writes.labels(kind=kind, child=child).inc()

    @contextmanager
    def reconciling(self, kind: str) -> Iterator[None]:
        """Time a reconcile pass and count its outcome; exceptions propagate."""
        started = time.perf_counter()
        self.in_flight.labels(kind=kind).inc()
        try:
            yield
        except Exception:
            self.reconciles.labels(kind=kind, outcome="error").inc()
            self.errors.labels(kind=kind).inc()
            raise
        else:
            self.reconciles.labels(kind=kind, outcome="ok").inc()
        finally:
            self.in_flight.labels(kind=kind).dec()
            self.duration.labels(kind=kind).observe(time.perf_counter() - started)
