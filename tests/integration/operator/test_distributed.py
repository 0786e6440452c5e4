"""A distributed FineTuneJob on the real control plane: an Indexed Job of torchrun pods plus the
headless Service their rendezvous goes through, all owned by the FineTuneJob.

kwok runs no containers: what is checked is what the API server, the Job controller and the
garbage collector make of the operator's objects (pod names, ranks, DNS names, deletion).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.api_cases import API_VERSION, example_documents
from tests.harness.cluster import Cluster
from tests.harness.operator_fixtures import StartOperator
from tests.harness.operator_process import condition, get_json, wait_for

pytestmark = pytest.mark.integration

NAME = "dates-ddp"


def _documents() -> list[dict[str, Any]]:
    documents = example_documents("finetunejob")
    for document in documents:
        if document["apiVersion"] == API_VERSION:
            document["metadata"]["name"] = NAME
            document["spec"]["distributed"] = {"nodes": 3, "processesPerNode": 1}
    return documents


def _exists(cluster: Cluster, ns: str, resource: str) -> bool:
    return cluster.kubectl("get", "-n", ns, resource, check=False).returncode == 0


def _succeeded(cluster: Cluster, ns: str) -> dict[str, Any] | None:
    obj = get_json(cluster, "-n", ns, f"ftj/{NAME}")
    return obj if condition(obj, "Succeeded") == ("True", "TrainingComplete") else None


def _pods(cluster: Cluster, ns: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = get_json(cluster, "-n", ns, "pods", "-l", f"job-name={NAME}")["items"]
    return items


def test_three_nodes_make_an_indexed_job_a_headless_service_and_ranked_pods(
    crds: Cluster, namespace: str, start_operator: StartOperator
) -> None:
    cluster, ns = crds, namespace
    start_operator()
    cluster.kubectl(
        "apply", "-n", ns, "-f", "-", input=json.dumps({"kind": "List", "apiVersion": "v1", "items": _documents()})
    )
    pods = wait_for(
        "three training pods", lambda: _pods(cluster, ns) if len(_pods(cluster, ns)) == 3 else None, timeout=90
    )
    ftj = get_json(cluster, "-n", ns, f"ftj/{NAME}")
    job = get_json(cluster, "-n", ns, f"job/{NAME}")
    service = get_json(cluster, "-n", ns, f"svc/{NAME}-workers")
    ranks = {}
    for pod in pods:
        index = pod["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]
        container = pod["spec"]["containers"][0]
        env = {e["name"]: e for e in container["env"]}
        assert container["command"] == ["python", "-m", "kubellm.runtime.training.launch"]
        args = container["args"]
        assert args[args.index("--node-rank") + 1] == "$(JOB_COMPLETION_INDEX)"
        assert env["JOB_COMPLETION_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"].endswith("job-completion-index']")
        ranks[index] = (
            pod["spec"]["hostname"],
            pod["spec"]["subdomain"],
            args[args.index("--rdzv-endpoint") + 1],
            args[args.index("--rdzv-id") + 1],
        )
    endpoint = f"{NAME}-0.{NAME}-workers:29500"
    print(
        f"\n[distributed] job: completionMode={job['spec']['completionMode']} completions={job['spec']['completions']}"
        f" parallelism={job['spec']['parallelism']}; service clusterIP={service['spec']['clusterIP']}; pods: {ranks}"
    )
    assert (job["spec"]["completionMode"], job["spec"]["completions"], job["spec"]["parallelism"]) == ("Indexed", 3, 3)
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"] is True
    uid = ftj["metadata"]["uid"]
    assert ranks == {str(i): (f"{NAME}-{i}", f"{NAME}-workers", endpoint, uid) for i in range(3)}
    for child in (job, service):
        assert [ref["uid"] for ref in child["metadata"]["ownerReferences"]] == [uid]

    done = wait_for("the FineTuneJob to succeed", lambda: _succeeded(cluster, ns), timeout=90)
    assert done["status"]["phase"] == "Succeeded"

    cluster.kubectl("delete", "-n", ns, f"ftj/{NAME}", "--wait=true")

    def gone() -> bool:
        names = [f"job/{NAME}", f"svc/{NAME}-workers", f"cm/{NAME}-config", f"cm/{NAME}-report"]
        left = [n for n in names if _exists(cluster, ns, n)]
        return not left and not _pods(cluster, ns)

    wait_for("every child to be collected", lambda: gone() or None, timeout=90)
