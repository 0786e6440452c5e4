"""``python -m kubellm.operator``: run the operator (namespace-scoped with ``--namespace``, else cluster-wide).

Builds the one settings object, the API client, the metrics and the Kopf settings, registers
the handlers and runs Kopf with its liveness endpoint. See :mod:`kubellm.operator.settings`
for the flags (watch timeouts, retry delays, peering).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import kopf
from kubernetes import client, config

from kubellm.operator.handlers import Operator, register_all
from kubellm.operator.k8s import KubeClient
from kubellm.operator.metrics import OperatorMetrics
from kubellm.operator.settings import OperatorSettings, parse_settings

__all__ = ["build_kopf_settings", "main"]

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


def build_kopf_settings(settings: OperatorSettings) -> kopf.OperatorSettings:
    """Kopf's settings: watch timeouts, workers, where Kopf keeps its state, what it posts."""
    kopf_settings = kopf.OperatorSettings()
    kopf_settings.watching.server_timeout = settings.server_timeout
    kopf_settings.watching.client_timeout = settings.client_timeout
    kopf_settings.watching.connect_timeout = settings.connect_timeout
    kopf_settings.execution.max_workers = settings.workers
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


def main(argv: Sequence[str] | None = None) -> int:
    """Run the operator until it is stopped."""
    settings = parse_settings(argv)
    metrics = OperatorMetrics()
    op = Operator(KubeClient(build_api_client(settings), settings.field_manager), settings, metrics)
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
        priority=settings.priority,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
