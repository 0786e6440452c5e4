"""On the real control plane: a FineTuneJob augmenting its data with a ModelDeployment waits for it to be Ready,
then its training pod's config names the ModelDeployment's Service URL (kwok runs no code)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from tests.api_cases import example_documents
from tests.harness.cluster import Cluster
from tests.harness.operator_fixtures import StartOperator
from tests.harness.operator_process import condition, get_json, model_deployment, wait_for

pytestmark = pytest.mark.integration


def _augmented_finetunejob() -> list[dict[str, Any]]:
    claim, job = example_documents("finetunejob")
    job["metadata"]["name"] = "augmented"
    job["spec"]["output"]["pvc"]["path"] = "augmented"
    job["spec"]["dataAugmentation"] = {"modelDeploymentRef": {"name": "writer"}, "rowsPerExample": 2}
    return [claim, job]


def _get(cluster: Cluster, ns: str, resource: str) -> dict[str, Any] | None:
    result = cluster.kubectl("get", "-n", ns, resource, "-o", "json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else None


def test_training_waits_for_the_augmenting_model_deployment(
    crds: Cluster, namespace: str, start_operator: StartOperator
) -> None:
    cluster, ns = crds, namespace
    start_operator()
    manifests = {"apiVersion": "v1", "kind": "List", "items": _augmented_finetunejob()}
    cluster.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(manifests))  # JSON: "1e-3" stays a string

    def waiting() -> dict[str, Any] | None:
        found = _get(cluster, ns, "ftj/augmented")
        return found if found and condition(found, "Succeeded") == ("Unknown", "WaitingForModelDeployment") else None

    pending = wait_for("the FineTuneJob to wait for its ModelDeployment", waiting)
    assert pending["status"]["phase"] == "Pending"
    assert "waiting for ModelDeployment writer" in pending["status"]["conditions"][0]["message"]
    assert _get(cluster, ns, "job/augmented") is None

    writer = model_deployment("writer")
    writer["spec"]["service"] = {"port": 8080}
    cluster.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(writer))
    wait_for("the training Job", lambda: _get(cluster, ns, "job/augmented"), timeout=90)
    config = yaml.safe_load(get_json(cluster, "-n", ns, "cm/augmented-config")["data"]["config.yaml"])
    assert config["augmentationServer"] == {"url": f"http://writer.{ns}.svc:8080/v1", "model": "writer"}
    assert config["dataAugmentation"]["rowsPerExample"] == 2
