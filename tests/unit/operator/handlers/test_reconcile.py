"""The reconcile passes against an in-memory API server: waiting, building, no-op re-runs, pruning."""

from __future__ import annotations

import copy
import itertools
import logging
from typing import Any, cast

import kopf
import pytest
from kubernetes.client import ApiClient

from kubellm.operator.api import ModelDeploymentSpec
from kubellm.operator.api.common import API_VERSION
from kubellm.operator.handlers import finetunejob, modeldeployment, promptexperiment
from kubellm.operator.handlers.common import InvalidSpecError, Operator, Wait, parse_spec
from kubellm.operator.k8s import PLURALS, ApiError, KubeClient
from kubellm.operator.metrics import OperatorMetrics
from kubellm.operator.settings import OperatorSettings
from tests.api_cases import load_example

LOGGER = logging.getLogger("test")
KNOWN_PLURALS = frozenset(PLURALS.values())


class FakeApi(KubeClient):
    """KubeClient whose HTTP layer is a dict of objects keyed by path (apply replaces, merge-patch merges)."""

    def __init__(self) -> None:
        super().__init__(api=cast(ApiClient, None), field_manager="test")
        self.objects: dict[str, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self.uids = itertools.count()

    def _request(
        self, method: str, path: str, *, query: Any = None, body: Any = None, content_type: str | None = None
    ) -> dict[str, Any] | None:
        if method == "GET":
            return self._get(path)
        if method == "POST":
            self.events.append(body)
            return None
        if method == "DELETE":
            return self.objects.pop(path, None)
        if path.endswith("/status"):
            self.objects[path.removesuffix("/status")]["status"] = body["status"]
            return None
        stored: dict[str, Any] = copy.deepcopy(body)
        stored["metadata"]["uid"] = self.objects.get(path, {}).get("metadata", {}).get("uid", f"uid-{next(self.uids)}")
        self.objects[path] = stored
        return copy.deepcopy(stored)

    def _get(self, path: str) -> dict[str, Any] | None:
        if path in self.objects:
            return copy.deepcopy(self.objects[path])
        if path.rsplit("/", 1)[1] not in KNOWN_PLURALS:
            return None
        return {"items": [copy.deepcopy(o) for p, o in self.objects.items() if p.rsplit("/", 1)[0] == path]}

    def kinds(self, namespace: str = "ns") -> list[str]:
        return sorted(o["kind"] for p, o in self.objects.items() if f"/namespaces/{namespace}/" in p)


def model_deployment(name: str, ready: str, reason: str, **spec: Any) -> dict[str, Any]:
    """A ModelDeployment object as the API server returns it, with its Ready condition; ``spec`` adds fields."""
    condition = {
        "type": "Ready",
        "status": ready,
        "reason": reason,
        "message": "",
        "lastTransitionTime": "2025-01-01T00:00:00Z",
    }
    return {
        "apiVersion": API_VERSION,
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": "ns"},
        "spec": {"model": {"uri": "dummy://llama"}, "service": {"port": 8080}, **spec},
        "status": {"conditions": [condition]},
    }


def _op() -> tuple[Operator, FakeApi]:
    api = FakeApi()
    settings = OperatorSettings(image="runtime:test", metrics_port=0, liveness_endpoint=None)
    return Operator(kube=api, settings=settings, metrics=OperatorMetrics()), api


def _body(example: str, uid: str = "cr-uid", status: dict[str, Any] | None = None) -> kopf.Body:
    raw = load_example(example)
    raw["metadata"].update(namespace="ns", uid=uid, generation=1)
    if status is not None:
        raw["status"] = status
    return kopf.Body(cast(kopf.RawBody, raw))


def _writes(op: Operator) -> float:
    return sum(s.value for m in op.metrics.writes.collect() for s in m.samples if s.name.endswith("_total"))


def test_model_deployment_waits_for_its_finetunejob() -> None:
    op, api = _op()
    patch = kopf.Patch()
    wait = modeldeployment.reconcile(op, _body("modeldeployment"), patch, LOGGER)
    assert isinstance(wait, Wait)
    assert "smollm2-dates" in wait.message
    assert patch["status"]["phase"] == "WaitingForModel"
    assert patch["status"]["conditions"][0]["reason"] == "WaitingForFineTuneJob"
    assert api.kinds() == []


def _succeeded_finetunejob(op: Operator, api: FakeApi) -> None:
    patch = kopf.Patch()
    finetunejob.reconcile(op, _body("finetunejob", uid="ftj-uid"), patch, LOGGER)
    assert api.kinds() == ["ConfigMap", "ConfigMap", "Job", "Role", "RoleBinding", "ServiceAccount"]
    job_path = "/apis/batch/v1/namespaces/ns/jobs/smollm2-dates"
    api.objects[job_path]["status"] = {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}
    patch = kopf.Patch()
    finetunejob.reconcile(op, _body("finetunejob", uid="ftj-uid", status={}), patch, LOGGER)
    assert patch["status"]["phase"] == "Succeeded"
    api.objects["/apis/kubellm.io/v1alpha1/namespaces/ns/finetunejobs/smollm2-dates"] = {
        **load_example("finetunejob"),
        "status": dict(patch["status"]),
    }


def test_model_deployment_serves_the_output_and_reruns_without_writes() -> None:
    op, api = _op()
    _succeeded_finetunejob(op, api)
    patch = kopf.Patch()
    assert modeldeployment.reconcile(op, _body("modeldeployment"), patch, LOGGER) is None
    assert {"Deployment", "Service", "HorizontalPodAutoscaler"} <= set(api.kinds())
    assert patch["status"]["model"] == "pvc://kubellm-models/smollm2-dates"
    assert api.events[-1]["reason"] == "Deploying"
    before = _writes(op)
    again = kopf.Patch()
    modeldeployment.reconcile(op, _body("modeldeployment", status=dict(patch["status"])), again, LOGGER)
    assert _writes(op) == before
    assert not again


def _degraded(patch: kopf.Patch) -> tuple[str, str]:
    condition = next(c for c in patch["status"]["conditions"] if c["type"] == "Degraded")
    return condition["status"], condition["reason"]


@pytest.mark.parametrize(
    ("modes", "spec_patch", "degraded"),
    [
        (["ReadWriteOnce"], {}, ("True", "ReadWriteOnceClaimShared")),  # autoscaling up to 3 replicas
        (["ReadWriteMany"], {}, ("False", "AsExpected")),
        (["ReadWriteOnce"], {"autoscaling": None, "replicas": 1}, ("False", "AsExpected")),
    ],
)
def test_model_deployment_warns_when_replicas_share_a_single_node_claim(
    modes: list[str], spec_patch: dict[str, Any], degraded: tuple[str, str]
) -> None:
    op, api = _op()
    _succeeded_finetunejob(op, api)
    claim = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "kubellm-models"}}
    api.objects["/api/v1/namespaces/ns/persistentvolumeclaims/kubellm-models"] = {
        **claim,
        "spec": {"accessModes": modes},
        "status": {"phase": "Bound", "accessModes": modes},
    }
    raw = dict(_body("modeldeployment"))
    raw["spec"] = {k: v for k, v in {**raw["spec"], **spec_patch}.items() if v is not None}
    patch = kopf.Patch()
    modeldeployment.reconcile(op, kopf.Body(cast(kopf.RawBody, raw)), patch, LOGGER)
    assert _degraded(patch) == degraded


