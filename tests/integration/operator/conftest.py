"""The operator fixtures (CRDs, the operator's RBAC, the operator process) from the shared harness."""

from __future__ import annotations

from tests.harness.operator_fixtures import FAST, StartOperator, crds, sa_kubeconfig, start_operator

__all__ = ["FAST", "StartOperator", "crds", "sa_kubeconfig", "start_operator"]
