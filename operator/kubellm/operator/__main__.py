"""``python -m kubellm.operator``: run the operator (namespace-scoped with ``--namespace``, else cluster-wide).

Builds the one settings object, the API client, the metrics and the Kopf settings, registers
the handlers and runs Kopf with its liveness endpoint. See :mod:`kubellm.operator.settings`
for the flags (watch timeouts, retry delays, leader election).

Several replicas (``--leader-election``): the process first stands by until it holds the leader
Lease (answering the liveness endpoint meanwhile, without a watch or a write), then runs Kopf
while renewing it, and hands it back once Kopf has stopped; a leader that loses the Lease exits
at once (:mod:`kubellm.operator.leader`). Kopf always runs standalone.

API outages: Kopf retries a failing request (a watch's too) along :func:`retry_backoffs`,
``--api-retry-seconds`` in all (10 minutes by default; Kopf's own budget is under a minute,
and a restarted API server answers 403 until its RBAC cache is warm). A watch that still gives
up stops the whole operator (Kopf escalates it), so the kubelet restarts it: never a silent stall.
"""

from __future__ import annotations

import itertools
import os
import sys
from collections.abc import Sequence

import kopf
from kubernetes import client, config

from kubellm.operator.handlers import Operator, register_all
from kubellm.operator.k8s import KubeClient
from kubellm.operator.leader import (
    LeaderElector,
    LeaseApi,
    LeaseTimings,
    default_identity,
    exit_on_lost,
    standby_health,
)
from kubellm.operator.metrics import OperatorMetrics
from kubellm.operator.settings import OperatorSettings, parse_settings

__all__ = ["build_elector", "build_kopf_settings", "main", "retry_backoffs"]

STATE_PREFIX = "kubellm.io"


def build_api_client(settings: OperatorSettings) -> client.ApiClient:
    """An API client from the in-cluster ServiceAccount, else from the kubeconfig."""
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    configuration.connection_pool_maxsize = settings.workers + 4
    return client.ApiClient(configuration)


def retry_backoffs(budget: float) -> tuple[float, ...]:
    """Delays between retries of a failing API request: growing to 30 s, ``budget`` seconds in all (pure)."""
    delays: list[float] = []
    for delay in itertools.chain((1, 1, 2, 3, 5, 8, 13, 21), itertools.repeat(30)):
        if sum(delays) >= budget:
            return tuple(delays)
        delays.append(delay)
    raise AssertionError("unreachable")  # pragma: no cover


def build_kopf_settings(settings: OperatorSettings) -> kopf.OperatorSettings:
    """Kopf's settings: watch timeouts, workers, where Kopf keeps its state, what it posts."""
    kopf_settings = kopf.OperatorSettings()
    kopf_settings.watching.server_timeout = settings.server_timeout
    kopf_settings.watching.client_timeout = settings.client_timeout
    kopf_settings.watching.connect_timeout = settings.connect_timeout
    kopf_settings.networking.error_backoffs = retry_backoffs(settings.api_retry_seconds)
    kopf_settings.execution.max_workers = settings.workers
    # Named namespaces need no namespace scanning (only glob patterns do), and the RBAC rules
    # grant no namespace access: Kopf would retry a forbidden list for ~55 s at every start.
    # Without scanning, Kopf serves the CRDs found at start (they are installed first).
    if settings.namespaces and not any(char in ns for ns in settings.namespaces for char in "*?[!"):
        kopf_settings.scanning.disabled = True
    # Progress in annotations and status.kopf (the one status field the schema keeps open).
    kopf_settings.persistence.progress_storage = kopf.SmartProgressStorage(prefix=STATE_PREFIX)
    kopf_settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=STATE_PREFIX, key="last-handled-configuration"
    )
    kopf_settings.persistence.finalizer = f"{STATE_PREFIX}/kopf-finalizer"
    # Kopf would turn its log lines into Events (a Warning per retry while a resource waits);
    # the handlers post one Event per phase transition instead.
    kopf_settings.posting.enabled = False
    return kopf_settings


def build_elector(api: client.ApiClient, settings: OperatorSettings) -> LeaderElector:
    """The candidate for the leader Lease that ``settings`` name (``--leader-election``)."""
    timings = LeaseTimings(
        settings.lease_duration_seconds, settings.renew_deadline_seconds, settings.retry_period_seconds
    )
    assert settings.lease_namespace is not None  # the settings refuse leader election without it
    leases = LeaseApi(api, settings.lease_namespace, settings.lease_name, timeout=timings.renew_deadline / 2)
    return LeaderElector(leases, settings.lease_identity or default_identity(os.environ), timings)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the operator until it is stopped (at once, or once it holds the leader Lease)."""
    settings = parse_settings(argv)
    metrics = OperatorMetrics()
    api = build_api_client(settings)
    op = Operator(KubeClient(api, settings.field_manager), settings, metrics)
    metrics.track(lambda: len(op.locks) + len(op.seen))
    registry = kopf.OperatorRegistry()
    kopf.on.login(registry=registry)(kopf.login_via_client)  # a private registry has no default login
    register_all(registry, op)
    if settings.metrics_port:
        metrics.serve(settings.metrics_port)
    kopf.configure(verbose=False)
    kopf_settings = build_kopf_settings(settings)

    def run_kopf() -> None:
        metrics.leader.set(1)
        try:
            kopf.run(
                registry=registry,
                settings=kopf_settings,
                namespaces=settings.namespaces,
                clusterwide=settings.clusterwide,
                liveness_endpoint=settings.liveness_endpoint or None,
                standalone=True,
            )
        finally:
            kopf_settings.execution.executor.shutdown(wait=True)  # handlers still running in threads end first

    if not settings.leader_election:
        run_kopf()
        return 0
    elector = build_elector(api, settings)
    with standby_health(settings.liveness_endpoint, elector.describe):
        elector.acquire()
    elector.keep(on_lost=exit_on_lost)
    try:
        run_kopf()
    finally:
        elector.release()
    return 0


if __name__ == "__main__":
    sys.exit(main())
