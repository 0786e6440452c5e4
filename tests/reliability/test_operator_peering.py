"""Two operator replicas: each object is handled by one of them, and the standby takes over.

The replicas elect a leader through a Lease (``--leader-election``, see
:mod:`kubellm.operator.leader`): its holder runs Kopf, the other stands by without a watch or a
write. Each object then gets exactly one phase-transition Event and the standby makes no pass
and no write; once the leader is SIGKILLed, the standby converges a spec change on every object
within the lease duration (and Kopf's start). A leader whose Lease is taken exits at once.
"""

from __future__ import annotations

import json
import signal
import time
from collections import Counter

from kubellm.operator.leader import LEASE_LOST_EXIT_CODE
from tests.harness.cluster import Cluster
from tests.harness.operator_fixtures import StartOperator, crds, sa_kubeconfig, start_operator
from tests.harness.operator_process import (
    OperatorProcess,
    get_json,
    model_deployments,
    ready_count,
    settled,
    wait_for,
)
from tests.reliability.conftest import RecordFigure

__all__ = ["crds", "sa_kubeconfig", "start_operator"]

COUNT = 10
LEASE = "kubellm-operator"
LIFETIME = 8
"""The lease duration: how long after the leader's last renewal the standby takes over."""
RENEW_DEADLINE = 5
RECONCILES = "kubellm_operator_reconciles_total"


def _resources(port: int) -> str:
    return model_deployments((f"p{i}" for i in range(COUNT)), port)


def _replica(start_operator: StartOperator, ns: str, identity: str) -> OperatorProcess:
    return start_operator(
        "--leader-election", "--lease-namespace", ns, "--lease-name", LEASE, "--lease-identity", identity,
        "--lease-duration-seconds", str(LIFETIME), "--renew-deadline-seconds", str(RENEW_DEADLINE),
        "--retry-period-seconds", "1",
    )  # fmt: skip


def _holder(cluster: Cluster, ns: str) -> str | None:
    found = cluster.kubectl("get", "-n", ns, "lease", LEASE, "-o", "jsonpath={.spec.holderIdentity}", check=False)
    return (found.stdout.strip() or None) if found.returncode == 0 else None


def _ready_events(cluster: Cluster, ns: str) -> Counter[str]:
    events = get_json(cluster, "-n", ns, "events")["items"]
    return Counter(e["involvedObject"]["name"] for e in events if e["reason"] == "ReplicasReady")


def test_two_replicas_handle_each_object_once(
    crds: Cluster, namespace: str, start_operator: StartOperator, figure: RecordFigure
) -> None:
    cluster, ns = crds, namespace
    replicas = {name: _replica(start_operator, ns, name) for name in ("a", "b")}
    holder = wait_for("a replica to hold the Lease", lambda: _holder(cluster, ns), timeout=30)
    leader, standby = replicas.pop(holder), next(iter(replicas.values()))
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
    figure("operator", f"seconds for the standby to converge after the leader's SIGKILL (lease {LIFETIME} s)",
           failover, target=f"< {LIFETIME + 15}", ok=failover < LIFETIME + 15)  # fmt: skip
    assert twice == 0, f"ReplicasReady events per object: {events}"
    assert standby_passes == standby_writes == 0
    assert failover < LIFETIME + 15
    assert _holder(cluster, ns) != holder


def test_a_leader_whose_lease_is_taken_exits_at_once(
    crds: Cluster, namespace: str, start_operator: StartOperator, figure: RecordFigure
) -> None:
    cluster, ns = crds, namespace
    leader = _replica(start_operator, ns, "a")
    wait_for("the replica to hold the Lease", lambda: _holder(cluster, ns) == "a", timeout=30)
    taken = json.dumps({"spec": {"holderIdentity": "intruder"}})
    cluster.kubectl("patch", "-n", ns, "lease", LEASE, "--type=merge", "-p", taken)
    patched = time.monotonic()
    wait_for("the leader to exit", lambda: not leader.alive(), timeout=RENEW_DEADLINE + 10)
    exited = time.monotonic() - patched
    assert leader.process is not None
    figure("operator", "seconds for a leader whose Lease was taken to exit", exited,
           target=f"< {RENEW_DEADLINE}", ok=exited < RENEW_DEADLINE)  # fmt: skip
    assert leader.process.returncode == LEASE_LOST_EXIT_CODE, leader.tail()
    assert "Lost the leader Lease (the Lease names intruder)" in leader.tail()
    assert exited < RENEW_DEADLINE
