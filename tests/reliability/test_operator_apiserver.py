"""The API server and etcd restarted under a running operator.

A dedicated control plane (the session's is left alone) loses etcd and kube-apiserver for a
few seconds, as on a control-plane upgrade or crash; they come back on the same ports with the
same data. The operator must reconnect its watches by itself: after the restart it repairs a
deleted child, applies a spec change and reconciles new objects, all of which it only learns
about through its watches, so a silently stalled watch fails the test. (A restarted API server
answers 403 for a few seconds until its RBAC cache is warm: Kopf retries those too.)
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.cluster import Cluster, restart_components, start_cluster, stop_cluster
from tests.harness.operator_fixtures import FAST
from tests.harness.operator_process import (
    OperatorProcess,
    apply_crds,
    get_json,
    model_deployments,
    operator_kubeconfig,
    ready_count,
    wait_for,
)
from tests.reliability.conftest import RecordFigure

NS = "restart"
COUNT = 10
DOWN_SECONDS = 5.0


@pytest.fixture
def own_cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """A control plane of this test's own, with the CRDs and the namespace."""
    cluster = start_cluster()
    failed_before = request.session.testsfailed
    try:
        apply_crds(cluster)
        cluster.kubectl("create", "namespace", NS)
        cluster.kubectl("wait", "--for=create", "serviceaccount/default", "-n", NS, "--timeout=60s")
        yield cluster
    finally:
        stop_cluster(cluster, keep_logs=request.session.testsfailed > failed_before)


def _resources(names: range, port: int) -> str:
    return model_deployments((f"r{i}" for i in names), port)


def _ports(cluster: Cluster) -> dict[str, int]:
    services = get_json(cluster, "-n", NS, "services")["items"]
    return {s["metadata"]["name"]: s["spec"]["ports"][0]["port"] for s in services}


def test_operator_recovers_from_an_api_server_and_etcd_restart(
    own_cluster: Cluster, tmp_path: Path, figure: RecordFigure
) -> None:
    cluster = own_cluster
    kubeconfig = operator_kubeconfig(cluster, tmp_path / "kubeconfig")
    operator = OperatorProcess(kubeconfig, tmp_path / "operator.log", [NS], *FAST).start()
    try:
        cluster.kubectl("apply", "-n", NS, "-f", "-", input=_resources(range(COUNT), 8080))
        wait_for(f"{COUNT} ModelDeployments Ready", lambda: ready_count(cluster, NS) == COUNT, 120)

        outage = restart_components(cluster, ("etcd", "kube-apiserver"), down_seconds=DOWN_SECONDS)
        back = time.monotonic()
        old_uid = get_json(cluster, "-n", NS, "svc/r0")["metadata"]["uid"]
        cluster.kubectl("delete", "-n", NS, "svc/r0")
        cluster.kubectl("apply", "-n", NS, "-f", "-", input=_resources(range(COUNT + 5), 8081))

        def recovered() -> bool:
            ports = _ports(cluster)
            repaired = get_json(cluster, "-n", NS, "services")["items"]
            fresh = all(s["metadata"]["uid"] != old_uid for s in repaired)
            return fresh and set(ports.values()) == {8081} and len(ports) == COUNT + 5

        wait_for("the operator to act on post-restart changes", recovered, timeout=120)
        wait_for(f"{COUNT + 5} ModelDeployments Ready", lambda: ready_count(cluster, NS) == COUNT + 5, 120)
        recovery = time.monotonic() - back
        alive, healthy = operator.alive(), operator.health()[0]
    finally:
        tail = operator.tail(40)
        operator.stop()
    figure("operator", f"API server + etcd outage ({DOWN_SECONDS:.0f} s down), seconds until ready", outage)
    figure("operator", "seconds from API ready to all changes made after it converged", recovery, target="< 60",
           ok=recovery < 60)  # fmt: skip
    assert alive, tail
    assert healthy == 200
    assert recovery < 60
