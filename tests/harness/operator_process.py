"""Running the operator against the test control plane: CRDs, its RBAC, its process, its metrics.

Shared by the integration and reliability tests (through :mod:`tests.harness.operator_fixtures`)
and ``benchmarks/operator_reconcile.py``. The operator runs as a
subprocess (``python -m kubellm.operator``) under a ServiceAccount bound to exactly the rules
of ``operator/kubellm/operator/rbac.yaml``, so the RBAC the chart ships is what is tested.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

from kubellm.operator import api
from tests.harness.cluster import Cluster, free_port

__all__ = [
    "CHILD_KINDS",
    "MANAGED",
    "OperatorProcess",
    "apply_crds",
    "census",
    "condition",
    "get_json",
    "model_deployment",
    "model_deployments",
    "operator_kubeconfig",
    "ready_count",
    "settled",
    "wait_for",
]

ROOT = Path(__file__).resolve().parents[2]
CRD_DIR = ROOT / "crds"
RBAC_RULES = ROOT / "operator" / "kubellm" / "operator" / "rbac.yaml"
SYSTEM_NAMESPACE = "kubellm-system"
ACCOUNT = "kubellm-operator"
T = TypeVar("T")
MANAGED = "app.kubernetes.io/managed-by=kubellm-operator"
CHILD_KINDS = "configmaps,deployments,services,jobs,horizontalpodautoscalers,serviceaccounts,roles,rolebindings"
"""Every kind the operator creates (``kubectl get`` syntax); all carry the ``MANAGED`` label."""


def get_json(cluster: Cluster, *args: str) -> dict[str, Any]:
    """``kubectl get ... -o json``."""
    result: dict[str, Any] = json.loads(cluster.kubectl("get", *args, "-o", "json").stdout)
    return result


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 60, interval: float = 0.25) -> T:
    """Poll ``probe`` until it returns something truthy; fail saying ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def apply_crds(cluster: Cluster) -> None:
    """The generated CRDs, applied server-side and established."""
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "--field-manager=kubellm-tests", "-f", str(CRD_DIR))
    names = [f"crd/{info.crd_name}" for info in api.KINDS]
    cluster.kubectl("wait", "--for", "condition=established", "--timeout=60s", *names)


def _rbac_manifests() -> list[dict[str, Any]]:
    rules = yaml.safe_load(RBAC_RULES.read_text())
    meta = {"name": ACCOUNT}
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": SYSTEM_NAMESPACE}},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {**meta, "namespace": SYSTEM_NAMESPACE}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": meta, "rules": rules},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": meta,
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": ACCOUNT},
            "subjects": [{"kind": "ServiceAccount", "name": ACCOUNT, "namespace": SYSTEM_NAMESPACE}],
        },
    ]


def operator_kubeconfig(cluster: Cluster, path: Path) -> Path:
    """A kubeconfig holding a token of the operator's ServiceAccount (bound to rbac.yaml only)."""
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(_rbac_manifests()))
    token = cluster.kubectl("create", "token", ACCOUNT, "-n", SYSTEM_NAMESPACE, "--duration=4h").stdout.strip()
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    server = admin["clusters"][0]["cluster"]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "test", "cluster": server}],
        "users": [{"name": ACCOUNT, "user": {"token": token}}],
        "contexts": [{"name": "operator", "context": {"cluster": "test", "user": ACCOUNT}}],
        "current-context": "operator",
    }
    path.write_text(yaml.safe_dump(config))
    return path


def model_deployment(name: str, quantization: str = "none") -> dict[str, Any]:
    """A ModelDeployment of a ``dummy://`` model: kwok marks its pods Ready, so it converges."""
    return {
        "apiVersion": "kubellm.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {
            "model": {"uri": "dummy://llama?hidden_size=64&num_hidden_layers=2&seed=1"},
            "serving": {"quantization": quantization},
            "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}},
        },
    }


def model_deployments(names: Iterable[str], port: int) -> str:
    """ModelDeployments named ``names``, all on Service port ``port`` (a new port is a spec change), as YAML."""
    documents = []
    for name in names:
        resource = model_deployment(name)
        resource["spec"]["service"] = {"port": port}
        documents.append(resource)
    return yaml.safe_dump_all(documents)


def condition(obj: dict[str, Any], kind: str) -> tuple[str, str] | None:
    """(status, reason) of a condition of a custom resource, if it has one."""
    for found in obj.get("status", {}).get("conditions", []):
        if found["type"] == kind:
            return found["status"], found["reason"]
    return None


