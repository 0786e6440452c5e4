"""The report transport end to end: the runtime's reporter, under the pod's own ServiceAccount,
patches the report ConfigMap the operator made, and the operator copies it into status.

kwok runs no code, so the test plays the pod: it mints a token of the ``<name>-report``
ServiceAccount and runs :mod:`kubellm.runtime.reporting` with the in-cluster environment a pod
would have (service host/port, token, CA and namespace files).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from kubellm.contract.experiments import ExperimentProgress, MetricSummary, VariantResult
from kubellm.runtime.experiments.results import ExperimentResult
from kubellm.runtime.reporting import ThrottledStatus, reporter_from_env
from tests.api_cases import load_example
from tests.harness.cluster import Cluster
from tests.harness.operator_fixtures import StartOperator
from tests.harness.operator_process import wait_for

pytestmark = pytest.mark.integration


def _pod_environment(cluster: Cluster, ns: str, account: str, configmap: str, sa_dir: Path) -> dict[str, str]:
    """What the kubelet gives a pod: service host/port and the mounted ServiceAccount files."""
    token = cluster.kubectl("create", "token", account, "-n", ns, "--duration=10m").stdout.strip()
    sa_dir.mkdir(parents=True, exist_ok=True)
    (sa_dir / "token").write_text(token)
    (sa_dir / "namespace").write_text(ns)
    (sa_dir / "ca.crt").write_bytes((cluster.workdir / "pki" / "ca.crt").read_bytes())
    server = urlsplit(cluster.server)
    return {
        "KUBERNETES_SERVICE_HOST": str(server.hostname),
        "KUBERNETES_SERVICE_PORT": str(server.port),
        "KUBELLM_SERVICEACCOUNT_DIR": str(sa_dir),
        "KUBELLM_REPORT_CONFIGMAP": configmap,
    }


def get_json(cluster: Cluster, *args: str) -> dict[str, Any]:
    """``kubectl get ... -o json``, or an empty dict while the object does not exist."""
    result = cluster.kubectl("get", *args, "-o", "json", check=False)
    found: dict[str, Any] = json.loads(result.stdout) if result.returncode == 0 else {}
    return found


def _experiment(ns: str) -> dict[str, Any]:
    manifest = load_example("promptexperiment")
    manifest["metadata"]["namespace"] = ns
    manifest["spec"]["target"] = {"url": "http://llm.example.invalid:8000/v1"}
    return manifest


def _getter(cluster: Cluster, ns: str, resource: str) -> Callable[[], dict[str, Any]]:
    return lambda: get_json(cluster, "-n", ns, resource)


def _apply_experiment(cluster: Cluster, ns: str) -> dict[str, Any]:
    """Apply the example experiment (external target) and wait for its report objects."""
    manifest = _experiment(ns)
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest))
    name = manifest["metadata"]["name"]
    for kind in ("cm", "sa", "rolebinding"):
        wait_for(f"the report {kind}", _getter(cluster, ns, f"{kind}/{name}-report"), timeout=60)
    return manifest


def _result(names: list[str]) -> ExperimentResult:
    def variant(name: str, mean: float) -> VariantResult:
        metric = MetricSummary(name="score", mean=mean, ci_low=mean - 0.1, ci_high=mean + 0.1)
        return VariantResult(name=name, samples=20, metrics=[metric])

    return ExperimentResult(
        progress=ExperimentProgress(percent=100, completed=60, total=60),
        results=[variant(name, 0.5 + 0.1 * i) for i, name in enumerate(names)],
        winner=None,
        summary="no significant difference at alpha 0.05",
    )


def test_runtime_reports_through_its_configmap_and_the_operator_copies_it(
    cluster: Cluster, namespace: str, start_operator: StartOperator, tmp_path: Path
) -> None:
    ns = namespace
    start_operator()
    manifest = _apply_experiment(cluster, ns)
    name = manifest["metadata"]["name"]
    job = wait_for("the Job", lambda: get_json(cluster, "-n", ns, f"job/{name}"), timeout=60)
    pod_spec = job["spec"]["template"]["spec"]
    assert pod_spec["serviceAccountName"] == f"{name}-report"
    env = {e["name"]: e.get("value") for e in pod_spec["containers"][0]["env"]}
    assert env["KUBELLM_REPORT_CONFIGMAP"] == f"{name}-report"

    pod_env = _pod_environment(cluster, ns, f"{name}-report", f"{name}-report", tmp_path / "sa")
    reporter = reporter_from_env(pod_env)
    ThrottledStatus(reporter).update({"progress": {"percent": 40, "completed": 24, "total": 60}}, final=True)
    running = wait_for(
        "progress in status",
        lambda: (obj := get_json(cluster, "-n", ns, f"pexp/{name}")).get("status", {}).get("progress") and obj,
        timeout=60,
    )
    assert running["status"]["progress"]["percent"] == 40

    variants = [v["name"] for v in manifest["spec"]["variants"]]
    result = _result(variants)
    assert reporter.publish({"result.json": json.dumps(result.dump()), "report.md": "# report\n"})
    done = wait_for(
        "the result in status",
        lambda: (obj := get_json(cluster, "-n", ns, f"pexp/{name}")).get("status", {}).get("results") and obj,
        timeout=60,
    )
    assert [r["name"] for r in done["status"]["results"]] == variants
    assert done["status"]["summary"] == result.summary
    assert done["status"]["reportConfigMap"] == f"{name}-report"


def test_report_account_can_patch_only_its_own_configmap(
    cluster: Cluster, namespace: str, start_operator: StartOperator, tmp_path: Path
) -> None:
    ns = namespace
    start_operator()
    name = _apply_experiment(cluster, ns)["metadata"]["name"]
    cluster.kubectl("create", "configmap", "someone-else", "-n", ns)
    pod_env = _pod_environment(cluster, ns, f"{name}-report", "someone-else", tmp_path / "sa")
    assert reporter_from_env(pod_env).publish({"status.json": "{}"}) is False
    assert "status.json" not in (get_json(cluster, "-n", ns, "cm/someone-else").get("data") or {})
