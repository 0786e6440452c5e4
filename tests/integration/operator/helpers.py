"""Kept for ``benchmarks/operator_reconcile.py``: the helpers live in :mod:`tests.harness.operator_process`."""

from __future__ import annotations

from tests.harness.operator_process import OperatorProcess, apply_crds, get_json, operator_kubeconfig, wait_for

__all__ = ["OperatorProcess", "apply_crds", "get_json", "operator_kubeconfig", "wait_for"]
