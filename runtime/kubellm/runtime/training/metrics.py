"""Training progress as Prometheus gauges, served only when ``$KUBELLM_METRICS_PORT`` is set.

A training pod is usually not scraped; when it is (a PodMonitor on the port), these gauges
show the same figures as the status file. Names follow Prometheus conventions (base units,
no labels beyond the fixed ``method``).
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Gauge, start_http_server

from kubellm.contract.training import TrainingProgress

__all__ = ["METRICS_PORT_ENV", "TrainingMetrics"]

METRICS_PORT_ENV = "KUBELLM_METRICS_PORT"


class TrainingMetrics:
    """The gauges of one training process, in their own registry."""

    def __init__(self, method: str) -> None:
        self.registry = CollectorRegistry()
        self._method = method

        def gauge(name: str, documentation: str) -> Gauge:
            return Gauge(name, documentation, ["method"], registry=self.registry)

        self.step = gauge("kubellm_training_step", "Optimizer steps done.")
        self.total_steps = gauge("kubellm_training_total_steps", "Optimizer steps planned.")
        self.loss = gauge("kubellm_training_loss", "Latest training loss.")
        self.eval_loss = gauge("kubellm_training_eval_loss", "Latest evaluation loss.")
        self.samples_per_second = gauge("kubellm_training_samples_per_second", "Training throughput.")
        self.eta_seconds = gauge("kubellm_training_eta_seconds", "Estimated seconds until training finishes.")

    def serve_if_configured(self) -> int | None:
        """Start the HTTP endpoint when the environment asks for one; returns the port."""
        port = os.environ.get(METRICS_PORT_ENV)
        if not port:
            return None
        start_http_server(int(port), registry=self.registry)
        return int(port)

    def update(self, progress: TrainingProgress) -> None:
        """Copy the figures of a progress report into the gauges."""
        values = {
            self.step: progress.step,
            self.total_steps: progress.total_steps,
            self.loss: progress.loss,
            self.eval_loss: progress.eval_loss,
            self.samples_per_second: progress.samples_per_second,
            self.eta_seconds: progress.eta_seconds,
        }
        for gauge, value in values.items():
            if value is not None:
                gauge.labels(method=self._method).set(value)
