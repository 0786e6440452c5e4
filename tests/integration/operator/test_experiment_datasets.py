"""A PromptExperiment whose rows are a ConfigMap key, on the real control plane.

The operator reports a missing ConfigMap (or key) in status, Ready False with a one-line reason,
and makes no Job; once the key exists, the Job mounts it. kwok runs no code, so the test plays
the kubelet: the Job's own pod spec runs as a local process (the volumes become folders filled
from the live ConfigMaps) against the scripted OpenAI server, and reads the rows from the file
the run document names.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubellm.operator.local.pods import LocalPod, WorkFolder
from tests.harness.cluster import Cluster
from tests.harness.operator_fixtures import StartOperator
from tests.harness.operator_process import wait_for
from tests.integration import test_experiment_runner as scripted

pytestmark = pytest.mark.integration

server = scripted.server  # the scripted OpenAI-compatible server, as a fixture of this module too
ROWS = 16


def _rows() -> str:
    lines = [
        {"input": f"What is {i} + {i * 3 % 17}?", "expected": i + i * 3 % 17, **scripted._vars(i)} for i in range(ROWS)
    ]
    return "".join(json.dumps(line) + "\n" for line in lines)


def _experiment(ns: str, url: str) -> dict[str, Any]:
    manifest = scripted._manifest()
    manifest["metadata"]["namespace"] = ns
    manifest["spec"]["target"] = {"url": url, "model": "scripted", "api": "chat"}
    manifest["spec"]["dataset"] = {"configMapKeyRef": {"name": "arith-cases", "key": "cases.jsonl"}}
    return manifest


def get_json(cluster: Cluster, *args: str) -> dict[str, Any]:
    """``kubectl get ... -o json``, or an empty dict while the object does not exist."""
    result = cluster.kubectl("get", *args, "-o", "json", check=False)
    found: dict[str, Any] = json.loads(result.stdout) if result.returncode == 0 else {}
    return found


def _ready(cluster: Cluster, ns: str, name: str) -> dict[str, Any]:
    conditions = get_json(cluster, "-n", ns, f"pexp/{name}").get("status", {}).get("conditions", [])
    return next((c for c in conditions if c["type"] == "Ready"), {})


def _config_map(cluster: Cluster, ns: str, data: dict[str, str]) -> None:
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "arith-cases", "namespace": ns}, "data": data}
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(body))


def _run_pod(cluster: Cluster, ns: str, job: dict[str, Any], work: WorkFolder) -> LocalPod:
    """The Job's pod as a local process: its ConfigMap volumes filled from the live ConfigMaps."""
    pod_spec = job["spec"]["template"]["spec"]
    names = [v["configMap"]["name"] for v in pod_spec["volumes"] if "configMap" in v]
    live = {(ns, name): get_json(cluster, "-n", ns, f"cm/{name}")["data"] for name in names}
    config = next(v["configMap"]["name"] for v in pod_spec["volumes"] if v["name"] == "config")
    folder = work.pod("PromptExperiment", "arithmetic")
    pod = LocalPod("arithmetic", pod_spec, live[ns, config], folder, work, ns, config_maps=live).start()
    deadline = time.monotonic() + 120
    while pod.poll() is None and time.monotonic() < deadline:
        time.sleep(0.25)
    pod.stop()
    return pod


def test_a_configmap_dataset_waits_for_its_key_then_the_pod_reads_it(
    cluster: Cluster, namespace: str, start_operator: StartOperator, server: scripted.ScriptedServer, tmp_path: Path
) -> None:
    ns = namespace
    start_operator()
    manifest = _experiment(ns, server.url)
    name = manifest["metadata"]["name"]
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest))

    missing = wait_for(
        "DatasetNotFound", lambda: (r := _ready(cluster, ns, name)).get("reason") == "DatasetNotFound" and r
    )
    assert missing["status"] == "False"
    assert missing["message"] == "ConfigMap arith-cases (spec.dataset.configMapKeyRef) does not exist"
    _config_map(cluster, ns, {"other.csv": "input\n"})
    wrong_key = "ConfigMap arith-cases has no key 'cases.jsonl' (spec.dataset.configMapKeyRef; keys: other.csv)"
    wait_for("the missing key in status", lambda: _ready(cluster, ns, name).get("message") == wrong_key)
    assert get_json(cluster, "-n", ns, f"job/{name}") == {}

    _config_map(cluster, ns, {"cases.jsonl": _rows()})
    job = wait_for("the Job", lambda: get_json(cluster, "-n", ns, f"job/{name}"))
    config = get_json(cluster, "-n", ns, f"cm/{name}-config")["data"]["config.yaml"]
    assert json.loads(config)["dataset"]["uri"] == "/mnt/configmap/arith-cases/cases.jsonl"

    pod = _run_pod(cluster, ns, job, WorkFolder(tmp_path / "work"))
    assert pod.poll() == 0, "\n".join(pod.log_tail(30))
    result = json.loads((pod.report_dir / "result.json").read_text())
    assert {variant["name"]: variant["samples"] for variant in result["results"]} == {
        "zero-shot": ROWS,
        "few-shot": ROWS,
        "cot": ROWS,
    }
