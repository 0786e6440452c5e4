"""Fixtures for the operator on the real control plane: CRDs, the operator's RBAC, the operator process.

Shared by ``tests/integration/operator`` (its conftest imports them) and the reliability tests
(their modules import them). Builds on the ``cluster`` and ``namespace`` fixtures of
``tests/conftest.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.harness.cluster import Cluster
from tests.harness.operator_process import OperatorProcess, apply_crds, operator_kubeconfig

__all__ = ["FAST", "StartOperator", "crds", "sa_kubeconfig", "start_operator"]

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
    """Start ``python -m kubellm.operator --namespace <namespace>`` (again after a kill); all stopped at the end.

    Each process logs to its own file; when the test fails, the tail of every log is printed.
    """
    started: list[OperatorProcess] = []
    failed_before = request.session.testsfailed

    def start(*extra: str) -> OperatorProcess:
        log = tmp_path / f"operator-{len(started)}.log"
        process = OperatorProcess(sa_kubeconfig, log, [namespace], *FAST, *extra)
        started.append(process)
        return process.start()

    yield start
    for process in started:
        process.stop()
    # The call phase's report is counted before fixtures are torn down.
    if request.session.testsfailed > failed_before:
        for number, process in enumerate(started[-3:], start=max(0, len(started) - 3)):
            print(f"\n[operator {number} log tail]\n{process.tail(80)}")