def test_a_claim_the_operator_may_not_read_costs_only_the_warning() -> None:
    op, api = _op()
    _succeeded_finetunejob(op, api)
    forbidden = "/api/v1/namespaces/ns/persistentvolumeclaims/kubellm-models"
    get = api._get

    def refusing(path: str) -> dict[str, Any] | None:
        if path == forbidden:
            raise ApiError(403, "persistentvolumeclaims is forbidden")
        return get(path)

    api._get = refusing  # type: ignore[method-assign]
    patch = kopf.Patch()
    assert modeldeployment.reconcile(op, _body("modeldeployment"), patch, LOGGER) is None
    assert _degraded(patch) == ("False", "AsExpected")


KEDA_DISCOVERY = {"kind": "APIResourceList", "resources": [{"name": "scaledobjects", "kind": "ScaledObject"}]}
PROMETHEUS = "http://prometheus:9090"


def _scaling_on_queue(op: Operator, **autoscaling: Any) -> kopf.Patch:
    raw = dict(_body("modeldeployment"))
    raw["spec"] = {**raw["spec"], "autoscaling": {"maxReplicas": 3, "metric": "queueSize", **autoscaling}}
    patch = kopf.Patch()
    modeldeployment.reconcile(op, kopf.Body(cast(kopf.RawBody, raw)), patch, LOGGER)
    return patch


