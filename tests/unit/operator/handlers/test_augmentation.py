"""A FineTuneJob that augments its data with a ModelDeployment waits for it, then hands its URL to the pod."""

from __future__ import annotations

import logging
from typing import Any, cast

import kopf
import yaml

from kubellm.operator.api.common import API_VERSION
from kubellm.operator.handlers import finetunejob
from kubellm.operator.handlers.common import Operator, Wait
from kubellm.operator.k8s import resource_path
from kubellm.operator.manifests.common import CONFIG_FILE
from kubellm.operator.metrics import OperatorMetrics
from kubellm.operator.settings import OperatorSettings
from tests.api_cases import load_example
from tests.unit.operator.handlers.test_reconcile import FakeApi, model_deployment

LOGGER = logging.getLogger("test")
WRITER = resource_path(API_VERSION, "ModelDeployment", "ns", "writer")


def _op() -> tuple[Operator, FakeApi]:
    api = FakeApi()
    settings = OperatorSettings(image="runtime:test", metrics_port=0, liveness_endpoint=None)
    return Operator(kube=api, settings=settings, metrics=OperatorMetrics()), api


def _body(status: dict[str, Any] | None = None) -> kopf.Body:
    raw = load_example("finetunejob")
    raw["metadata"].update(namespace="ns", uid="ftj-uid", generation=1)
    raw["spec"]["dataAugmentation"] = {"modelDeploymentRef": {"name": "writer"}, "model": "writer-adapter"}
    if status is not None:
        raw["status"] = status
    return kopf.Body(cast(kopf.RawBody, raw))


def _writer(ready: str, reason: str) -> dict[str, Any]:
    return model_deployment("writer", ready, reason, apiKeySecretRef={"name": "k", "key": "a"})


def _waits(op: Operator, api: FakeApi, message: str) -> None:
    patch = kopf.Patch()
    wait = finetunejob.reconcile(op, _body(), patch, LOGGER)
    assert isinstance(wait, Wait)
    assert message in wait.message
    assert patch["status"]["phase"] == "Pending"
    assert {c["type"]: (c["status"], c["reason"]) for c in patch["status"]["conditions"]} == {
        "Succeeded": ("Unknown", "WaitingForModelDeployment"),
        "Failed": ("False", "WaitingForModelDeployment"),
        "Progressing": ("True", "WaitingForModelDeployment"),
    }
    assert "Job" not in api.kinds()


def test_training_waits_for_the_augmenting_model_deployment_then_gets_its_url() -> None:
    op, api = _op()
    _waits(op, api, "waiting for ModelDeployment writer to exist")
    api.objects[WRITER] = _writer("False", "Deploying")
    _waits(op, api, "waiting for ModelDeployment writer to be Ready (Deploying)")

    api.objects[WRITER] = _writer("True", "ReplicasReady")
    patch = kopf.Patch()
    assert finetunejob.reconcile(op, _body(), patch, LOGGER) is None
    assert "Job" in api.kinds()
    config_map = next(o for o in api.objects.values() if o["kind"] == "ConfigMap" and CONFIG_FILE in o.get("data", {}))
    config = yaml.safe_load(config_map["data"][CONFIG_FILE])
    assert config["augmentationServer"] == {"url": "http://writer.ns.svc:8080/v1", "model": "writer-adapter"}
    job = next(o for o in api.objects.values() if o["kind"] == "Job")
    env = {e["name"]: e.get("valueFrom") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["KUBELLM_AUGMENTATION_API_KEY"] == {"secretKeyRef": {"name": "k", "key": "a"}}

    # Once the Job exists, the ModelDeployment going away does not hold the FineTuneJob back.
    del api.objects[WRITER]
    assert finetunejob.reconcile(op, _body(status=dict(patch["status"])), kopf.Patch(), LOGGER) is None
    assert "Job" in api.kinds()
