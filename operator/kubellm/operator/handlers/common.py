"""What every kind's handlers share: the operator context, spec parsing, status publishing, wiring.

Each kind provides one ``reconcile(op, body, patch, logger)`` pass: parse -> build -> apply ->
status. :func:`register_kind` runs it on create, update and resume (raising
``kopf.TemporaryError`` while it waits on another object); :func:`register_child_watch` runs
it whenever a child changes, which repairs drift (a deleted or hand-edited child comes back)
and makes status follow the children.
Handlers never return values: Kopf would store them in status, where the schema prunes them.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import kopf
from pydantic import BaseModel, ValidationError

from kubellm.operator.api.common import API_VERSION, GROUP, VERSION, KindInfo, StatusBase
from kubellm.operator.k8s import ApiError, KubeClient
from kubellm.operator.manifests.common import MANAGED_BY
from kubellm.operator.metrics import OperatorMetrics
from kubellm.operator.settings import OperatorSettings
from kubellm.operator.status import invalid_spec_status, load_status, now, status_patch

__all__ = [
    "InvalidSpecError",
    "Operator",
    "Reconcile",
    "Wait",
    "ensure_children",
    "never_reconciled",
    "parse_spec",
    "publish_status",
    "register_child_watch",
    "register_kind",
]

M = TypeVar("M", bound=BaseModel)
TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})
CHILD_RESOURCES = (
    ("", "v1", "configmaps"),
    ("", "v1", "services"),
    ("apps", "v1", "deployments"),
    ("batch", "v1", "jobs"),
    ("autoscaling", "v2", "horizontalpodautoscalers"),
    ("", "v1", "pods"),
)
"""Kinds whose changes trigger the owner's reconcile (not the report ServiceAccount and RBAC).

Pods are grandchildren: a ModelDeployment's pods tell why its replicas are not ready."""
WATCHED_KINDS = frozenset({"ConfigMap", "Service", "Deployment", "Job", "HorizontalPodAutoscaler"})
"""Child kinds the watch above sees: only their versions are remembered (a deletion forgets them)."""
POD_OWNER_LABEL = "kubellm.io/modeldeployment"


class OwnerLocks:
    """One lock per custom resource: its change handlers and child events never reconcile it at once.

    A lock lives only while someone holds or waits for it, so deleted resources leave nothing
    behind in a long-running operator.
    """

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, tuple[threading.RLock, int]] = {}

    @contextlib.contextmanager
    def __call__(self, uid: str) -> Iterator[None]:
        with self._guard:
            lock, users = self._locks.get(uid, (threading.RLock(), 0))
            self._locks[uid] = (lock, users + 1)
        try:
            with lock:
                yield
        finally:
            with self._guard:
                lock, users = self._locks[uid]
                if users == 1:
                    del self._locks[uid]
                else:
                    self._locks[uid] = (lock, users - 1)

    def __len__(self) -> int:
        with self._guard:
            return len(self._locks)


class SeenVersions:
    """The resourceVersion of each child as the last reconcile left it (by child uid).

    A child event carrying that same version is the echo of the operator's own pass (or the
    initial listing after a resume) and needs no new reconcile; deletions always do.
    """

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._versions: dict[str, str] = {}

    def record(self, obj: Mapping[str, Any]) -> None:
        meta = obj.get("metadata", {})
        if "uid" in meta and "resourceVersion" in meta:
            with self._guard:
                self._versions[meta["uid"]] = meta["resourceVersion"]

    def known(self, obj: Mapping[str, Any]) -> bool:
        meta = obj.get("metadata", {})
        with self._guard:
            return meta.get("uid") in self._versions and self._versions[meta["uid"]] == meta.get("resourceVersion")

    def forget(self, obj: Mapping[str, Any]) -> None:
        with self._guard:
            self._versions.pop(obj.get("metadata", {}).get("uid", ""), None)

    def __len__(self) -> int:
        with self._guard:
            return len(self._versions)


@dataclass(frozen=True)
class Operator:
    """The operator's context, built once in ``main()`` and handed to every handler."""

    kube: KubeClient
    settings: OperatorSettings
    metrics: OperatorMetrics
    locks: OwnerLocks = field(default_factory=OwnerLocks)
    seen: SeenVersions = field(default_factory=SeenVersions)


@dataclass(frozen=True)
class Wait:
    """A pass that has to wait for another object; retried after ``delay`` seconds."""

    message: str
    delay: float


class InvalidSpecError(Exception):
    """A spec that cannot work; reported in a condition, not retried until the spec changes."""


Reconcile = Callable[[Operator, kopf.Body, kopf.Patch, kopf.Logger], Wait | None]


def parse_spec(model: type[M], body: Mapping[str, Any]) -> M:
    """The typed spec, or :class:`InvalidSpecError` saying what is wrong."""
    try:
        return model.model_validate(dict(body.get("spec") or {}))
    except ValidationError as error:
        raise InvalidSpecError(f"spec is invalid: {error}") from error


def never_reconciled(body: Mapping[str, Any]) -> bool:
    """Whether no pass has written status yet (its children most likely do not exist)."""
    return not (body.get("status") or {}).get("observedGeneration")


def ensure_children(
    op: Operator, kind: str, children: list[dict[str, Any]], *, first_pass: bool = False
) -> dict[tuple[str, str], dict[str, Any]]:
    """Make every child hold its desired state (in order); the live objects by (kind, name).

    On a ``first_pass`` the children are applied without reading them first (half the requests
    when many resources are created at once).
    """
    live = {}

    def count(child_kind: str) -> None:
        op.metrics.count_write(kind, child_kind)

    for child in children:
        obj = op.kube.ensure(child, on_write=count, likely_absent=first_pass)
        if child["kind"] in WATCHED_KINDS:
            op.seen.record(obj)
        live[child["kind"], child["metadata"]["name"]] = obj
    return live


