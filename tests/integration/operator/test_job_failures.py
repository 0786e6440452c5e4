"""Job failure semantics on the real control plane: bad input fails at once, preemption is free.

kwok completes every Job pod it runs, so these pods are kept off its nodes (a nodeSelector no
node has) and the test plays the kubelet: it writes the pod's terminal status through the
status subresource, as a kubelet does, and the real Job controller applies the Job's
``podFailurePolicy``.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.api_cases import load_example
from tests.harness.cluster import Cluster
from tests.harness.operator_fixtures import StartOperator
from tests.harness.operator_process import condition, get_json, wait_for

pytestmark = pytest.mark.integration

NOWHERE = {"kubellm.io/test-no-such-node": "true"}


def _finetunejob(name: str, backoff_limit: int) -> dict[str, Any]:
    manifest = load_example("finetunejob")
    manifest["metadata"] = {"name": name}
    manifest["spec"]["nodeSelector"] = NOWHERE
    manifest["spec"]["backoffLimit"] = backoff_limit
    return manifest


def _pods(cluster: Cluster, ns: str, job: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = get_json(cluster, "-n", ns, "pods", "-l", f"job-name={job}")["items"]
    return items


def _terminate(cluster: Cluster, ns: str, pod: str, exit_code: int, *, disrupted: bool = False) -> None:
    """What the kubelet reports for a pod whose container exited with ``exit_code``."""
    terminated = {"exitCode": exit_code, "reason": "Error", "startedAt": None, "finishedAt": None}
    status: dict[str, Any] = {
        "phase": "Failed",
        "containerStatuses": [
            {
                "name": "runtime",
                "image": "ghcr.io/kubellm/runtime:0.1.0",
                "imageID": "",
                "ready": False,
                "restartCount": 0,
                "state": {"terminated": terminated},
            }
        ],
    }
    if disrupted:
        status["conditions"] = [
            {"type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler", "message": "preempted"}
        ]
    patch = json.dumps({"status": status})
    cluster.kubectl("patch", "-n", ns, f"pod/{pod}", "--subresource=status", "--type=merge", "-p", patch)


def test_bad_input_fails_after_one_pod(crds: Cluster, namespace: str, start_operator: StartOperator) -> None:
    cluster, ns = crds, namespace
    start_operator()
    cluster.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(_finetunejob("bad-data", backoff_limit=3)))
    (pod,) = wait_for("the training pod", lambda: _pods(cluster, ns, "bad-data") or None, timeout=60)
    _terminate(cluster, ns, pod["metadata"]["name"], 3)

    def failed() -> dict[str, Any] | None:
        obj = get_json(cluster, "-n", ns, "ftj/bad-data")
        return obj if obj.get("status", {}).get("phase") == "Failed" else None

    ftj = wait_for("the FineTuneJob to fail", failed, timeout=60)
    job = get_json(cluster, "-n", ns, "job/bad-data")
    pods = _pods(cluster, ns, "bad-data")
    reason = condition(ftj, "Failed")
    message = next(c["message"] for c in ftj["status"]["conditions"] if c["type"] == "Failed")
    print(f"\n[exit 3] pods created: {len(pods)} (backoffLimit 3); Failed={reason}; message: {message}")
    assert len(pods) == 1
    assert job["status"].get("failed") == 1
    assert [c["reason"] for c in job["status"]["conditions"] if c["type"] == "Failed"] == ["PodFailurePolicy"]
    assert reason == ("True", "InvalidInput")
    assert "exit code 3" in message


def test_preemption_does_not_use_up_the_backoff_limit(
    crds: Cluster, namespace: str, start_operator: StartOperator
) -> None:
    cluster, ns = crds, namespace
    start_operator()
    cluster.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(_finetunejob("preempted", backoff_limit=0)))
    (first,) = wait_for("the training pod", lambda: _pods(cluster, ns, "preempted") or None, timeout=60)
    _terminate(cluster, ns, first["metadata"]["name"], 137, disrupted=True)

    def replaced() -> list[dict[str, Any]] | None:
        pods = _pods(cluster, ns, "preempted")
        return pods if len(pods) == 2 else None

    pods = wait_for("a replacement pod", replaced, timeout=60)
    job = get_json(cluster, "-n", ns, "job/preempted")
    ftj = get_json(cluster, "-n", ns, "ftj/preempted")
    print(
        f"\n[preempted] pods: {len(pods)} with backoffLimit 0; job failed count: {job['status'].get('failed', 0)}; "
        f"FineTuneJob phase: {ftj.get('status', {}).get('phase')}"
    )
    assert job["status"].get("failed", 0) == 0
    assert not [c for c in job["status"].get("conditions", []) if c["type"] == "Failed" and c["status"] == "True"]
    assert ftj["status"]["phase"] in ("Pending", "Running")
