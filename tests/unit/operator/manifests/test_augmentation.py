"""The training pod's config and env when the FineTuneJob augments its data."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from kubellm.contract.training import AugmentationServer, TrainingRun
from kubellm.operator.api import FineTuneJobSpec
from kubellm.operator.api.common import SecretKeyRef
from kubellm.operator.manifests import finetunejob
from kubellm.operator.manifests.common import CONFIG_FILE, CONFIG_HASH_ANNOTATION, Owner
from tests.api_cases import load_example

IMAGE = "ghcr.io/kubellm/runtime:0.1.0"
OWNER = Owner(kind="FineTuneJob", name="augmented", namespace="ns", uid="uid-1")
ENDPOINT = finetunejob.AugmentationEndpoint(
    AugmentationServer(url="http://writer.ns.svc:8080/v1", model="writer-adapter"),
    SecretKeyRef(name="writer-keys", key="api"),
)


def _spec(augmentation: dict[str, Any] | None) -> FineTuneJobSpec:
    spec = load_example("finetunejob")["spec"]
    if augmentation is not None:
        spec["dataAugmentation"] = augmentation
    return FineTuneJobSpec.model_validate(spec)


def _pod_config(children: list[dict[str, Any]]) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(children[0]["data"][CONFIG_FILE])
    return document


def _env(job: dict[str, Any]) -> dict[str, Any]:
    container = job["spec"]["template"]["spec"]["containers"][0]
    return {item["name"]: item.get("value", item.get("valueFrom")) for item in container["env"]}


def test_in_process_augmentation_needs_no_server() -> None:
    spec = _spec({"mode": "new", "rowsPerExample": 2, "temperature": "0.9"})
    children = finetunejob.build_children(OWNER, spec, IMAGE)
    config = _pod_config(children)
    assert config["dataAugmentation"] == {"mode": "new", "rowsPerExample": 2, "temperature": "0.9", "maxTokens": 256}
    assert "augmentationServer" not in config
    assert "KUBELLM_AUGMENTATION_API_KEY" not in _env(children[-1])
    assert TrainingRun.model_validate(config).data_augmentation == spec.data_augmentation


def test_the_resolved_server_and_its_api_key_reach_the_pod() -> None:
    spec = _spec({"modelDeploymentRef": {"name": "writer"}, "model": "writer-adapter"})
    children = finetunejob.build_children(OWNER, spec, IMAGE, ENDPOINT)
    config = _pod_config(children)
    assert config["augmentationServer"] == {"url": "http://writer.ns.svc:8080/v1", "model": "writer-adapter"}
    job = TrainingRun.model_validate(config)  # what the pod reads back
    assert job.augmentation_server == ENDPOINT.server
    assert _env(children[-1])["KUBELLM_AUGMENTATION_API_KEY"] == {"secretKeyRef": {"name": "writer-keys", "key": "api"}}
    keyless = finetunejob.AugmentationEndpoint(ENDPOINT.server)
    assert "KUBELLM_AUGMENTATION_API_KEY" not in _env(finetunejob.build_training_job(OWNER, spec, IMAGE, keyless))


def test_another_server_changes_the_config_hash() -> None:
    spec = _spec({"modelDeploymentRef": {"name": "writer"}})
    moved = finetunejob.AugmentationEndpoint(AugmentationServer(url="http://writer.ns.svc:80/v1", model="writer"))
    hashes = {
        finetunejob.build_training_job(OWNER, spec, IMAGE, endpoint)["spec"]["template"]["metadata"]["annotations"][
            CONFIG_HASH_ANNOTATION
        ]
        for endpoint in (ENDPOINT, moved)
    }
    assert len(hashes) == 2


def test_an_unresolved_model_deployment_reference_is_a_bug_not_a_config() -> None:
    spec = _spec({"modelDeploymentRef": {"name": "writer"}})
    with pytest.raises(ValueError, match="has to be resolved to a server first"):
        finetunejob.build_children(OWNER, spec, IMAGE)