def _summary(status: StatusBase) -> tuple[str, str]:
    first = status.conditions[0] if status.conditions else None
    return (first.reason, first.message) if first else ("Unknown", "")


def publish_status(op: Operator, kind: str, body: kopf.Body, patch: kopf.Patch, status: StatusBase) -> None:
    """Put the fields that changed into Kopf's patch; post an Event when the phase changes."""
    current = {k: v for k, v in (body.get("status") or {}).items()}
    changes = status_patch(current, status)
    if not changes:
        return
    op.metrics.count_write(kind, "status")
    for key, value in changes.items():
        patch.status[key] = value
    new_phase = getattr(status, "phase", None)
    if new_phase is not None and new_phase != current.get("phase"):
        reason, message = _summary(status)
        warning = new_phase in ("Failed", "Degraded")
        op.metrics.count_write(kind, "Event")
        op.kube.post_event(body, warning=warning, reason=reason, message=f"{kind} is {new_phase}: {message}")


def _run(
    op: Operator, info: KindInfo, reconcile: Reconcile, *, body: kopf.Body, patch: kopf.Patch, logger: kopf.Logger
) -> Wait | None:
    with op.locks(body["metadata"]["uid"]), op.metrics.reconciling(info.kind):
        try:
            return reconcile(op, body, patch, logger)
        except (InvalidSpecError, ApiError) as error:
            if isinstance(error, ApiError) and error.status != 422:
                raise
            model = cast(type[StatusBase], info.status)
            generation = body["metadata"].get("generation", 0)
            invalid = invalid_spec_status(model, load_status(model, body), generation, str(error)[:1000], now())
            publish_status(op, info.kind, body, patch, invalid)
            raise kopf.PermanentError(str(error)) from error


def register_kind(registry: kopf.OperatorRegistry, op: Operator, info: KindInfo, reconcile: Reconcile) -> None:
    """Wire one kind: create/update/resume handlers running ``reconcile`` (a wait retries later)."""

    def on_change(body: kopf.Body, patch: kopf.Patch, logger: kopf.Logger, **_: Any) -> None:
        wait = _run(op, info, reconcile, body=body, patch=patch, logger=logger)
        if wait is not None:
            raise kopf.TemporaryError(wait.message, delay=wait.delay)

    backoff = op.settings.error_backoff_seconds
    for cause, decorator in (("create", kopf.on.create), ("update", kopf.on.update), ("resume", kopf.on.resume)):
        decorator(GROUP, VERSION, info.plural, id=cause, backoff=backoff, registry=registry)(on_change)


def _controller(body: Mapping[str, Any]) -> tuple[str, str, str | None] | None:
    """(kind, name, uid) of the custom resource a child belongs to.

    Pods belong to a ReplicaSet or Job, so they are traced through the ``kubellm.io/<kind>``
    label every pod template carries (uid unknown).
    """
    meta = body.get("metadata", {})
    for ref in meta.get("ownerReferences") or []:
        if ref.get("controller") and ref.get("apiVersion") == API_VERSION:
            return ref["kind"], ref["name"], ref["uid"]
    if body.get("kind") == "Pod" and meta.get("labels", {}).get(POD_OWNER_LABEL):
        return "ModelDeployment", meta["labels"][POD_OWNER_LABEL], None
    return None


def register_child_watch(
    registry: kopf.OperatorRegistry, op: Operator, kinds: Mapping[str, tuple[KindInfo, Reconcile]]
) -> None:
    """Reconcile the owner whenever one of its children changes or disappears.

    This repairs drift at once (a deleted or hand-edited child comes back) and makes status
    follow the Jobs, Deployments and report ConfigMaps without polling. No timer, hence no
    finalizer on the custom resources: the garbage collector alone removes the children.
    """

    def on_child_event(type: str | None, body: kopf.Body, logger: kopf.Logger, **_: Any) -> None:
        owner_ref = _controller(body)
        if owner_ref is None or owner_ref[0] not in kinds:
            return
        if type == "DELETED":
            op.seen.forget(body)
        elif op.seen.known(body):
            return  # the echo of this operator's own pass
        kind, name, uid = owner_ref
        info, reconcile = kinds[kind]
        namespace = body["metadata"]["namespace"]
        patch = kopf.Patch()
        raw = op.kube.get(API_VERSION, kind, namespace, name)
        if raw is None or uid not in (None, raw["metadata"]["uid"]):
            return  # the owner is gone: the garbage collector takes the child
        with op.locks(raw["metadata"]["uid"]):  # re-read once no other pass is running on it
            raw = op.kube.get(API_VERSION, kind, namespace, name)
            if raw is None or raw["metadata"].get("deletionTimestamp"):
                return
            with contextlib.suppress(kopf.PermanentError):
                _run(op, info, reconcile, body=kopf.Body(cast(kopf.RawBody, raw)), patch=patch, logger=logger)
            if patch.get("status"):
                op.kube.patch_status(API_VERSION, kind, namespace, name, patch["status"])

    selector = {"app.kubernetes.io/managed-by": MANAGED_BY}
    for group, version, plural in CHILD_RESOURCES:
        kopf.on.event(group, version, plural, id=f"child-{plural}", labels=selector, registry=registry)(on_child_event)
