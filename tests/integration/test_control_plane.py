"""The test control plane itself: the controllers really run, and the harness cleans up."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.harness.cluster import Cluster, harness_processes

pytestmark = pytest.mark.integration

CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.harness.kubellm.io"},
    "spec": {
        "group": "harness.kubellm.io",
        "names": {"kind": "Widget", "plural": "widgets", "singular": "widget"},
        "scope": "Namespaced",
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "required": ["size"],
                                "properties": {"size": {"type": "integer", "minimum": 1, "maximum": 10}},
                            }
                        },
                    }
                },
            }
        ],
    },
}


def _json(cluster: Cluster, *args: str) -> dict[str, object]:
    return dict(json.loads(cluster.kubectl("get", *args, "-o", "json").stdout))


def test_deployment_becomes_available(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl("create", "deployment", "web", "--image=registry.invalid/web:1", "--replicas=2", "-n", namespace)
    cluster.kubectl("rollout", "status", "deployment/web", "-n", namespace, "--timeout=90s")
    deployment = _json(cluster, "deployment", "web", "-n", namespace)
    status = deployment["status"]
    assert isinstance(status, dict)
    assert status["availableReplicas"] == 2
    pods = _json(cluster, "pods", "-n", namespace, "-l", "app=web")["items"]
    assert isinstance(pods, list)
    assert {p["status"]["phase"] for p in pods} == {"Running"}
    assert all(p["spec"]["nodeName"].startswith("kwok-") for p in pods)


def test_job_runs_to_succeeded(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl("create", "job", "once", "--image=registry.invalid/job:1", "-n", namespace)
    cluster.kubectl("wait", "--for=condition=complete", "job/once", "-n", namespace, "--timeout=90s")
    job = _json(cluster, "job", "once", "-n", namespace)
    status = job["status"]
    assert isinstance(status, dict)
    assert status["succeeded"] == 1


def test_deleting_owner_garbage_collects_dependents(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl("create", "configmap", "owner", "--from-literal=a=b", "-n", namespace)
    owner = _json(cluster, "configmap", "owner", "-n", namespace)
    meta = owner["metadata"]
    assert isinstance(meta, dict)
    dependent = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "dependent",
            "namespace": namespace,
            "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": meta["uid"]}],
        },
        "data": {"x": "y"},
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(dependent))
    cluster.kubectl("delete", "configmap", "owner", "-n", namespace)
    cluster.kubectl("wait", "--for=delete", "configmap/dependent", "-n", namespace, "--timeout=60s")
    gone = cluster.kubectl("get", "configmap", "dependent", "-n", namespace, check=False)
    assert gone.returncode != 0 and "NotFound" in gone.stderr


def test_persistent_volume_claim_binds_and_pod_using_it_runs(cluster: Cluster, namespace: str) -> None:
    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "model-cache", "namespace": namespace},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "reader", "namespace": namespace},
        "spec": {
            "containers": [{"name": "main", "image": "registry.invalid/reader:1", "volumeMounts": [
                {"name": "cache", "mountPath": "/models"}]}],
            "volumes": [{"name": "cache", "persistentVolumeClaim": {"claimName": "model-cache"}}],
        },
    }  # fmt: skip
    cluster.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": [claim, pod]}))
    cluster.kubectl("wait", "--for=jsonpath={.status.phase}=Bound", "pvc/model-cache", "-n", namespace, "--timeout=60s")
    cluster.kubectl("wait", "--for=condition=Ready", "pod/reader", "-n", namespace, "--timeout=60s")


def test_gpu_request_schedules_on_the_gpu_node(cluster: Cluster, namespace: str) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "gpu", "namespace": namespace},
        "spec": {
            "containers": [{"name": "main", "image": "registry.invalid/gpu:1",
                            "resources": {"limits": {"nvidia.com/gpu": "1"}}}],
        },
    }  # fmt: skip
    cluster.kubectl("apply", "-f", "-", input=json.dumps(pod))
    cluster.kubectl("wait", "--for=condition=Ready", "pod/gpu", "-n", namespace, "--timeout=60s")
    scheduled = _json(cluster, "pod", "gpu", "-n", namespace)["spec"]
    assert isinstance(scheduled, dict)
    assert scheduled["nodeName"] == "kwok-gpu-0"


def test_crd_is_served_and_schema_enforced(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl("apply", "-f", "-", input=json.dumps(CRD))
    cluster.kubectl("wait", "--for=condition=established", "crd/widgets.harness.kubellm.io", "--timeout=60s")
    good = {"apiVersion": "harness.kubellm.io/v1", "kind": "Widget", "metadata": {"name": "ok"}, "spec": {"size": 3}}
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(good))
    assert _json(cluster, "widget", "ok", "-n", namespace)["spec"] == {"size": 3}
    bad = {**good, "metadata": {"name": "bad"}, "spec": {"size": 99}}
    rejected = cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(bad), check=False)
    assert rejected.returncode != 0
    assert "spec.size" in rejected.stderr and "less than or equal to 10" in rejected.stderr


def test_kubectl_and_helm_talk_to_the_cluster(cluster: Cluster, namespace: str, tmp_path: Path) -> None:
    version = json.loads(cluster.kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"].startswith("v1.36.")
    chart = tmp_path / "probe"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text(yaml.safe_dump({"apiVersion": "v2", "name": "probe", "version": "0.1.0"}))
    (chart / "templates" / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-cm\ndata:\n  k: v\n"
    )
    cluster.helm("install", "probe", str(chart), "-n", namespace, "--wait", "--timeout=60s")
    assert _json(cluster, "configmap", "probe-cm", "-n", namespace)["data"] == {"k": "v"}
    releases = json.loads(cluster.helm("list", "-n", namespace, "-o", "json").stdout)
    assert [r["name"] for r in releases] == ["probe"]
    cluster.helm("uninstall", "probe", "-n", namespace, "--wait")


def test_second_cluster_by_hand_does_not_collide_and_leaves_no_process(cluster: Cluster, tmp_path: Path) -> None:
    """``make cluster-up`` / ``make cluster-down`` beside the session's cluster."""
    state_dir = tmp_path / "kubellm-cluster-by-hand"
    up = subprocess.run(
        [sys.executable, "-m", "tests.harness.cluster", "up", "--dir", str(state_dir)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert up.returncode == 0, up.stderr
    print(f"\n[cluster] {up.stdout.splitlines()[0]}")
    state = json.loads((state_dir / "state.json").read_text())
    second = Cluster(
        workdir=Path(state["workdir"]),
        bin_dir=Path(state["bin_dir"]),
        kubeconfig=state_dir / "kubeconfig",
        server=state["server"],
    )
    try:
        assert second.server != cluster.server
        assert not {c["pid"] for c in state["components"]} & set(cluster.pids())
        second.kubectl("create", "namespace", "only-in-second")
        assert cluster.kubectl("get", "namespace", "only-in-second", check=False).returncode != 0
        assert len(harness_processes(str(state_dir))) == len(state["components"])
    finally:
        down = subprocess.run(
            [sys.executable, "-m", "tests.harness.cluster", "down", "--dir", str(state_dir)],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
    assert down.returncode == 0, down.stderr
    assert harness_processes(str(state_dir)) == []
    assert not (state_dir / "kubeconfig").exists()
    assert cluster.kubectl("get", "--raw", "/readyz").stdout == "ok"
