"""Claims on the real control plane: replicas that may share a single-node claim are a Degraded warning.

The operator reads the claims a ModelDeployment's pods mount (``get`` on persistentvolumeclaims,
under its own least-privilege RBAC) when the spec can run more than one replica.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from kubellm.operator.api.modeldeployment import REASON_READ_WRITE_ONCE_CLAIM_SHARED
from tests.harness.cluster import Cluster
from tests.harness.operator_fixtures import StartOperator
from tests.harness.operator_process import condition, get_json, wait_for

pytestmark = pytest.mark.integration


def _claim(name: str, mode: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name},
        "spec": {"accessModes": [mode], "resources": {"requests": {"storage": "1Gi"}}},
    }


def _server(name: str, claim: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kubellm.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {"model": {"uri": f"pvc://{claim}/model"}, "resources": {"requests": {"cpu": "100m"}}, **spec},
    }


def _degraded(cluster: Cluster, ns: str, name: str, expected: tuple[str, str]) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        obj = get_json(cluster, "-n", ns, f"mdep/{name}")
        generation_seen = obj.get("status", {}).get("observedGeneration") == obj["metadata"]["generation"]
        return obj if generation_seen and condition(obj, "Degraded") == expected else None

    return wait_for(f"mdep/{name} Degraded={expected}", probe, timeout=90)


def test_replicas_sharing_a_read_write_once_claim_are_a_degraded_warning(
    crds: Cluster, namespace: str, start_operator: StartOperator
) -> None:
    cluster, ns = crds, namespace
    documents = [
        _claim("single-node", "ReadWriteOnce"),
        _claim("shared", "ReadWriteMany"),
        _server("on-rwo", "single-node", autoscaling={"minReplicas": 1, "maxReplicas": 3}),
        _server("on-rwx", "shared", replicas=2),
    ]
    cluster.kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump_all(documents))
    start_operator()

    warned = _degraded(cluster, ns, "on-rwo", ("True", REASON_READ_WRITE_ONCE_CLAIM_SHARED))
    message = next(c["message"] for c in warned["status"]["conditions"] if c["type"] == "Degraded")
    assert "up to 3 replicas mount claim single-node (ReadWriteOnce)" in message
    _degraded(cluster, ns, "on-rwx", ("False", "AsExpected"))

    # One replica at most: nothing to warn about any more.
    one = '{"spec": {"autoscaling": null, "replicas": 1}}'
    cluster.kubectl("patch", "-n", ns, "mdep/on-rwo", "--type=merge", "-p", one)
    _degraded(cluster, ns, "on-rwo", ("False", "AsExpected"))
