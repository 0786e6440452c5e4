"""Running the operator against the test control plane: CRDs, its RBAC, its process, its metrics.

Shared by the integration tests and ``benchmarks/operator_reconcile.py``. The operator runs as a
subprocess (``python -m kubellm.operator``) under a ServiceAccount bound to exactly the rules
of ``operator/kubellm/operator/rbac.yaml``, so the RBAC the chart ships is what is tested.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

from kubellm.operator import api
from tests.harness.cluster import Cluster

__all__ = [
    "OperatorProcess",
    "apply_crds",
    "get_json",
    "operator_kubeconfig",
    "wait_for",
]

ROOT = Path(__file__).resolve().parents[3]
CRD_DIR = ROOT / "crds"
RBAC_RULES = ROOT / "operator" / "kubellm" / "operator" / "rbac.yaml"
SYSTEM_NAMESPACE = "kubellm-system"
ACCOUNT = "kubellm-operator"
T = TypeVar("T")


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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class OperatorProcess:
    """``python -m kubellm.operator`` as a subprocess, with its metrics and health endpoints."""

    def __init__(self, kubeconfig: Path, log: Path, namespaces: Sequence[str], *extra: str) -> None:
        self.kubeconfig = kubeconfig
        self.log = log
        self.namespaces = list(namespaces)
        self.extra = list(extra)
        self.metrics_port = _free_port()
        self.health_port = _free_port()
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
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), "PYTHONPATH": str(ROOT)}
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

    def writes(self) -> float:
        """Writes the operator made so far (child applies and status patches)."""
        return sum(v for k, v in self.metrics().items() if k.startswith("kubellm_operator_writes_total"))

    def tail(self, lines: int = 60) -> str:
        """The end of its log."""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:]) if self.log.exists() else ""
