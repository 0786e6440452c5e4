"""Operator benchmark (not a test): apply -> child latency, N ModelDeployments reconciled, RSS at rest.

Starts a fresh harness control plane, the CRDs, the operator (as a subprocess, under its
least-privilege ServiceAccount, watching one namespace), then:

1. latency: ``--samples`` ModelDeployments applied one at a time (server-side apply); the time
   from the apply returning to the Deployment child existing (polled every 5 ms); median and p90;
2. throughput: ``--count`` ModelDeployments applied from 8 threads; the time until every one
   has its Deployment, and until every one reports ``Ready=True`` (``replicas: 0``, so the
   figure measures the operator rather than kwok's pod capacity of 330 pods);
3. the operator's resident memory after 10 s and after 20 s at rest.

The harness's Service range is 10.0.0.0/16, so every ModelDeployment's Service gets a ClusterIP.

    PYTHONPATH=. .venv/bin/python benchmarks/operator_reconcile.py --count 1000   # from the repository root
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from kubernetes import client, config

from kubellm.operator.k8s import KubeClient
from tests.harness.cluster import Cluster, running_cluster
from tests.integration.operator.helpers import OperatorProcess, apply_crds, operator_kubeconfig

NAMESPACE = "bench"
MANAGED = "app.kubernetes.io/managed-by=kubellm-operator"


def model_deployment(name: str) -> dict[str, Any]:
    """A ModelDeployment with no replicas (the operator still builds all its children)."""
    return {
        "apiVersion": "kubellm.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"model": {"uri": "dummy://llama?hidden_size=64&seed=1"}, "replicas": 0},
    }


def admin_client(cluster: Cluster) -> KubeClient:
    """Our own apply layer with the admin kubeconfig."""
    configuration = client.Configuration()
    config.load_kube_config(config_file=str(cluster.kubeconfig), client_configuration=configuration)  # type: ignore[no-untyped-call]
    configuration.connection_pool_maxsize = 16
    return KubeClient(client.ApiClient(configuration), "benchmark")


def measure_latency(kube: KubeClient, samples: int) -> list[float]:
    """Seconds from an apply returning to its Deployment existing, one resource at a time."""
    latencies = []
    for index in range(samples):
        name = f"latency-{index:03d}"
        kube.apply(model_deployment(name))
        started = time.perf_counter()
        while kube.get("apps/v1", "Deployment", NAMESPACE, name) is None:
            time.sleep(0.005)
        latencies.append(time.perf_counter() - started)
    return latencies


def _count(kube: KubeClient, api_version: str, kind: str, prefix: str, ready: bool = False) -> int:
    items = kube.list(api_version, kind, NAMESPACE, MANAGED if kind == "Deployment" else "")
    named = [i for i in items if i["metadata"]["name"].startswith(prefix)]
    if not ready:
        return len(named)
    conditions = (c for i in named for c in i.get("status", {}).get("conditions", []))
    return sum(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def measure_throughput(kube: KubeClient, count: int, timeout: float) -> tuple[float, float, float]:
    """(apply seconds, seconds to all Deployments, seconds to all Ready) for ``count`` resources."""
    started = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(kube.apply, (model_deployment(f"load-{i:04d}") for i in range(count))))
    applied = time.perf_counter() - started
    children: float | None = None
    ready: float | None = None
    while ready is None and time.perf_counter() - started < timeout:
        if children is None and _count(kube, "apps/v1", "Deployment", "load-") >= count:
            children = time.perf_counter() - started
        if (
            children is not None
            and _count(kube, "kubellm.io/v1alpha1", "ModelDeployment", "load-", ready=True) >= count
        ):
            ready = time.perf_counter() - started
        time.sleep(0.5)
    nan = float("nan")
    return applied, nan if children is None else children, nan if ready is None else ready


def rss_mib(pid: int) -> float:
    """Resident memory of a process, MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run(count: int, samples: int, timeout: float) -> None:
    """Start everything, measure, print the figures."""
    with running_cluster() as cluster, tempfile.TemporaryDirectory() as tmp:
        apply_crds(cluster)
        cluster.kubectl("create", "namespace", NAMESPACE)
        kubeconfig = operator_kubeconfig(cluster, Path(tmp) / "kubeconfig")
        operator = OperatorProcess(kubeconfig, Path(tmp) / "operator.log", [NAMESPACE]).start()
        assert operator.process is not None
        try:
            kube = admin_client(cluster)
            latencies = measure_latency(kube, samples)
            print(
                f"apply -> Deployment created: median {statistics.median(latencies) * 1000:.0f} ms, "
                f"p90 {statistics.quantiles(latencies, n=10)[-1] * 1000:.0f} ms over {samples} resources"
            )
            applied, children, ready = measure_throughput(kube, count, timeout)
            print(
                f"{count} ModelDeployments: applied in {applied:.1f} s; all Deployments created after "
                f"{children:.1f} s; all Ready=True after {ready:.1f} s"
            )
            settle = time.monotonic() + 60  # failing Services (harness IP range) keep it busy; do not wait forever
            while not _idle(operator) and time.monotonic() < settle:
                pass
            time.sleep(10)
            first = rss_mib(operator.process.pid)
            time.sleep(10)
            print(
                f"operator RSS at rest: {first:.0f} MiB, 10 s later {rss_mib(operator.process.pid):.0f} MiB; "
                f"writes {operator.writes():.0f}"
            )
        finally:
            operator.stop()


def _idle(operator: OperatorProcess) -> bool:
    before = operator.writes()
    time.sleep(2)
    return operator.writes() == before


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the flags and run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=1000, help="ModelDeployments for the throughput figure")
    parser.add_argument("--samples", type=int, default=20, help="ModelDeployments for the latency figure")
    parser.add_argument("--timeout", type=float, default=600, help="give up on the throughput run after this")
    args = parser.parse_args(argv)
    run(args.count, args.samples, args.timeout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
