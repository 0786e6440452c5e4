"""Fixtures for the operator on the real control plane: CRDs, the operator's RBAC, the operator process."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.harness.cluster import Cluster
from tests.integration.operator.helpers import OperatorProcess, apply_crds, operator_kubeconfig

FAST = ("--wait-seconds", "1", "--error-backoff-seconds", "1", "--workers", "8")
"""Short retry delays so waiting resources move on quickly in tests."""

StartOperator = Callable[..., OperatorProcess]


@pytest.fixture(scope="session")
def crds(cluster: Cluster) -> Cluster:
    """The generated CRDs, applied and established."""
    apply_crds(cluster)
    return cluster


@pytest.fixture(scope="session")
def sa_kubeconfig(crds: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A kubeconfig of the operator's ServiceAccount, bound to exactly the rules of rbac.yaml."""
    return operator_kubeconfig(crds, tmp_path_factory.mktemp("operator") / "kubeconfig")


@pytest.fixture
def start_operator(
    sa_kubeconfig: Path, namespace: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[StartOperator]:
    """Start ``python -m kubellm.operator --namespace <namespace>`` (again after a kill); all stopped at the end."""
    started: list[OperatorProcess] = []

    def start(*extra: str) -> OperatorProcess:
        process = OperatorProcess(sa_kubeconfig, tmp_path / "operator.log", [namespace], *FAST, *extra).start()
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()
    if started and request.node.stash.get(_FAILED, False):
        print(f"\n[operator log tail]\n{started[-1].tail(80)}")


_FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Remember a failed test so its operator log gets printed."""
    report = yield
    if getattr(report, "failed", False):
        item.stash[_FAILED] = True
    return report
