"""Kopf handlers, one module per kind: decorators plus a short parse -> build -> apply -> status pass.

:func:`register_all` wires them into a registry; nothing is registered at import time.
"""

from __future__ import annotations

import kopf

from kubellm.operator.handlers import finetunejob, modeldeployment, promptexperiment
from kubellm.operator.handlers.common import Operator, register_child_watch

__all__ = ["Operator", "register_all"]


def register_all(registry: kopf.OperatorRegistry, op: Operator) -> None:
    """Register the handlers of the three kinds."""
    modules = (finetunejob, modeldeployment, promptexperiment)
    for module in modules:
        module.register(registry, op)
    register_child_watch(registry, op, {module.api.KIND: (module.api.INFO, module.reconcile) for module in modules})
