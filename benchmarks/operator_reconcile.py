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

Part of ``python -m benchmarks`` (family ``operator``); alone, from the repository root::

    .venv/bin/python -m benchmarks.operator_reconcile --count 1000
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client, config

from benchmarks.figures import Check, FamilyResult, Plot, RunOptions, Table, Target
from benchmarks.processes import rss_mib
from kubellm.operator.k8s import KubeClient
from tests.harness.cluster import Cluster, running_cluster
from tests.harness.operator_process import OperatorProcess, apply_crds, operator_kubeconfig

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


@dataclass
class OperatorFigures:
    """What one operator run measured."""

    latencies: list[float]
    count: int
    applied: float
    children: float
    ready: float
    rss_first: float
    rss_later: float
    rest_seconds: float
    writes: float


def _at_rest(operator: OperatorProcess, pid: int, rest: float) -> tuple[float, float]:
    settle = time.monotonic() + 60  # do not wait forever for an operator that keeps writing
    while not _idle(operator) and time.monotonic() < settle:
        pass
    time.sleep(rest)
    first = rss_mib(pid)
    time.sleep(rest)
    return first, rss_mib(pid)


def measure(count: int, samples: int, timeout: float, rest: float) -> OperatorFigures:
    """Start a control plane and the operator, measure latency, throughput and memory at rest."""
    with running_cluster() as cluster, tempfile.TemporaryDirectory() as tmp:
        apply_crds(cluster)
        cluster.kubectl("create", "namespace", NAMESPACE)
        kubeconfig = operator_kubeconfig(cluster, Path(tmp) / "kubeconfig")
        operator = OperatorProcess(kubeconfig, Path(tmp) / "operator.log", [NAMESPACE]).start()
        assert operator.process is not None
        try:
            kube = admin_client(cluster)
            latencies = measure_latency(kube, samples)
            applied, children, ready = measure_throughput(kube, count, timeout)
            first, later = _at_rest(operator, operator.process.pid, rest)
            return OperatorFigures(latencies, count, applied, children, ready, first, later, rest, operator.writes())
        finally:
            operator.stop()


def _idle(operator: OperatorProcess) -> bool:
    before = operator.writes()
    time.sleep(2)
    return operator.writes() == before


def _checks(figures: OperatorFigures, quick: bool) -> list[Check]:
    growth = (figures.rss_later / figures.rss_first - 1) * 100
    return [
        Check(
            "median apply -> Deployment child", statistics.median(figures.latencies), "s", Target(0.5, at_least=False)
        ),
        Check(
            f"{figures.count:,} ModelDeployments applied -> all Ready",
            figures.ready,
            "s",
            None if quick else Target(120.0, at_least=False),
        ),
        Check("operator RSS at rest after the load", figures.rss_later, "MiB"),
        Check(
            f"operator RSS growth over {figures.rest_seconds:.0f} s at rest (flat: <= 5%)",
            growth,
            "%",
            Target(5.0, at_least=False),
        ),
    ]


def run(options: RunOptions) -> FamilyResult:
    """The benchmark family."""
    count, samples, rest = (100, 5, 3.0) if options.quick else (1000, 20, 10.0)
    figures = measure(count, samples, timeout=600, rest=rest)
    latencies_ms = [latency * 1000 for latency in figures.latencies]
    rows: list[list[str | float | int | None]] = [
        ["apply -> Deployment, median (ms)", statistics.median(latencies_ms)],
        ["apply -> Deployment, max (ms)", max(latencies_ms)],
        [f"{count:,} applied from 8 threads (s)", figures.applied],
        [f"{count:,}: all Deployments created (s)", figures.children],
        [f"{count:,}: all Ready=True (s)", figures.ready],
        ["operator RSS at rest (MiB)", figures.rss_first],
        [f"operator RSS {figures.rest_seconds:.0f} s later (MiB)", figures.rss_later],
        ["operator writes during the run", figures.writes],
    ]
    return FamilyResult(
        name="operator",
        title="Operator on the local control plane",
        workload=(
            "A fresh kube-apiserver + etcd + kwok control plane, the CRDs, the operator as a subprocess under its "
            f"least-privilege ServiceAccount; {samples} ModelDeployments applied one at a time (apply -> Deployment "
            f"child, polled every 5 ms), then {count:,} applied from 8 threads (replicas 0, so the figure measures "
            "the operator, not kwok's pod capacity) until all report Ready=True; then its resident memory at rest."
        ),
        tables=[Table("Operator figures", ["figure", "value"], rows)],
        checks=_checks(figures, options.quick),
        plots=[
            Plot(
                "apply -> child latency (ms)",
                "ms",
                [f"#{i}" for i in range(len(latencies_ms))],
                {"latency": list[float | None](latencies_ms)},
            ),
            Plot(
                f"{count:,} ModelDeployments (s)",
                "s",
                ["applied", "children", "Ready"],
                {"seconds": [figures.applied, figures.children, figures.ready]},
            ),
        ],
        data=dataclasses.asdict(figures),
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the flags, run, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=1000, help="ModelDeployments for the throughput figure")
    parser.add_argument("--samples", type=int, default=20, help="ModelDeployments for the latency figure")
    parser.add_argument("--timeout", type=float, default=600, help="give up on the throughput run after this")
    args = parser.parse_args(argv)
    figures = measure(args.count, args.samples, args.timeout, rest=10.0)
    for check in _checks(figures, quick=False):
        print(check.sentence())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
