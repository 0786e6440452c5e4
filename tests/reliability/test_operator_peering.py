"""Two operator replicas: each object is handled by one of them, and the standby takes over.

The replicas peer through Kopf (``--peering``, see :mod:`kubellm.operator.settings`): the one
with the higher priority acts, the other keeps its watches closed. The standby starts first
(as in a rolling update), so it must also step back when the leader appears. Each object then
gets exactly one phase-transition Event and the standby makes no request that writes; once
the leader is SIGKILLed, the standby converges a spec change on every object within the peering
lifetime. Without the peering object the operator refuses to start rather than idle forever.
"""

from __future__ import annotations

import signal
import time
from collections import Counter

import pytest
import yaml

from tests.harness.cluster import Cluster
from tests.harness.operator_fixtures import StartOperator, crds, sa_kubeconfig, start_operator
from tests.harness.operator_process import (
    OperatorProcess,
    apply_peering_crds,
    get_json,
    model_deployments,
    ready_count,
    settled,
    wait_for,
)
from tests.reliability.conftest import RecordFigure

__all__ = ["crds", "sa_kubeconfig", "start_operator"]

COUNT = 10
PEERING = "kubellm"
LIFETIME = 8
RECONCILES = "kubellm_operator_reconciles_total"


def _resources(port: int) -> str:
    return model_deployments((f"p{i}" for i in range(COUNT)), port)


def _peer(start_operator: StartOperator, priority: int) -> OperatorProcess:
    return start_operator(
        "--peering", PEERING, "--priority", str(priority), "--peering-lifetime", str(LIFETIME)
    )  # fmt: skip


def _ready_events(cluster: Cluster, ns: str) -> Counter[str]:
    events = get_json(cluster, "-n", ns, "events")["items"]
    return Counter(e["involvedObject"]["name"] for e in events if e["reason"] == "ReplicasReady")


def test_two_replicas_handle_each_object_once(
    crds: Cluster, namespace: str, start_operator: StartOperator, figure: RecordFigure
) -> None:
    cluster, ns = crds, namespace
    apply_peering_crds(cluster)
    with pytest.raises(AssertionError, match="exited with 2"):
        _peer(start_operator, 1)  # no peering object yet: it must refuse, not idle
    peering = {"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": PEERING, "namespace": ns}}
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(peering))

    standby = _peer(start_operator, 10)
    leader = _peer(start_operator, 20)
    wait_for("the standby to step back", lambda: "Pausing operations" in standby.tail(200), timeout=30)
    cluster.kubectl("apply", "-n", ns, "-f", "-", input=_resources(8080))
    wait_for(f"{COUNT} ModelDeployments Ready", lambda: ready_count(cluster, ns) == COUNT, 120)
    settled(leader)
    standby_passes, standby_writes = standby.total(RECONCILES), standby.writes()
    events = _ready_events(cluster, ns)
    twice = sum(1 for n in events.values() if n > 1)
    figure("operator", "objects handled by both replicas", twice, target="0", ok=twice == 0)
    figure("operator", "standby passes / writes while the leader lives", f"{standby_passes:.0f} / {standby_writes:.0f}",
           target="0 / 0", ok=standby_passes == standby_writes == 0)  # fmt: skip

    leader.stop(signal.SIGKILL)
    killed = time.monotonic()
    cluster.kubectl("apply", "-n", ns, "-f", "-", input=_resources(8081))

    def taken_over() -> bool:
        ports = {s["spec"]["ports"][0]["port"] for s in get_json(cluster, "-n", ns, "services")["items"]}
        return ports == {8081} and ready_count(cluster, ns) == COUNT

    wait_for("the standby to take over", taken_over, timeout=LIFETIME + 60)
    failover = time.monotonic() - killed
    figure("operator", f"seconds for the standby to converge after the leader's SIGKILL (lifetime {LIFETIME} s)",
           failover, target=f"< {LIFETIME + 15}", ok=failover < LIFETIME + 15)  # fmt: skip
    assert twice == 0, f"ReplicasReady events per object: {events}"
    assert standby_passes == standby_writes == 0
    assert failover < LIFETIME + 15
