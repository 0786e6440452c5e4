"""How a runtime pod reports back: a ConfigMap it alone may patch.

For a FineTuneJob or PromptExperiment named ``x`` the operator creates:

- ConfigMap ``x-report`` (labels and owner reference only; the operator never owns its data),
- ServiceAccount ``x-report``, and a Role + RoleBinding ``x-report`` granting exactly
  ``get`` and ``patch`` on that one ConfigMap (``resourceNames``).

The pod runs as that ServiceAccount with ``KUBELLM_REPORT_CONFIGMAP=x-report`` and
``KUBELLM_NAMESPACE`` set, and merge-patches these keys of ``data`` (JSON strings, camelCase):

- ``status.json``: a partial status of its kind, written whenever there is news, e.g.
  ``{"progress": {...}, "dataQuality": {...}, "search": {...}}`` for training, or
  ``{"progress": {...}}`` while an experiment runs;
- ``result.json`` (PromptExperiment): the final status payload of ``kubellm experiment``
  (results, comparisons, winner, summary); ``report.md``: the full human-readable report.

The operator reads the ConfigMap on each pass and copies the known fields into status. No
sidecar, no Secret read, no pod-wide patch rights; the ConfigMap doubles as the report artifact
and is garbage-collected with its owner.
"""

from __future__ import annotations

from typing import Any

from kubellm.operator.manifests.common import Owner, metadata

__all__ = [
    "REPORT_ENV",
    "REPORT_MARKDOWN_KEY",
    "REPORT_SUFFIX",
    "RESULT_KEY",
    "STATUS_KEY",
    "build_report_children",
    "report_env",
    "report_name",
]

REPORT_SUFFIX = "report"
REPORT_ENV = "KUBELLM_REPORT_CONFIGMAP"
STATUS_KEY = "status.json"
RESULT_KEY = "result.json"
REPORT_MARKDOWN_KEY = "report.md"


def report_name(owner: Owner) -> str:
    """Name of the report ConfigMap, and of the ServiceAccount, Role and RoleBinding around it."""
    return owner.child_name(REPORT_SUFFIX)


def report_env(owner: Owner) -> list[dict[str, Any]]:
    """The env var telling the runtime where to report."""
    return [{"name": REPORT_ENV, "value": report_name(owner)}]


def build_report_children(owner: Owner, component: str) -> list[dict[str, Any]]:
    """ConfigMap, ServiceAccount, Role and RoleBinding, in the order they must exist."""
    name = report_name(owner)
    return [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata(owner, name, component)},
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": metadata(owner, name, component),
            "automountServiceAccountToken": False,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": metadata(owner, name, component),
            "rules": [
                {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [name], "verbs": ["get", "patch"]}
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": metadata(owner, name, component),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": owner.namespace}],
        },
    ]
