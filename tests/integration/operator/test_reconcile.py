"""The operator on the real control plane, under its own least-privilege RBAC.

Each example reaches its terminal/Ready state with the spec's values in its children; a
ModelDeployment waits for its FineTuneJob, or says why its pods do not run; children are
restored, updated in place and garbage-collected; an unchanged object costs 0 writes on a
re-run. (Kills, API server restarts, two replicas, conflicting writers and create/delete
churn are in ``tests/reliability/test_operator_*.py``.)

PromptExperiment results: kwok runs no code, so the test plays the runtime's part of the
report channel (see :mod:`kubellm.operator.manifests.reporting`): it merge-patches
``result.json`` into the ``<name>-report`` ConfigMap, as the experiment pod does with its
narrowly-scoped ServiceAccount.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from tests.api_cases import EXAMPLES, load_example
from tests.harness.cluster import Cluster
from tests.harness.operator_fixtures import StartOperator
from tests.harness.operator_process import CHILD_KINDS, MANAGED, condition, get_json, settled, wait_for
from tests.harness.operator_process import model_deployment as _model_deployment

pytestmark = pytest.mark.integration

IMAGE = "ghcr.io/kubellm/runtime:0.1.0"
RESULT = {
    "winner": "few-shot",
    "summary": "few-shot beats zero-shot on score by 0.38 (p=0.004)",
    "results": [
        {"name": "zero-shot", "samples": 8, "metrics": [{"name": "score", "mean": 0.5, "ciLow": 0.2, "ciHigh": 0.8}]},
        {"name": "few-shot", "samples": 8, "metrics": [{"name": "score", "mean": 0.88, "ciLow": 0.7, "ciHigh": 1.0}]},
    ],
    "comparisons": [
        {"variant": "few-shot", "control": "zero-shot", "metric": "score", "difference": 0.38, "significant": True}
    ],
}


def _wait_condition(
    cluster: Cluster, ns: str, resource: str, kind: str, status: str, *, timeout: float = 60
) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        obj = get_json(cluster, "-n", ns, resource)
        found = condition(obj, kind)
        return obj if found and found[0] == status else None

    return wait_for(f"{resource} {kind}={status}", probe, timeout=timeout)


def _get(cluster: Cluster, ns: str, resource: str) -> dict[str, Any] | None:
    result = cluster.kubectl("get", "-n", ns, resource, "-o", "json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else None


def _container(obj: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = obj["spec"]["template"]["spec"]["containers"][0]
    return container


def _owned_by(obj: dict[str, Any], owner: dict[str, Any]) -> bool:
    refs = obj["metadata"].get("ownerReferences", [])
    return any(ref["uid"] == owner["metadata"]["uid"] and ref.get("controller") for ref in refs)


def _apply(cluster: Cluster, ns: str, *documents: dict[str, Any]) -> None:
    cluster.kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump_all(documents))


def test_examples_reach_their_states(crds: Cluster, namespace: str, start_operator: StartOperator) -> None:
    cluster, ns = crds, namespace
    start_operator()
    # The ModelDeployment comes first: it must wait, saying why.
    cluster.kubectl("apply", "-n", ns, "-f", str(EXAMPLES / "modeldeployment.yaml"))
    waiting = _wait_condition(cluster, ns, "mdep/smollm2", "Ready", "False")
    assert condition(waiting, "Ready") == ("False", "WaitingForFineTuneJob")
    assert _get(cluster, ns, "deploy/smollm2") is None

    cluster.kubectl("apply", "-n", ns, "-f", str(EXAMPLES / "finetunejob.yaml"))
    ftj = _wait_condition(cluster, ns, "ftj/smollm2-dates", "Succeeded", "True")
    base_model = load_example("finetunejob")["spec"]["baseModel"]["uri"]
    output = {"uri": "pvc://kubellm-models/smollm2-dates", "kind": "adapter", "baseModel": base_model}
    assert ftj["status"]["output"] == output
    job = get_json(cluster, "-n", ns, "job/smollm2-dates")
    assert _owned_by(job, ftj)
    container = _container(job)
    assert container["image"] == IMAGE
    assert container["args"][:3] == ["train", "--config", "/etc/kubellm/config.yaml"]
    assert container["resources"] == {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "3Gi"}}
    assert (job["spec"]["backoffLimit"], job["spec"]["activeDeadlineSeconds"]) == (3, 3600)

    mdep = _wait_condition(cluster, ns, "mdep/smollm2", "Ready", "True")
    assert mdep["status"]["model"] == "pvc://kubellm-models/smollm2-dates"
    assert mdep["status"]["selector"] == "app.kubernetes.io/component=server,kubellm.io/modeldeployment=smollm2"
    assert mdep["status"]["readyReplicas"] == 1
    deployment = get_json(cluster, "-n", ns, "deploy/smollm2")
    assert _owned_by(deployment, mdep)
    server = _container(deployment)
    assert server["args"] == ["serve", "--config", "/etc/kubellm/config.yaml"]
    assert server["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert server["startupProbe"]["failureThreshold"] == 30
    assert "kubellm.io/config-hash" in deployment["spec"]["template"]["metadata"]["annotations"]
    hpa = get_json(cluster, "-n", ns, "hpa/smollm2")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 3)
    assert hpa["spec"]["scaleTargetRef"]["kind"] == "ModelDeployment"
    assert _owned_by(get_json(cluster, "-n", ns, "svc/smollm2"), mdep)
    config = json.loads(get_json(cluster, "-n", ns, "cm/smollm2-config")["data"]["config.yaml"])
    assert config["serving"]["quantization"] == "none"

    cluster.kubectl("apply", "-n", ns, "-f", str(EXAMPLES / "promptexperiment.yaml"))
    experiment_job = wait_for("the experiment Job", lambda: _get(cluster, ns, "job/prompt-styles"), timeout=60)
    assert _container(experiment_job)["args"] == ["experiment", "--config", "/etc/kubellm/config.yaml", "--output",
                                                  "/tmp/kubellm-experiment"]  # fmt: skip
    experiment_config = json.loads(get_json(cluster, "-n", ns, "cm/prompt-styles-config")["data"]["config.yaml"])
    assert experiment_config["target"] == {
        "url": f"http://smollm2.{ns}.svc:80/v1",
        "model": "smollm2-base",
        "api": "chat",
    }
    # The runtime's side: write the result into the report ConfigMap.
    patch = json.dumps({"data": {"result.json": json.dumps(RESULT), "report.md": "# prompt-styles\n"}})
    cluster.kubectl("patch", "-n", ns, "cm/prompt-styles-report", "--type=merge", "-p", patch)
    pexp = _wait_condition(cluster, ns, "pexp/prompt-styles", "Ready", "True")
    assert condition(pexp, "Ready") == ("True", "WinnerDeclared")
    assert pexp["status"]["winner"] == "few-shot"
    assert pexp["status"]["results"][1]["metrics"][0]["mean"] == 0.88
    assert pexp["status"]["reportConfigMap"] == "prompt-styles-report"
    reasons = {e["reason"] for e in get_json(cluster, "-n", ns, "events")["items"]}
    assert {"TrainingComplete", "ReplicasReady", "WinnerDeclared"} <= reasons


def _versions(cluster: Cluster, ns: str) -> dict[str, str]:
    items = get_json(cluster, "-n", ns, CHILD_KINDS, "-l", MANAGED)["items"]
    return {f"{i['kind']}/{i['metadata']['name']}": i["metadata"]["resourceVersion"] for i in items}


def test_drift_spec_change_rerun_and_garbage_collection(
    crds: Cluster, namespace: str, start_operator: StartOperator
) -> None:
    cluster, ns = crds, namespace
    operator = start_operator()
    hungry = _model_deployment("hungry")
    hungry["spec"]["resources"]["limits"] = {"nvidia.com/gpu": 8}  # the GPU node has 4
    _apply(cluster, ns, _model_deployment("srv"), hungry)
    _wait_condition(cluster, ns, "mdep/srv", "Ready", "True")
    degraded = _wait_condition(cluster, ns, "mdep/hungry", "Degraded", "True")
    assert condition(degraded, "Degraded") == ("True", "Unschedulable")
    assert degraded["status"]["phase"] == "Degraded"
    cluster.kubectl("delete", "-n", ns, "mdep/hungry", "--wait=true")
    # The garbage collector removes its children in the background: wait, or they count as changed.
    wait_for("hungry's children to be collected", lambda: not any("hungry" in k for k in _versions(cluster, ns)))
    settled(operator)

    # Re-run on an unchanged object: a fresh operator reconciles everything again (resume + child events).
    before = _versions(cluster, ns)
    cr_version = get_json(cluster, "-n", ns, "mdep/srv")["metadata"]["resourceVersion"]
    operator.stop()
    operator = start_operator()
    writes = settled(operator, 3.0)
    after = _versions(cluster, ns)
    changed = sorted(k for k in before if after.get(k) != before[k])
    cr_changed = get_json(cluster, "-n", ns, "mdep/srv")["metadata"]["resourceVersion"] != cr_version
    print(
        f"\n[rerun] operator writes on unchanged re-run: {writes:.0f}; "
        f"children changed: {changed}; CR rewritten (Kopf bookkeeping): {cr_changed}"
    )
    assert writes == 0
    assert changed == []

    # Drift: a deleted child comes back, a hand-edited one is put right.
    old_uid = get_json(cluster, "-n", ns, "svc/srv")["metadata"]["uid"]
    cluster.kubectl("delete", "-n", ns, "svc/srv")
    wait_for(
        "the Service to come back",
        lambda: (_get(cluster, ns, "svc/srv") or {}).get("metadata", {}).get("uid") not in (None, old_uid),
    )
    cluster.kubectl("set", "image", "-n", ns, "deploy/srv", "runtime=example.com/hand-edited:1")
    wait_for(
        "the image to be restored", lambda: _container(get_json(cluster, "-n", ns, "deploy/srv"))["image"] == IMAGE
    )

    # A spec change updates the children in place and rolls the pods (new config hash).
    deployment = get_json(cluster, "-n", ns, "deploy/srv")
    old_hash = deployment["spec"]["template"]["metadata"]["annotations"]["kubellm.io/config-hash"]
    cluster.kubectl(
        "patch", "-n", ns, "mdep/srv", "--type=merge", "-p", '{"spec": {"serving": {"quantization": "int8"}}}'
    )

    def rolled() -> dict[str, Any] | None:
        live = get_json(cluster, "-n", ns, "deploy/srv")
        new_hash = live["spec"]["template"]["metadata"]["annotations"]["kubellm.io/config-hash"]
        return live if new_hash != old_hash else None

    updated = wait_for("the Deployment to roll", rolled)
    assert updated["metadata"]["uid"] == deployment["metadata"]["uid"]
    config = json.loads(get_json(cluster, "-n", ns, "cm/srv-config")["data"]["config.yaml"])
    assert config["serving"]["quantization"] == "int8"

    # Deleting the custom resource removes its children (owner references, garbage collector).
    cluster.kubectl("delete", "-n", ns, "mdep/srv")
    wait_for(
        "the children to be collected",
        lambda: not get_json(cluster, "-n", ns, CHILD_KINDS, "-l", MANAGED)["items"],
        timeout=60,
    )
