"""``python -m kubellm.operator``: run the operator (namespace-scoped with ``--namespace``, else cluster-wide).

Builds the one settings object, the API client, the metrics and the Kopf settings, registers
the handlers and runs Kopf with its liveness endpoint. See :mod:`kubellm.operator.settings`
for the flags (watch timeouts, retry delays, peering).

Several replicas (``--peering NAME``) use Kopf's peering: only the live replica with the
highest priority acts, the others stand by and take over when its keep-alive expires (see
:mod:`kubellm.operator.settings`). The peering object must exist before the operator starts:
without it Kopf would stay paused, healthy-looking and idle, so :func:`main` exits instead.

API outages: Kopf retries a failing request (a watch's too) along :func:`retry_backoffs`,
``--api-retry-seconds`` in all (10 minutes by default; Kopf's own budget is under a minute,
and a restarted API server answers 403 until its RBAC cache is warm). A watch that still gives
up stops the whole operator (Kopf escalates it), so the kubelet restarts it: never a silent stall.
"""

from __future__ import annotations

import itertools
import random
import sys
from collections.abc import Sequence
from urllib.parse import quote

import kopf
from kubernetes import client, config

from kubellm.operator.handlers import Operator, register_all
from kubellm.operator.k8s import KubeClient
from kubellm.operator.metrics import OperatorMetrics
from kubellm.operator.settings import OperatorSettings, parse_settings

__all__ = ["build_kopf_settings", "main", "missing_peerings", "peering_priority", "retry_backoffs"]

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
    kopf_settings.peering.lifetime = settings.peering_lifetime
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


def peering_priority(settings: OperatorSettings) -> int:
    """This replica's peering priority: the configured one, else a random one (replicas must differ)."""
    if settings.priority is not None:
        return settings.priority
    return random.SystemRandom().randint(1, 2**31 - 1)


def missing_peerings(kube: KubeClient, settings: OperatorSettings) -> list[str]:
    """The peering objects ``--peering`` needs that do not exist (empty when standalone)."""
    if settings.peering is None:
        return []
    name = quote(settings.peering)
    if settings.clusterwide:
        paths = {"ClusterKopfPeering": f"/apis/kopf.dev/v1/clusterkopfpeerings/{name}"}
    else:
        paths = {
            f"KopfPeering in {ns}": f"/apis/kopf.dev/v1/namespaces/{quote(ns)}/kopfpeerings/{name}"
            for ns in settings.namespaces
        }
    return [f"{what} {settings.peering}" for what, path in paths.items() if kube.read(path) is None]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the operator until it is stopped."""
    settings = parse_settings(argv)
    metrics = OperatorMetrics()
    kube = KubeClient(build_api_client(settings), settings.field_manager)
    missing = missing_peerings(kube, settings)
    if missing:
        print(f"error: --peering needs {', '.join(missing)} (and Kopf's kopf.dev CRDs); create them", file=sys.stderr)
        return 2
    op = Operator(kube, settings, metrics)
    metrics.track(lambda: len(op.locks) + len(op.seen))
    registry = kopf.OperatorRegistry()
    kopf.on.login(registry=registry)(kopf.login_via_client)  # a private registry has no default login
    register_all(registry, op)
    if settings.metrics_port:
        metrics.serve(settings.metrics_port)
    kopf.configure(verbose=False)
    kopf.run(
        registry=registry,
        settings=build_kopf_settings(settings),
        namespaces=settings.namespaces,
        clusterwide=settings.clusterwide,
        liveness_endpoint=settings.liveness_endpoint or None,
        standalone=settings.peering is None,
        peering_name=settings.peering,
        priority=peering_priority(settings),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
