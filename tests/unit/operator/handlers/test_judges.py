"""A PromptExperiment whose judge is a ModelDeployment waits for it, then hands its URL, model and key to the pod."""

from __future__ import annotations

import logging
from typing import Any, cast

import kopf
import yaml

from kubellm.operator.api.common import API_VERSION
from kubellm.operator.api.promptexperiment import PromptExperimentSpec
from kubellm.operator.handlers import promptexperiment
from kubellm.operator.handlers.common import Operator, Wait
from kubellm.operator.k8s import resource_path
from kubellm.operator.manifests import promptexperiment as manifests
from kubellm.operator.manifests.common import CONFIG_FILE, Owner
from kubellm.operator.metrics import OperatorMetrics
from kubellm.operator.settings import OperatorSettings
from tests.api_cases import load_example
from tests.unit.operator.handlers.test_reconcile import FakeApi, model_deployment

LOGGER = logging.getLogger("test")
GRADER = resource_path(API_VERSION, "ModelDeployment", "ns", "grader")
JUDGES = [
    {"name": "quality", "type": "judge", "judge": {"modelDeploymentRef": {"name": "grader"}, "rubric": "Correct."}},
    {
        "name": "style",
        "type": "judge",
        "weight": "0",
        "judge": {
            "url": "http://judge.example/v1",
            "model": "big",
            "apiKeySecretRef": {"name": "judge-key", "key": "token"},
            "rubric": "Plain words.",
            "scale": 10,
            "maxTokens": 16,
        },
    },
]


def _op() -> tuple[Operator, FakeApi]:
    api = FakeApi()
    settings = OperatorSettings(image="runtime:test", metrics_port=0, liveness_endpoint=None)
    return Operator(kube=api, settings=settings, metrics=OperatorMetrics()), api


def _raw() -> dict[str, Any]:
    raw = load_example("promptexperiment")
    raw["metadata"].update(namespace="ns", uid="pexp-uid", generation=1)
    raw["spec"]["target"] = {"url": "http://llm:8000/v1", "model": "llm"}
    raw["spec"]["scorers"] = [*raw["spec"]["scorers"], *JUDGES]
    return raw


def _grader(ready: str, reason: str) -> dict[str, Any]:
    return model_deployment(
        "grader", ready, reason, servedModelName="grader-7b", apiKeySecretRef={"name": "grader-keys", "key": "a"}
    )


def _waits(op: Operator, api: FakeApi, message: str) -> None:
    patch = kopf.Patch()
    wait = promptexperiment.reconcile(op, kopf.Body(cast(kopf.RawBody, _raw())), patch, LOGGER)
    assert isinstance(wait, Wait)
    ready = next(c for c in patch["status"]["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "WaitingForTarget")
    assert ready["message"] == message
    assert patch["status"]["phase"] == "WaitingForTarget"
    assert "Job" not in api.kinds()


def test_the_experiment_waits_for_its_judge_then_the_pod_gets_its_url_model_and_key() -> None:
    op, api = _op()
    _waits(op, api, "judge of scorer quality: waiting for ModelDeployment grader to exist")
    api.objects[GRADER] = _grader("False", "Deploying")
    _waits(op, api, "judge of scorer quality: waiting for ModelDeployment grader to be Ready (Deploying)")

    api.objects[GRADER] = _grader("True", "ReplicasReady")
    assert promptexperiment.reconcile(op, kopf.Body(cast(kopf.RawBody, _raw())), kopf.Patch(), LOGGER) is None
    config_map = next(o for o in api.objects.values() if o["kind"] == "ConfigMap" and CONFIG_FILE in o.get("data", {}))
    scorers = {s["name"]: s for s in yaml.safe_load(config_map["data"][CONFIG_FILE])["scorers"]}
    assert scorers["quality"]["judge"] == {
        "url": "http://grader.ns.svc:8080/v1",
        "model": "grader-7b",
        "rubric": "Correct.",
        "scale": 5,
    }
    job = next(o for o in api.objects.values() if o["kind"] == "Job")
    env = {e["name"]: e.get("valueFrom") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["KUBELLM_JUDGE_API_KEY_QUALITY"] == {"secretKeyRef": {"name": "grader-keys", "key": "a"}}
    assert env["KUBELLM_JUDGE_API_KEY_STYLE"] == {"secretKeyRef": {"name": "judge-key", "key": "token"}}


def test_the_run_document_carries_the_judges_servers_and_no_reference_or_secret() -> None:
    spec = PromptExperimentSpec.model_validate(_raw()["spec"])
    owner = Owner(kind="PromptExperiment", name="judged", namespace="ns", uid="u")
    judges = {"quality": manifests.JudgeEndpoint(url="http://grader.ns.svc:80/v1", model="grader-7b")}
    children = manifests.build_children(owner, spec, "http://llm:8000/v1", "llm", "runtime:test", judges=judges)
    text = children[0]["data"][CONFIG_FILE]
    scorers = {s["name"]: s for s in yaml.safe_load(text)["scorers"]}
    assert scorers["quality"]["judge"] == {
        "url": "http://grader.ns.svc:80/v1",
        "model": "grader-7b",
        "rubric": "Correct.",
        "scale": 5,
    }
    assert scorers["style"]["judge"] == {
        "url": "http://judge.example/v1",
        "model": "big",
        "rubric": "Plain words.",
        "scale": 10,
        "maxTokens": 16,
    }
    assert "modelDeploymentRef" not in text and "SecretRef" not in text and "judge-key" not in text
    env = {e["name"]: e.get("valueFrom") for e in children[-1]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert "KUBELLM_JUDGE_API_KEY_QUALITY" not in env  # neither the scorer nor (unresolved here) the server has a key
    assert env["KUBELLM_JUDGE_API_KEY_STYLE"] == {"secretKeyRef": {"name": "judge-key", "key": "token"}}
