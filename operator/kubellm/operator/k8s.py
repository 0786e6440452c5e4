"""The one place that talks to the API server: get, list, server-side apply, status and Events.

Writes go through :meth:`KubeClient.ensure`, which skips the request when the live object
already holds every desired field (a re-run over an unchanged object writes nothing), and
otherwise applies the whole desired object with one field manager and ``force`` (the operator
owns its children's fields, so a hand-edit is reverted). Jobs are create-only: their pod
template is immutable, so a spec change only affects Jobs created afterwards.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from kubernetes.client import ApiClient

__all__ = ["PLURALS", "ApiError", "KubeClient", "controlled_by", "is_subset", "resource_path"]

WriteHook = Callable[[str], None]

PLURALS: dict[str, str] = {
    "ConfigMap": "configmaps",
    "Service": "services",
    "ServiceAccount": "serviceaccounts",
    "Pod": "pods",
    "PersistentVolumeClaim": "persistentvolumeclaims",
    "Deployment": "deployments",
    "Job": "jobs",
    "HorizontalPodAutoscaler": "horizontalpodautoscalers",
    "Ingress": "ingresses",
    "Role": "roles",
    "RoleBinding": "rolebindings",
    "FineTuneJob": "finetunejobs",
    "ModelDeployment": "modeldeployments",
    "PromptExperiment": "promptexperiments",
    "ServiceMonitor": "servicemonitors",
    "ScaledObject": "scaledobjects",
}
_CREATE_ONLY = frozenset({"Job"})


class ApiError(RuntimeError):
    """A request the API server refused; ``status`` is the HTTP code."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


def resource_path(api_version: str, kind: str, namespace: str, name: str | None = None) -> str:
    """``/api/v1/namespaces/ns/configmaps/name`` or ``/apis/group/version/...`` (pure)."""
    prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    path = f"{prefix}/namespaces/{quote(namespace)}/{PLURALS[kind]}"
    return f"{path}/{quote(name)}" if name else path


def is_subset(desired: Any, live: Any) -> bool:
    """Whether ``live`` holds every value of ``desired`` (server defaults may add more; pure)."""
    if isinstance(desired, Mapping):
        return isinstance(live, Mapping) and all(k in live and is_subset(v, live[k]) for k, v in desired.items())
    if isinstance(desired, list):
        return isinstance(live, list) and len(desired) == len(live) and all(map(is_subset, desired, live))
    return bool(desired == live or (isinstance(desired, int | str) and str(desired) == str(live)))


def controlled_by(obj: Mapping[str, Any], owner_uid: str) -> bool:
    """Whether ``owner_uid`` is the object's controller (pure)."""
    refs = obj.get("metadata", {}).get("ownerReferences") or []
    return any(ref.get("uid") == owner_uid and ref.get("controller") for ref in refs)


@dataclass
class KubeClient:
    """Synchronous access to the API server for the handlers (which Kopf runs in threads)."""

    api: ApiClient
    field_manager: str

    def _request(
        self,
        method: str,
        path: str,
        *,
        query: list[tuple[str, str]] | None = None,
        body: Any = None,
        content_type: str | None = None,
    ) -> dict[str, Any] | None:
        headers = {"Content-Type": content_type} if content_type else {}
        serialized = self.api.param_serialize(
            method,
            path,
            query_params=query,
            header_params={"Accept": "application/json", **headers},
            body=body,
            auth_settings=["BearerToken"],
        )
        response = self.api.call_api(*serialized)
        data: bytes = response.response.data  # urllib3 body; the wrapper's read() is untyped
        if response.status == 404 and method in ("GET", "DELETE"):
            return None
        if response.status >= 400:
            raise ApiError(response.status, data.decode(errors="replace")[:2000])
        result: dict[str, Any] = json.loads(data)
        return result

    def read(self, path: str) -> dict[str, Any] | None:
        """GET an API path (e.g. of a kind this module has no plural for); None when it does not exist."""
        return self._request("GET", path)

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        return self._request("GET", resource_path(api_version, kind, namespace, name))

    def list(self, api_version: str, kind: str, namespace: str, selector: str) -> list[dict[str, Any]]:
        """Objects of a kind in a namespace matching a label selector."""
        found = self._request("GET", resource_path(api_version, kind, namespace), query=[("labelSelector", selector)])
        return list((found or {}).get("items", []))

    def apply(self, desired: Mapping[str, Any]) -> dict[str, Any]:
        """Server-side apply of the whole object with this client's field manager."""
        meta = desired["metadata"]
        path = resource_path(desired["apiVersion"], desired["kind"], meta["namespace"], meta["name"])
        query = [("fieldManager", self.field_manager), ("force", "true")]
        applied = self._request(
            "PATCH", path, query=query, body=dict(desired), content_type="application/apply-patch+yaml"
        )
        assert applied is not None  # a successful apply always returns the object
        return applied

    def patch_status(self, api_version: str, kind: str, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        """Merge-patch the status subresource of a custom resource."""
        path = resource_path(api_version, kind, namespace, name) + "/status"
        self._request("PATCH", path, body={"status": dict(status)}, content_type="application/merge-patch+json")

    def post_event(self, involved: Mapping[str, Any], *, warning: bool, reason: str, message: str) -> None:
        """Record a core/v1 Event about ``involved`` (a transition of a custom resource)."""
        meta = involved["metadata"]
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{meta['name']}.{uuid.uuid4().hex[:16]}", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": involved["apiVersion"],
                "kind": involved["kind"],
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta["uid"],
            },
            "type": "Warning" if warning else "Normal",
            "reason": reason,
            "message": message[:1024],
            "source": {"component": self.field_manager},
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
        self._request("POST", f"/api/v1/namespaces/{quote(meta['namespace'])}/events", body=event)

    def delete_owned(self, api_version: str, kind: str, namespace: str, name: str, owner_uid: str) -> bool:
        """Delete a child the spec no longer asks for, only if ``owner_uid`` controls it; whether it did."""
        live = self.get(api_version, kind, namespace, name)
        if live is None or not controlled_by(live, owner_uid):
            return False
        uid = live["metadata"]["uid"]
        options = {"apiVersion": "v1", "kind": "DeleteOptions", "preconditions": {"uid": uid}}
        self._request("DELETE", resource_path(api_version, kind, namespace, name), body=options)
        return True

    def ensure(
        self, desired: Mapping[str, Any], on_write: WriteHook | None = None, *, likely_absent: bool = False
    ) -> dict[str, Any]:
        """The live object after making it hold ``desired``; writes only when something differs.

        ``likely_absent`` (the owner was never reconciled) skips the read and applies at once:
        server-side apply is idempotent, so this only saves a request. Jobs are always read.
        """
        meta = desired["metadata"]
        if likely_absent and desired["kind"] not in _CREATE_ONLY:
            if on_write is not None:
                on_write(desired["kind"])
            return self.apply(desired)
        live = self.get(desired["apiVersion"], desired["kind"], meta["namespace"], meta["name"])
        if live is not None and (desired["kind"] in _CREATE_ONLY or is_subset(desired, live)):
            return live
        if on_write is not None:
            on_write(desired["kind"])
        return self.apply(desired)
