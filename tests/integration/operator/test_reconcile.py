"""The operator on the real control plane, under its own least-privilege RBAC.

Each example reaches its terminal/Ready state with the spec's values in its children; a
ModelDeployment waits for its FineTuneJob, or says why its pods do not run; children are
restored, updated in place and garbage-collected; an unchanged object costs 0 writes on a
re-run; a SIGKILL in the middle of reconciling 20 resources leaves 0 duplicated and 0
orphaned children.

PromptExperiment results: kwok runs no code, so the test plays the runtime's part of the
report channel (see :mod:`kubellm.operator.manifests.reporting`): it merge-patches
``result.json`` into the ``<name>-report`` ConfigMap, as the experiment pod does with its
narrowly-scoped ServiceAccount.
"""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from typing import Any

import pytest
import yaml

from tests.api_cases import EXAMPLES, load_example
from tests.harness.cluster import Cluster
from tests.integration.operator.conftest import StartOperator
from tests.integration.operator.helpers import get_json, wait_for

pytestmark = pytest.mark.integration

IMAGE = "ghcr.io/kubellm/runtime:0.1.0"
MANAGED = "app.kubernetes.io/managed-by=kubellm-operator"
CHILD_KINDS = "configmaps,deployments,services,jobs,horizontalpodautoscalers,serviceaccounts,roles,rolebindings"
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


def _condition(obj: dict[str, Any], kind: str) -> tuple[str, str] | None:
    for condition in obj.get("status", {}).get("conditions", []):
        if condition["type"] == kind:
            return condition["status"], condition["reason"]
    return None


def _wait_condition(
    cluster: Cluster, ns: str, resource: str, kind: str, status: str, *, timeout: float = 60
) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        obj = get_json(cluster, "-n", ns, resource)
        found = _condition(obj, kind)
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
    waiting = _wait_condition(cluster, ns, "mdep/tiny-llama", "Ready", "False")
    assert _condition(waiting, "Ready") == ("False", "WaitingForFineTuneJob")
    assert _get(cluster, ns, "deploy/tiny-llama") is None

    cluster.kubectl("apply", "-n", ns, "-f", str(EXAMPLES / "finetunejob.yaml"))
    ftj = _wait_condition(cluster, ns, "ftj/tiny-llama-lora", "Succeeded", "True")
    base_model = load_example("finetunejob")["spec"]["baseModel"]["uri"]
    output = {"uri": "pvc://kubellm-models/tiny-llama-lora", "kind": "adapter", "baseModel": base_model}
    assert ftj["status"]["output"] == output
    job = get_json(cluster, "-n", ns, "job/tiny-llama-lora")
    assert _owned_by(job, ftj)
    container = _container(job)
    assert container["image"] == IMAGE
    assert container["args"][:3] == ["train", "--config", "/etc/kubellm/config.yaml"]
    assert container["resources"] == {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": "2Gi"}}
    assert (job["spec"]["backoffLimit"], job["spec"]["activeDeadlineSeconds"]) == (3, 3600)

    mdep = _wait_condition(cluster, ns, "mdep/tiny-llama", "Ready", "True")
    assert mdep["status"]["model"] == "pvc://kubellm-models/tiny-llama-lora"
    assert mdep["status"]["selector"] == "app.kubernetes.io/component=server,kubellm.io/modeldeployment=tiny-llama"
    assert mdep["status"]["readyReplicas"] == 1
    deployment = get_json(cluster, "-n", ns, "deploy/tiny-llama")
    assert _owned_by(deployment, mdep)
    server = _container(deployment)
    assert server["args"] == ["serve", "--config", "/etc/kubellm/config.yaml"]
    assert server["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert server["startupProbe"]["failureThreshold"] == 30
    assert "kubellm.io/config-hash" in deployment["spec"]["template"]["metadata"]["annotations"]
    hpa = get_json(cluster, "-n", ns, "hpa/tiny-llama")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 3)
    assert hpa["spec"]["scaleTargetRef"]["kind"] == "ModelDeployment"
    assert _owned_by(get_json(cluster, "-n", ns, "svc/tiny-llama"), mdep)
    config = json.loads(get_json(cluster, "-n", ns, "cm/tiny-llama-config")["data"]["config.yaml"])
    assert config["serving"]["quantization"] == "int8"

    cluster.kubectl("apply", "-n", ns, "-f", str(EXAMPLES / "promptexperiment.yaml"))
    experiment_job = wait_for("the experiment Job", lambda: _get(cluster, ns, "job/prompt-styles"), timeout=60)
    assert "--endpoint" in _container(experiment_job)["args"]
    assert f"http://tiny-llama.{ns}.svc:80/v1" in _container(experiment_job)["args"]
    # The runtime's side: write the result into the report ConfigMap.
    patch = json.dumps({"data": {"result.json": json.dumps(RESULT), "report.md": "# prompt-styles\n"}})
    cluster.kubectl("patch", "-n", ns, "cm/prompt-styles-report", "--type=merge", "-p", patch)
    pexp = _wait_condition(cluster, ns, "pexp/prompt-styles", "Ready", "True")
    assert _condition(pexp, "Ready") == ("True", "WinnerDeclared")
    assert pexp["status"]["winner"] == "few-shot"
    assert pexp["status"]["results"][1]["metrics"][0]["mean"] == 0.88
    assert pexp["status"]["reportConfigMap"] == "prompt-styles-report"
    reasons = {e["reason"] for e in get_json(cluster, "-n", ns, "events")["items"]}
    assert {"TrainingComplete", "ReplicasReady", "WinnerDeclared"} <= reasons


def _model_deployment(name: str, quantization: str = "none") -> dict[str, Any]:
    return {
        "apiVersion": "kubellm.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {
            "model": {"uri": "dummy://llama?hidden_size=64&num_hidden_layers=2&seed=1"},
            "serving": {"quantization": quantization},
            "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}},
        },
    }


