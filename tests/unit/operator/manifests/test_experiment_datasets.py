"""Where an experiment pod finds its dataset: a PVC mounted read-only, an hf:// token as a variable."""

from __future__ import annotations

import json
from typing import Any

from kubellm.operator.api.promptexperiment import PromptExperimentSpec
from kubellm.operator.manifests import promptexperiment
from kubellm.operator.manifests.common import CONFIG_FILE, Owner
from tests.api_cases import load_example

OWNER = Owner(kind="PromptExperiment", name="qa", namespace="ns", uid="uid-qa")


def _spec(dataset: dict[str, Any]) -> PromptExperimentSpec:
    spec = load_example("promptexperiment")["spec"]
    return PromptExperimentSpec.model_validate({**spec, "dataset": dataset})


def _pod(spec: PromptExperimentSpec) -> dict[str, Any]:
    job = promptexperiment.build_experiment_job(OWNER, spec, "http://llm/v1", "m", "runtime:test")
    pod: dict[str, Any] = job["spec"]["template"]["spec"]
    return pod


def _document(spec: PromptExperimentSpec) -> dict[str, Any]:
    config = promptexperiment.build_experiment_config_map(OWNER, spec, "http://llm/v1", "m")
    document: dict[str, Any] = json.loads(config["data"][CONFIG_FILE])
    return document


def test_a_pvc_dataset_mounts_its_claim_read_only() -> None:
    spec = _spec({"uri": "pvc://evals/qa/test.jsonl", "inputField": "question"})
    pod = _pod(spec)
    assert {"name": "pvc-0", "persistentVolumeClaim": {"claimName": "evals", "readOnly": True}} in pod["volumes"]
    mounts = pod["containers"][0]["volumeMounts"]
    assert {"name": "pvc-0", "mountPath": "/mnt/pvc/evals", "readOnly": True} in mounts
    assert _document(spec)["dataset"]["uri"] == "pvc://evals/qa/test.jsonl"


def test_an_hf_dataset_token_is_a_variable_never_in_the_document() -> None:
    token = {"name": "hub", "key": "token"}
    spec = _spec({"uri": "hf://org/qa", "split": "validation", "revision": "v2", "tokenSecretRef": token})
    env = {e["name"]: e.get("valueFrom") for e in _pod(spec)["containers"][0]["env"]}
    assert env["HF_TOKEN"] == {"secretKeyRef": token}
    dataset = _document(spec)["dataset"]
    assert (dataset["uri"], dataset["split"], dataset["revision"]) == ("hf://org/qa", "validation", "v2")
    assert "tokenSecretRef" not in dataset
    assert not [v for v in _pod(spec)["volumes"] if "persistentVolumeClaim" in v or v["name"] == "dataset"]


def test_inline_rows_need_no_volume() -> None:
    pod = _pod(_spec(load_example("promptexperiment")["spec"]["dataset"]))
    assert [v["name"] for v in pod["volumes"]] == ["config", "tmp", "cache"]
