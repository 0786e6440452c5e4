"""Autoscaling on a server metric on the real control plane: without KEDA a condition, with KEDA a ScaledObject.

KEDA itself does not run here: its ScaledObject CRD (a minimal one, written below) is what the
operator looks for in discovery. The CRD is removed afterwards, so other tests see a cluster
without KEDA.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml

from tests.harness.cluster import Cluster
from tests.harness.operator_fixtures import StartOperator
from tests.harness.operator_process import condition, get_json, model_deployment, wait_for

pytestmark = pytest.mark.integration

PROMETHEUS = "http://prometheus-operated.monitoring.svc:9090"
KEDA_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "scaledobjects.keda.sh"},
    "spec": {
        "group": "keda.sh",
        "names": {"kind": "ScaledObject", "plural": "scaledobjects", "singular": "scaledobject"},
        "scope": "Namespaced",
        "versions": [
            {
                "name": "v1alpha1",
                "served": True,
                "storage": True,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
            }
        ],
    },
}


@pytest.fixture
def keda_crd(crds: Cluster) -> Iterator[Callable[[], None]]:
    """Installs KEDA's ScaledObject CRD on demand; removes it at the end."""
    installed: list[bool] = []

    def install() -> None:
        crds.kubectl("apply", "-f", "-", input=json.dumps(KEDA_CRD))
        crds.kubectl("wait", "--for", "condition=established", "--timeout=60s", "crd/scaledobjects.keda.sh")
        installed.append(True)

    yield install
    if installed:
        crds.kubectl("delete", "crd", "scaledobjects.keda.sh", "--wait=true", "--timeout=60s", check=False)


def _get(cluster: Cluster, ns: str, resource: str) -> dict[str, Any] | None:
    result = cluster.kubectl("get", "-n", ns, resource, "-o", "json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else None


def _degraded(cluster: Cluster, ns: str, expected: tuple[str, str]) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        obj = get_json(cluster, "-n", ns, "mdep/queue")
        current = obj.get("status", {}).get("observedGeneration") == obj["metadata"]["generation"]
        return obj if current and condition(obj, "Degraded") == expected else None

    return wait_for(f"mdep/queue Degraded={expected}", probe, timeout=90)


def test_a_server_metric_needs_keda_and_gets_a_scaled_object_once_it_is_there(
    crds: Cluster, namespace: str, start_operator: StartOperator, keda_crd: Callable[[], None]
) -> None:
    cluster, ns = crds, namespace
    server = model_deployment("queue")
    server["spec"]["autoscaling"] = {"maxReplicas": 4, "metric": "queueSize", "prometheusAddress": PROMETHEUS}
    cluster.kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump(server))
    start_operator()

    # No KEDA and no custom metrics API: the HPA could never read llm_queue_size, and status says so.
    warned = _degraded(cluster, ns, ("True", "AutoscalingMetricUnavailable"))
    message = next(c["message"] for c in warned["status"]["conditions"] if c["type"] == "Degraded")
    assert "llm_queue_size" in message and "install KEDA" in message
    assert _get(cluster, ns, "hpa/queue") is not None

    keda_crd()
    cluster.kubectl(
        "patch", "-n", ns, "mdep/queue", "--type=merge", "-p", '{"spec": {"autoscaling": {"targetValue": 5}}}'
    )
    _degraded(cluster, ns, ("False", "AsExpected"))
    scaled = wait_for("the ScaledObject", lambda: _get(cluster, ns, "scaledobject.keda.sh/queue"), timeout=60)
    assert scaled["spec"]["scaleTargetRef"] == {
        "apiVersion": "kubellm.io/v1alpha1",
        "kind": "ModelDeployment",
        "name": "queue",
    }
    assert (scaled["spec"]["minReplicaCount"], scaled["spec"]["maxReplicaCount"]) == (1, 4)
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "prometheus"
    assert trigger["metadata"] == {
        "serverAddress": PROMETHEUS,
        "query": f'sum(llm_queue_size{{namespace="{ns}",pod=~"queue-[a-z0-9]+-[a-z0-9]+"}})',
        "threshold": "5",
    }
    assert scaled["metadata"]["ownerReferences"][0]["name"] == "queue"
    wait_for("the HPA replaced", lambda: _get(cluster, ns, "hpa/queue") is None, timeout=60)
