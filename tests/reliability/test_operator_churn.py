"""The operator under churn: conflicting writers on its children, and create/delete cycles.

A rival writer (another field manager, as ``kubectl set image`` or a careless controller would
be) keeps changing a Deployment the operator owns while the operator itself updates it for a
spec change: the operator must put its fields back once per edit and then go quiet, never
fight in a hot loop; edits to fields it does not own must cost it no write at all. Then 100
create/delete cycles, many deleted mid-reconcile and recreated under the same name at once,
must leave no object behind, in the cluster or in the operator's memory.
"""

from __future__ import annotations

import json
import time
from typing import Any

import yaml

from tests.harness.cluster import Cluster
from tests.harness.operator_fixtures import StartOperator, crds, sa_kubeconfig, start_operator
from tests.harness.operator_process import (
    CHILD_KINDS,
    get_json,
    model_deployment,
    ready_count,
    settled,
    wait_for,
)
from tests.reliability.conftest import RecordFigure

__all__ = ["crds", "sa_kubeconfig", "start_operator"]

IMAGE = "ghcr.io/kubellm/runtime:0.1.0"
RIVAL_EDITS = 20
LABEL_EDITS = 10
CYCLES = 100
NAMES = 20


def _rival_deployment(ns: str, name: str, image: str, labels: dict[str, str] | None = None) -> str:
    """The fields a rival field manager claims on a Deployment: a container image, or labels."""
    spec = {"template": {"spec": {"containers": [{"name": "runtime", "image": image}]}}}
    document: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns, **({"labels": labels} if labels else {})},
        **({} if labels else {"spec": spec}),
    }
    return yaml.safe_dump(document)


def _rival_apply(cluster: Cluster, document: str) -> None:
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "--field-manager=rival", "-f", "-", input=document)


def _image(cluster: Cluster, ns: str, name: str) -> str:
    image: str = get_json(cluster, "-n", ns, f"deploy/{name}")["spec"]["template"]["spec"]["containers"][0]["image"]
    return image


def test_conflicting_writer_converges_without_a_hot_loop(
    crds: Cluster, namespace: str, start_operator: StartOperator, figure: RecordFigure
) -> None:
    cluster, ns = crds, namespace
    operator = start_operator()
    cluster.kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump(model_deployment("c0")))
    wait_for("c0 Ready", lambda: ready_count(cluster, ns) == 1, 90)
    settled(operator)

    # Fields the operator does not own: labels of another manager cost it nothing.
    before = operator.writes()
    for edit in range(LABEL_EDITS):
        _rival_apply(cluster, _rival_deployment(ns, "c0", "", labels={"team": f"t{edit}"}))
    label_writes = settled(operator, 3.0) - before

    # Fields it owns, fought over while it also updates the Deployment for spec changes.
    before, deployment_before = operator.writes(), operator.writes("Deployment")
    spec_changes = 0
    for edit in range(RIVAL_EDITS):
        _rival_apply(cluster, _rival_deployment(ns, "c0", f"example.com/rival:{edit}"))
        if edit % 5 == 0:
            spec_changes += 1
            patch = json.dumps({"spec": {"startupTimeoutSeconds": 600 + edit}})
            cluster.kubectl("patch", "-n", ns, "mdep/c0", "--type=merge", "-p", patch)
    stopped = time.monotonic()
    wait_for("the operator's image back", lambda: _image(cluster, ns, "c0") == IMAGE, 60)
    total = settled(operator, 3.0)
    converged = time.monotonic() - stopped - 3.0
    deployment_writes = operator.writes("Deployment") - deployment_before
    time.sleep(5)
    quiet_writes = operator.writes() - total

    budget = RIVAL_EDITS + spec_changes
    figure("operator", "writes caused by 10 edits of fields it does not own", label_writes, target="0",
           ok=label_writes == 0)  # fmt: skip
    figure("operator", f"Deployment writes for {RIVAL_EDITS} rival edits + {spec_changes} spec changes",
           deployment_writes, target=f"<= {budget}", ok=deployment_writes <= budget)  # fmt: skip
    fight_writes = total - before
    figure("operator", "all writes during the fight", fight_writes, target=f"<= {5 * budget} (5 per edit)",
           ok=fight_writes <= 5 * budget)  # fmt: skip
    figure("operator", "seconds to converge after the rival stops", converged, target="< 10", ok=converged < 10)
    figure("operator", "writes in 5 s after converging (hot loop)", quiet_writes, target="0", ok=quiet_writes == 0)
    assert label_writes == 0
    assert 0 < deployment_writes <= budget
    assert quiet_writes == 0
    assert fight_writes <= 5 * budget, "writes must stay bounded by the edits, not run away"
    assert converged < 10
    assert ready_count(cluster, ns) == 1


def _leftovers(cluster: Cluster, ns: str) -> dict[str, int]:
    items = get_json(cluster, "-n", ns, f"mdep,{CHILD_KINDS},replicasets,pods")["items"]
    counts: dict[str, int] = {}
    for item in items:
        managed = item["metadata"].get("labels", {}).get("app.kubernetes.io/managed-by") == "kubellm-operator"
        if item["kind"] in ("ModelDeployment", "ReplicaSet", "Pod") or managed:
            counts[item["kind"]] = counts.get(item["kind"], 0) + 1
    return counts


def test_create_delete_cycles_leave_nothing_behind(
    crds: Cluster, namespace: str, start_operator: StartOperator, figure: RecordFigure
) -> None:
    cluster, ns = crds, namespace
    operator = start_operator()
    documents = yaml.safe_dump_all([model_deployment(f"g{i}") for i in range(NAMES)])
    started = time.monotonic()
    for cycle in range(CYCLES // NAMES):
        cluster.kubectl("apply", "-n", ns, "-f", "-", input=documents)
        if cycle % 2:  # every other round, once the operator made some Deployments (else before any)
            wait_for("Deployments", lambda: len(get_json(cluster, "-n", ns, "deployments")["items"]) >= NAMES // 4)
        cluster.kubectl("delete", "-n", ns, "mdep", "--all", "--wait=false")
    churned = time.monotonic() - started

    def clean() -> bool:
        return not _leftovers(cluster, ns) and operator.total("kubellm_operator_tracked_objects") == 0

    settle_started = time.monotonic()
    try:
        wait_for("every object gone", clean, timeout=90)
    finally:
        left, tracked = _leftovers(cluster, ns), operator.total("kubellm_operator_tracked_objects")
        print(f"[churn] {CYCLES} cycles in {churned:.1f}s; left: {left}; operator still tracks {tracked:.0f}")
        figure("operator", f"objects left after {CYCLES} create/delete cycles", sum(left.values()), target="0",
               ok=not left)  # fmt: skip
        figure("operator", "objects the operator still tracks in memory after them", tracked, target="0",
               ok=tracked == 0)  # fmt: skip
    figure("operator", "seconds until the namespace is clean after the last delete", time.monotonic() - settle_started)
    assert operator.alive()
