"""The operator killed (SIGKILL) in the middle of reconciling, again and again.

20 ModelDeployments converge while the operator is killed 20 times, each time while a
reconcile pass is running (its in-flight gauge says so), and each time after their specs
changed again (a new Service port), so there is always work in progress. Restarts must never
duplicate or orphan a child (children have deterministic names and owner references), and the
last operator must bring everything to the last spec.
"""

from __future__ import annotations

import random
import signal
import time

from tests.harness.cluster import Cluster
from tests.harness.operator_fixtures import StartOperator, crds, sa_kubeconfig, start_operator
from tests.harness.operator_process import (
    OperatorProcess,
    census,
    get_json,
    model_deployments,
    ready_count,
    wait_for,
)
from tests.reliability.conftest import RecordFigure

__all__ = ["crds", "sa_kubeconfig", "start_operator"]

COUNT = 20
KILLS = 20
IN_FLIGHT = "kubellm_operator_reconciles_in_flight"


def _resources(port: int) -> str:
    return model_deployments((f"m{i:02d}" for i in range(COUNT)), port)


def _kill_mid_pass(operator: OperatorProcess, rng: random.Random) -> bool:
    """SIGKILL once a pass is running (or after 5 s); whether one was running at the kill."""
    time.sleep(rng.uniform(0, 0.3))
    deadline = time.monotonic() + 5
    busy = False
    while not busy and time.monotonic() < deadline:
        busy = operator.total(IN_FLIGHT) > 0
        if not busy:
            time.sleep(0.01)
    operator.stop(signal.SIGKILL)
    return busy


def _ports(cluster: Cluster, ns: str) -> set[int]:
    services = get_json(cluster, "-n", ns, "services")["items"]
    return {s["spec"]["ports"][0]["port"] for s in services}


def test_twenty_kills_mid_reconcile_leave_no_duplicates_or_orphans(
    crds: Cluster, namespace: str, start_operator: StartOperator, figure: RecordFigure
) -> None:
    cluster, ns, rng = crds, namespace, random.Random(10)
    mid_pass = 0
    for kill in range(KILLS):
        cluster.kubectl("apply", "-n", ns, "-f", "-", input=_resources(8000 + kill))
        mid_pass += _kill_mid_pass(start_operator(), rng)
    last_port = 8000 + KILLS - 1
    killed_at = get_json(cluster, "-n", ns, "deployments")["items"]

    restarted = time.monotonic()
    start_operator()
    wait_for(f"{COUNT} ModelDeployments Ready at their last spec", lambda: ready_count(cluster, ns) == COUNT, 180)
    wait_for("every Service on the last port", lambda: _ports(cluster, ns) == {last_port}, 60)
    converged = time.monotonic() - restarted
    children, duplicated, orphaned, missing = census(cluster, ns)

    figure("operator", f"SIGKILLs landing mid-reconcile (of {KILLS})", mid_pass, target=f">= {KILLS // 2}")
    figure("operator", "duplicated children after 20 kills", duplicated, target="0", ok=duplicated == 0)
    figure("operator", "orphaned children after 20 kills", orphaned, target="0", ok=orphaned == 0)
    figure("operator", "missing children after 20 kills", missing, target="0", ok=missing == 0)
    figure("operator", "seconds to all Ready after the last restart (20 resources)", converged, target="< 60",
           ok=converged < 60)  # fmt: skip
    print(f"[kill] Deployments at the last kill: {len(killed_at)}/{COUNT}; children now: {children}")
    assert mid_pass >= KILLS // 2, "most kills must land while a pass runs, or the test proves little"
    assert (duplicated, orphaned, missing) == (0, 0, 0)
    assert converged < 60