def ready_count(cluster: Cluster, ns: str) -> int:
    """ModelDeployments Ready with their replicas up, at their current generation."""
    items = get_json(cluster, "-n", ns, "mdep")["items"]
    return sum(
        condition(i, "Ready") == ("True", "ReplicasReady")
        and i["status"].get("observedGeneration") == i["metadata"]["generation"]
        for i in items
    )


def census(cluster: Cluster, ns: str) -> tuple[int, int, int, int]:
    """(children, duplicated, orphaned, missing) of the ModelDeployments' direct children in ``ns``.

    Duplicated: more than one child of a kind for one owner; orphaned: a child whose controller
    owner is not a live ModelDeployment; missing: an owner lacking one of its children.
    """
    owners = {o["metadata"]["uid"] for o in get_json(cluster, "-n", ns, "mdep")["items"]}
    children = get_json(cluster, "-n", ns, "configmaps,deployments,services", "-l", MANAGED)["items"]
    per_owner: Counter[tuple[str, str]] = Counter()
    for child in children:
        refs = [r["uid"] for r in child["metadata"].get("ownerReferences", []) if r.get("controller")]
        per_owner[child["kind"], refs[0] if refs else "none"] += 1
    duplicated = sum(n - 1 for n in per_owner.values() if n > 1)
    orphaned = sum(n for (_, uid), n in per_owner.items() if uid not in owners)
    missing = sum(1 for uid in owners for kind in ("ConfigMap", "Deployment", "Service") if per_owner[kind, uid] == 0)
    return len(children), duplicated, orphaned, missing


def settled(process: OperatorProcess, seconds: float = 2.0, timeout: float = 120) -> float:
    """Wait until the operator's write count stays put for ``seconds``; return it."""
    deadline = time.monotonic() + timeout
    last, since = process.writes(), time.monotonic()
    while time.monotonic() - since < seconds:
        if time.monotonic() > deadline:
            raise AssertionError(f"the operator kept writing for {timeout:.0f}s (now {last:.0f} writes)")
        time.sleep(0.25)
        now = process.writes()
        if now != last:
            last, since = now, time.monotonic()
    return float(last)


class OperatorProcess:
    """``python -m kubellm.operator`` as a subprocess, with its metrics and health endpoints."""

    def __init__(self, kubeconfig: Path, log: Path, namespaces: Sequence[str], *extra: str) -> None:
        self.kubeconfig = kubeconfig
        self.log = log
        self.namespaces = list(namespaces)
        self.extra = list(extra)
        self.metrics_port = free_port()
        self.health_port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> OperatorProcess:
        """Start it and wait until Kopf's liveness endpoint answers."""
        scope = [arg for ns in self.namespaces for arg in ("--namespace", ns)] or ["--all-namespaces"]
        args = [
            sys.executable, "-m", "kubellm.operator", *scope,
            "--metrics-port", str(self.metrics_port),
            "--liveness-endpoint", f"http://127.0.0.1:{self.health_port}/healthz",
            *self.extra,
        ]  # fmt: skip
        python_path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))  # keep the caller's
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), "PYTHONPATH": python_path}
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        wait_for("the operator's liveness endpoint", self._healthy, timeout=60)
        return self

    def _healthy(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"the operator exited with {self.process.returncode}:\n{self.tail()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/healthz", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def health(self) -> tuple[int, dict[str, Any]]:
        """(HTTP status, JSON body) of Kopf's liveness endpoint (its probes' results; 0 when unreachable)."""
        url = f"http://127.0.0.1:{self.health_port}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return int(response.status), dict(json.loads(response.read() or b"{}"))
        except urllib.error.HTTPError as error:
            return int(error.code), {}
        except OSError:
            return 0, {}

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        """Stop it (SIGTERM lets Kopf finish; SIGKILL simulates a crash) and reap it."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def metrics(self) -> dict[str, float]:
        """Samples of the operator's metrics, keyed ``name{labels}``."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        samples = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                samples[key] = float(value)
        return samples

    def total(self, metric: str) -> float:
        """The sum of every sample of ``metric`` (all label values)."""
        return sum(v for k, v in self.metrics().items() if k.partition("{")[0] == metric)

    def writes(self, child: str | None = None) -> float:
        """Writes the operator made so far (child applies and status patches), or those of one child kind."""
        if child is None:
            return self.total("kubellm_operator_writes_total")
        label = f'child="{child}"'
        return sum(
            v for k, v in self.metrics().items() if k.startswith("kubellm_operator_writes_total{") and label in k
        )

    def alive(self) -> bool:
        """Whether the process still runs."""
        return self.process is not None and self.process.poll() is None

    def tail(self, lines: int = 60) -> str:
        """The end of its log."""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:]) if self.log.exists() else ""
