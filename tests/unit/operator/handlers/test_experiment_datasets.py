"""A PromptExperiment whose dataset is a ConfigMap key waits, Ready False with a one-line reason, until it exists."""

from __future__ import annotations

import json
import logging
from typing import Any, cast

import kopf

from kubellm.operator.handlers import promptexperiment
from kubellm.operator.handlers.common import Operator, Wait
from kubellm.operator.k8s import resource_path
from kubellm.operator.manifests.common import CONFIG_FILE
from kubellm.operator.metrics import OperatorMetrics
from kubellm.operator.settings import OperatorSettings
from tests.api_cases import load_example
from tests.unit.operator.handlers.test_reconcile import FakeApi

LOGGER = logging.getLogger("test")
CASES = resource_path("v1", "ConfigMap", "ns", "qa-cases")


def _op() -> tuple[Operator, FakeApi]:
    api = FakeApi()
    settings = OperatorSettings(image="runtime:test", metrics_port=0, liveness_endpoint=None)
    return Operator(kube=api, settings=settings, metrics=OperatorMetrics()), api


def _body() -> kopf.Body:
    raw = load_example("promptexperiment")
    raw["metadata"].update(namespace="ns", uid="pexp-uid", generation=1)
    raw["spec"]["target"] = {"url": "http://llm:8000/v1"}
    raw["spec"]["dataset"] = {"configMapKeyRef": {"name": "qa-cases", "key": "cases.jsonl"}, "maxRows": 50}
    return kopf.Body(cast(kopf.RawBody, raw))


def _ready(patch: kopf.Patch) -> dict[str, Any]:
    return next(c for c in patch["status"]["conditions"] if c["type"] == "Ready")


def test_a_missing_configmap_or_key_is_a_reason_in_status_and_no_job() -> None:
    op, api = _op()
    patch = kopf.Patch()
    wait = promptexperiment.reconcile(op, _body(), patch, LOGGER)
    assert isinstance(wait, Wait)
    ready = _ready(patch)
    assert (ready["status"], ready["reason"]) == ("False", "DatasetNotFound")
    assert ready["message"] == "ConfigMap qa-cases (spec.dataset.configMapKeyRef) does not exist"
    assert patch["status"]["phase"] == "Pending"
    assert "Job" not in api.kinds()

    api.objects[CASES] = {"kind": "ConfigMap", "metadata": {"name": "qa-cases"}, "data": {"other.csv": "input\n"}}
    patch = kopf.Patch()
    assert isinstance(promptexperiment.reconcile(op, _body(), patch, LOGGER), Wait)
    assert _ready(patch)["message"] == (
        "ConfigMap qa-cases has no key 'cases.jsonl' (spec.dataset.configMapKeyRef; keys: other.csv)"
    )
    assert "Job" not in api.kinds()


def test_once_the_key_exists_the_job_mounts_it_and_the_document_names_the_file() -> None:
    op, api = _op()
    api.objects[CASES] = {"kind": "ConfigMap", "metadata": {"name": "qa-cases"}, "data": {"cases.jsonl": "{}"}}
    assert promptexperiment.reconcile(op, _body(), kopf.Patch(), LOGGER) is None
    job = api.objects[resource_path("batch/v1", "Job", "ns", "prompt-styles")]
    pod = job["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "dataset")
    assert volume["configMap"] == {"name": "qa-cases", "items": [{"key": "cases.jsonl", "path": "cases.jsonl"}]}
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "dataset")
    assert mount == {"name": "dataset", "mountPath": "/mnt/configmap/qa-cases", "readOnly": True}
    config = api.objects[resource_path("v1", "ConfigMap", "ns", "prompt-styles-config")]
    dataset = json.loads(config["data"][CONFIG_FILE])["dataset"]
    assert dataset["uri"] == "/mnt/configmap/qa-cases/cases.jsonl" and "configMapKeyRef" not in dataset
    assert dataset["maxRows"] == 50
