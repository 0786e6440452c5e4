"""The autoscaler a ModelDeployment gets: an HPA, or with KEDA a ScaledObject on the server's metric in Prometheus."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from kubellm.operator.api import ModelDeploymentSpec
from kubellm.operator.manifests import modeldeployment
from kubellm.operator.manifests.common import Owner
from tests.api_cases import load_example

OWNER = Owner(kind="ModelDeployment", name="smollm2", namespace="team-a", uid="uid-1")
SERVED = modeldeployment.ServedModel(uri="hf://org/model")
PROMETHEUS = "http://prometheus-operated.monitoring.svc:9090"


def _spec(**autoscaling: Any) -> ModelDeploymentSpec:
    spec: dict[str, Any] = copy.deepcopy(load_example("modeldeployment")["spec"])
    spec["autoscaling"] = {"minReplicas": 2, "maxReplicas": 6, **autoscaling}
    return ModelDeploymentSpec.model_validate(spec)


@pytest.mark.parametrize(("metric", "target", "query", "threshold"), [
    ("queueSize", None, 'sum(llm_queue_size{namespace="team-a",pod=~"smollm2-[a-z0-9]+-[a-z0-9]+"})', "4"),
    ("activeRequests", 3, 'sum(llm_active_requests{namespace="team-a",pod=~"smollm2-[a-z0-9]+-[a-z0-9]+"})', "3"),
])  # fmt: skip
def test_a_scaled_object_sums_the_metric_over_the_servers_pods(
    metric: str, target: int | None, query: str, threshold: str
) -> None:
    scaled = modeldeployment.build_server_scaled_object(
        OWNER, _spec(metric=metric, targetValue=target, prometheusAddress=PROMETHEUS)
    )
    assert scaled is not None
    assert scaled["apiVersion"] == "keda.sh/v1alpha1" and scaled["kind"] == "ScaledObject"
    assert scaled["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert scaled["spec"] == {
        "scaleTargetRef": {"apiVersion": "kubellm.io/v1alpha1", "kind": "ModelDeployment", "name": "smollm2"},
        "minReplicaCount": 2,
        "maxReplicaCount": 6,
        "triggers": [
            {"type": "prometheus", "metadata": {"serverAddress": PROMETHEUS, "query": query, "threshold": threshold}}
        ],
    }


def test_no_scaled_object_without_a_server_metric_and_its_prometheus() -> None:
    assert modeldeployment.build_server_scaled_object(OWNER, _spec(metric="cpu")) is None
    assert modeldeployment.build_server_scaled_object(OWNER, _spec(metric="queueSize")) is None


def _autoscalers(spec: ModelDeploymentSpec, *, keda: bool) -> list[str]:
    children = modeldeployment.build_children(OWNER, spec, SERVED, "image:1", keda=keda)
    return [child["kind"] for child in children if child["kind"] in ("HorizontalPodAutoscaler", "ScaledObject")]


def test_keda_replaces_the_hpa_only_for_a_server_metric_with_its_prometheus() -> None:
    keda_ready = _spec(metric="queueSize", prometheusAddress=PROMETHEUS)
    assert _autoscalers(keda_ready, keda=True) == ["ScaledObject"]
    assert _autoscalers(keda_ready, keda=False) == ["HorizontalPodAutoscaler"]  # an adapter may serve the metric
    assert _autoscalers(_spec(metric="queueSize"), keda=True) == ["HorizontalPodAutoscaler"]
    assert _autoscalers(_spec(metric="cpu"), keda=True) == ["HorizontalPodAutoscaler"]
    assert ("keda.sh/v1alpha1", "ScaledObject") in modeldeployment.OPTIONAL_CHILDREN  # pruned when not wanted