@pytest.mark.parametrize(
    ("served", "autoscaling", "autoscaler", "degraded"),
    [
        ({"/apis/keda.sh/v1alpha1": KEDA_DISCOVERY}, {"prometheusAddress": PROMETHEUS}, "ScaledObject", "AsExpected"),
        ({"/apis/custom.metrics.k8s.io/v1beta1": {"resources": []}}, {}, "HorizontalPodAutoscaler", "AsExpected"),
        ({}, {"prometheusAddress": PROMETHEUS}, "HorizontalPodAutoscaler", "AutoscalingMetricUnavailable"),
        ({"/apis/keda.sh/v1alpha1": KEDA_DISCOVERY}, {}, "HorizontalPodAutoscaler", "AutoscalingMetricUnavailable"),
    ],
    ids=["keda", "metrics-adapter", "neither", "keda-without-prometheus"],
)
def test_a_server_metric_scales_with_keda_an_adapter_or_says_what_is_missing(
    served: dict[str, Any], autoscaling: dict[str, Any], autoscaler: str, degraded: str
) -> None:
    op, api = _op()
    _succeeded_finetunejob(op, api)
    api.objects.update(served)
    patch = _scaling_on_queue(op, **autoscaling)
    assert autoscaler in api.kinds()
    assert {"ScaledObject", "HorizontalPodAutoscaler"} & set(api.kinds()) == {autoscaler}
    assert _degraded(patch)[1] == degraded
    if degraded != "AsExpected":
        message = next(c["message"] for c in patch["status"]["conditions"] if c["type"] == "Degraded")
        fix = "set autoscaling.prometheusAddress" if "keda.sh" in str(served) else "install KEDA"
        assert "llm_queue_size" in message and fix in message


def test_keda_installed_later_replaces_the_hpa() -> None:
    op, api = _op()
    _succeeded_finetunejob(op, api)
    first = _scaling_on_queue(op, prometheusAddress=PROMETHEUS)
    assert "HorizontalPodAutoscaler" in api.kinds() and _degraded(first)[0] == "True"
    api.objects["/apis/keda.sh/v1alpha1"] = KEDA_DISCOVERY
    raw = dict(_body("modeldeployment", status=dict(first["status"])))
    raw["spec"] = {
        **raw["spec"],
        "autoscaling": {"maxReplicas": 3, "metric": "queueSize", "prometheusAddress": PROMETHEUS},
    }
    again = kopf.Patch()
    modeldeployment.reconcile(op, kopf.Body(cast(kopf.RawBody, raw)), again, LOGGER)
    assert "ScaledObject" in api.kinds() and "HorizontalPodAutoscaler" not in api.kinds()
    assert _degraded(again) == ("False", "AsExpected")


def test_dropping_autoscaling_deletes_the_autoscaler() -> None:
    op, api = _op()
    _succeeded_finetunejob(op, api)
    patch = kopf.Patch()
    modeldeployment.reconcile(op, _body("modeldeployment"), patch, LOGGER)
    body = _body("modeldeployment", status=dict(patch["status"]))
    raw = dict(body)
    raw["spec"] = {k: v for k, v in body["spec"].items() if k != "autoscaling"}
    modeldeployment.reconcile(op, kopf.Body(cast(kopf.RawBody, raw)), kopf.Patch(), LOGGER)
    assert "HorizontalPodAutoscaler" not in api.kinds()


def test_experiment_waits_for_a_ready_target() -> None:
    op, api = _op()
    patch = kopf.Patch()
    wait = promptexperiment.reconcile(op, _body("promptexperiment"), patch, LOGGER)
    assert isinstance(wait, Wait)
    assert patch["status"]["phase"] == "WaitingForTarget"
    assert "Job" not in api.kinds()


def test_invalid_spec_is_reported() -> None:
    with pytest.raises(InvalidSpecError, match="model or fineTuneJobRef"):
        parse_spec(ModelDeploymentSpec, {"spec": {}})


def test_service_monitor_without_its_crd_is_an_invalid_spec() -> None:
    op, api = _op()
    _succeeded_finetunejob(op, api)
    original = api._request

    def no_monitoring_crd(method: str, path: str, **kwargs: Any) -> dict[str, Any] | None:
        if "/monitoring.coreos.com/" in path and method == "PATCH":
            raise ApiError(404, "the server could not find the requested resource")
        return original(method, path, **kwargs)

    api._request = no_monitoring_crd  # type: ignore[method-assign]
    raw = dict(_body("modeldeployment"))
    raw["spec"] = {**raw["spec"], "monitoring": {"serviceMonitor": True}}
    with pytest.raises(InvalidSpecError, match="ServiceMonitor CRD"):
        modeldeployment.reconcile(op, kopf.Body(cast(kopf.RawBody, raw)), kopf.Patch(), LOGGER)