def _settled(process: Any, seconds: float = 2.0) -> float:
    """Wait until the operator's write count stays put for ``seconds``; return it."""
    last, since = process.writes(), time.monotonic()
    while time.monotonic() - since < seconds:
        time.sleep(0.25)
        now = process.writes()
        if now != last:
            last, since = now, time.monotonic()
    return float(last)


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
    assert _condition(degraded, "Degraded") == ("True", "Unschedulable")
    assert degraded["status"]["phase"] == "Degraded"
    cluster.kubectl("delete", "-n", ns, "mdep/hungry", "--wait=true")
    _settled(operator)

    # Re-run on an unchanged object: a fresh operator reconciles everything again (resume + child events).
    before = _versions(cluster, ns)
    cr_version = get_json(cluster, "-n", ns, "mdep/srv")["metadata"]["resourceVersion"]
    operator.stop()
    operator = start_operator()
    writes = _settled(operator, 3.0)
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


def _census(cluster: Cluster, ns: str) -> tuple[int, int, int, int]:
    """(children, duplicated, orphaned, missing) of the operator's direct children in ``ns``.

    Duplicated: more than one child of a kind for one owner; orphaned: a child whose controller
    owner is not a live ModelDeployment; missing: an owner lacking one of its children.
    """
    owners = {o["metadata"]["uid"] for o in get_json(cluster, "-n", ns, "mdep")["items"]}
    children = get_json(cluster, "-n", ns, "configmaps,deployments,services", "-l", MANAGED)["items"]
    per_owner: Counter[tuple[str, str]] = Counter()
    for child in children:
        refs = [r["uid"] for r in child["metadata"].get("ownerReferences", []) if r.get("controller")]
        per_owner[child["kind"], refs[0] if refs else "none"] += 1
    duplicated = sum(n - 1 for n in per_owner.values() if n > 1)
    orphaned = sum(n for (_, uid), n in per_owner.items() if uid not in owners)
    missing = sum(1 for uid in owners for kind in ("ConfigMap", "Deployment", "Service") if per_owner[kind, uid] == 0)
    return len(children), duplicated, orphaned, missing


def _extra_replica_sets(cluster: Cluster, ns: str) -> int:
    """ReplicaSets beyond one per Deployment (a rollout the operator caused would show here)."""
    per_deployment = Counter(
        ref["uid"]
        for rs in get_json(cluster, "-n", ns, "replicasets")["items"]
        for ref in rs["metadata"]["ownerReferences"]
    )
    return sum(n - 1 for n in per_deployment.values())


def test_kill_during_reconcile_leaves_no_duplicates_or_orphans(
    crds: Cluster, namespace: str, start_operator: StartOperator
) -> None:
    cluster, ns, count = crds, namespace, 20
    operator = start_operator("--workers", "1")  # one handler thread: the kill lands mid-way
    _apply(cluster, ns, *(_model_deployment(f"m{i:02d}") for i in range(count)))
    wait_for(
        "the first Deployments", lambda: len(get_json(cluster, "-n", ns, "deployments")["items"]) >= 2, interval=0.05
    )
    operator.stop(signal.SIGKILL)
    at_kill = len(get_json(cluster, "-n", ns, "deployments")["items"])
    start_operator()

    def all_ready() -> bool:
        items = get_json(cluster, "-n", ns, "mdep")["items"]
        return sum(_condition(i, "Ready") == ("True", "ReplicasReady") for i in items) == count

    wait_for(f"{count} ModelDeployments Ready", all_ready, timeout=120)
    children, duplicated, orphaned, missing = _census(cluster, ns)
    print(
        f"\n[kill-restart] {count} ModelDeployments, SIGKILL with {at_kill}/{count} Deployments created; "
        f"after restart: {children} children, duplicated={duplicated}, orphaned={orphaned}, missing={missing}; "
        f"extra ReplicaSets: {_extra_replica_sets(cluster, ns)}"
    )
    assert (duplicated, orphaned, missing) == (0, 0, 0)
