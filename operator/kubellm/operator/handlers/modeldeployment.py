"""ModelDeployment handlers: wait for referenced FineTuneJobs, then ConfigMap + Deployment + Service + HPA.

Status comes from the Deployment; when it is not ready, the pods are inspected for a reason
(unschedulable, image pull, crash loop) so ``Degraded`` says what is wrong. With more than one
replica possible, the claims the server mounts are read too: one that a single node can mount
(ReadWriteOnce) is a ``Degraded`` warning, since replicas elsewhere could not start.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kopf

from kubellm.operator.api import finetunejob as ftj_api
from kubellm.operator.api import modeldeployment as api
from kubellm.operator.handlers.common import (
    InvalidSpecError,
    Operator,
    Wait,
    ensure_children,
    never_reconciled,
    parse_spec,
    publish_status,
    register_kind,
)
from kubellm.operator.k8s import ApiError
from kubellm.operator.manifests import modeldeployment as manifests
from kubellm.operator.manifests.common import Owner
from kubellm.operator.status import (
    DeploymentView,
    load_status,
    modeldeployment_status,
    modeldeployment_waiting,
    now,
    shared_claim_warning,
)

__all__ = [
    "autoscaling_plan",
    "claim_warning",
    "pod_problem",
    "prune_optional",
    "reconcile",
    "register",
    "resolve_model",
]

SERVICE_MONITOR_MISSING = (
    "monitoring.serviceMonitor needs the Prometheus Operator's ServiceMonitor CRD, which this cluster lacks; "
    "install it or set serviceMonitor: false"
)
KEDA_API = "/apis/keda.sh/v1alpha1"
CUSTOM_METRICS_APIS = ("/apis/custom.metrics.k8s.io/v1beta2", "/apis/custom.metrics.k8s.io/v1beta1")
POD_WAITING_PROBLEMS = frozenset(
    {"ImagePullBackOff", "ErrImagePull", "CrashLoopBackOff", "CreateContainerConfigError", "InvalidImageName"}
)


class NotResolvedError(Exception):
    """A referenced FineTuneJob has no output yet (``failed`` when it never will)."""

    def __init__(self, message: str, *, failed: bool) -> None:
        super().__init__(message)
        self.failed = failed


def _job_output(op: Operator, namespace: str, name: str) -> ftj_api.OutputStatus:
    job = op.kube.get("kubellm.io/v1alpha1", ftj_api.KIND, namespace, name)
    if job is None:
        raise NotResolvedError(f"FineTuneJob {name} does not exist yet", failed=False)
    status = ftj_api.FineTuneJobStatus.model_validate(job.get("status") or {})
    if status.phase == "Failed":
        raise NotResolvedError(f"FineTuneJob {name} failed; fix or replace it", failed=True)
    if status.phase != "Succeeded" or status.output is None:
        raise NotResolvedError(
            f"waiting for FineTuneJob {name} to succeed (now {status.phase or 'Pending'})", failed=False
        )
    return status.output


def resolve_model(op: Operator, owner: Owner, spec: api.ModelDeploymentSpec) -> manifests.ServedModel:
    """The model and adapters to serve, with every fineTuneJobRef replaced by its output."""
    adapters = tuple(
        (a.name, a.uri if a.uri else _job_output(op, owner.namespace, a.fine_tune_job_ref.name).uri)  # type: ignore[union-attr]
        for a in spec.adapters
    )
    if spec.fine_tune_job_ref is None:
        assert spec.model is not None  # the spec validator guarantees one source
        return manifests.ServedModel(uri=spec.model.uri, adapters=adapters)
    output = _job_output(op, owner.namespace, spec.fine_tune_job_ref.name)
    return manifests.ServedModel(uri=output.uri, kind=output.kind, base_uri=output.base_model, adapters=adapters)


def _container_problem(pod: Mapping[str, Any]) -> tuple[str, str] | None:
    for container in pod.get("status", {}).get("containerStatuses", []):
        waiting = container.get("state", {}).get("waiting") or {}
        if waiting.get("reason") in POD_WAITING_PROBLEMS:
            return waiting["reason"], f"pod {pod['metadata']['name']}: {waiting.get('message') or waiting['reason']}"
    for condition in pod.get("status", {}).get("conditions", []):
        if condition.get("type") == "PodScheduled" and condition.get("reason") == "Unschedulable":
            return "Unschedulable", f"pod {pod['metadata']['name']}: {condition.get('message', '')}"
    return None


def pod_problem(op: Operator, owner: Owner, deployment: Mapping[str, Any]) -> tuple[str, str] | None:
    """Why the replicas are not ready, if the Deployment or its pods say so."""
    for condition in deployment.get("status", {}).get("conditions", []):
        if condition.get("reason") == "ProgressDeadlineExceeded":
            return "ProgressDeadlineExceeded", condition.get("message", "the rollout is stuck")
    for pod in op.kube.list("v1", "Pod", owner.namespace, manifests.selector(owner)):
        problem = _container_problem(pod)
        if problem is not None:
            return problem
    return None


def claim_warning(
    op: Operator, owner: Owner, spec: api.ModelDeploymentSpec, model: manifests.ServedModel
) -> tuple[str, str] | None:
    """Degraded's warning when several replicas may mount a single-node claim (claims read only then)."""
    most = spec.most_replicas()
    if most <= 1:
        return None
    claims = {name: _claim(op, owner.namespace, name) for name in manifests.server_claims(model)}
    return shared_claim_warning(most, claims)


def _claim(op: Operator, namespace: str, name: str) -> dict[str, Any] | None:
    """The claim, or None when it is missing or may not be read: an advisory read never blocks serving."""
    try:
        return op.kube.get("v1", "PersistentVolumeClaim", namespace, name)
    except ApiError as error:
        if error.status != 403:
            raise
        return None


def _served(op: Operator, path: str, resource: str | None = None) -> bool:
    """Whether the API server serves an API group version (and a resource in it): discovery, open to all."""
    try:
        found = op.kube.read(path)
    except ApiError:
        return False
    return found is not None and (resource is None or any(r.get("name") == resource for r in found["resources"]))


def autoscaling_plan(op: Operator, spec: api.ModelDeploymentSpec) -> tuple[bool, tuple[str, str] | None]:
    """Whether to scale with a KEDA ScaledObject, and Degraded's warning when nothing serves the metric.

    cpu comes from the kubelet. queueSize and activeRequests come from the server's Prometheus
    metrics: KEDA queries them itself (given prometheusAddress); an HPA needs an adapter serving
    the custom metrics API (prometheus-adapter, or KEDA's own).
    """
    scaling = spec.autoscaling
    if scaling is None or scaling.metric == "cpu":
        return False, None
    keda = _served(op, KEDA_API, "scaledobjects")
    if keda and scaling.prometheus_address is not None:
        return True, None
    if any(_served(op, path) for path in CUSTOM_METRICS_APIS):
        return False, None  # an adapter may serve the metric to the HPA
    metric = manifests.HPA_METRICS[scaling.metric][0]
    fix = (
        "KEDA is installed: set autoscaling.prometheusAddress to scale with it"
        if keda
        else "install KEDA and set autoscaling.prometheusAddress, or a custom metrics adapter "
        "(e.g. prometheus-adapter) serving it"
    )
    message = f"nothing serves autoscaling.metric {scaling.metric} ({metric}), so the replicas stay as they are: {fix}"
    return False, (api.REASON_AUTOSCALING_METRIC_UNAVAILABLE, message)


def _view(owner: Owner, spec: api.ModelDeploymentSpec, model: manifests.ServedModel) -> DeploymentView:
    return DeploymentView(
        model=model.uri,
        served_models=manifests.served_model_names(owner, spec, model),
        url=manifests.server_url(owner, spec),
        selector=manifests.selector(owner),
        deployment_name=owner.child_name(),
        service_name=owner.child_name(),
        desired_replicas=spec.replicas,
    )


def prune_optional(op: Operator, owner: Owner, wanted_kinds: set[str]) -> None:
    """Delete the HPA, Ingress or ServiceMonitor once the spec no longer asks for it."""
    for api_version, kind in manifests.OPTIONAL_CHILDREN:
        if kind not in wanted_kinds and op.kube.delete_owned(
            api_version, kind, owner.namespace, owner.child_name(), owner.uid
        ):
            op.metrics.count_write(api.KIND, kind)


def _ensure_server(
    op: Operator,
    owner: Owner,
    spec: api.ModelDeploymentSpec,
    model: manifests.ServedModel,
    *,
    first_pass: bool,
    keda: bool = False,
) -> dict[str, Any]:
    """Children in place (optional ones the spec dropped deleted); the live Deployment."""
    children = manifests.build_children(owner, spec, model, op.settings.image, keda=keda)
    try:
        live = ensure_children(op, api.KIND, children, first_pass=first_pass)
    except ApiError as error:
        if error.status == 404 and spec.monitoring.service_monitor:
            raise InvalidSpecError(SERVICE_MONITOR_MISSING) from error
        raise
    if not first_pass:
        prune_optional(op, owner, {child["kind"] for child in children})
    return live[("Deployment", owner.child_name())]


def reconcile(op: Operator, body: kopf.Body, patch: kopf.Patch, logger: kopf.Logger) -> Wait | None:
    """One pass: wait for the model, then children in place and status from the Deployment."""
    owner = Owner.from_body(body)
    spec = parse_spec(api.ModelDeploymentSpec, body)
    previous = load_status(api.ModelDeploymentStatus, body)
    generation = body["metadata"].get("generation", 0)
    try:
        model = resolve_model(op, owner, spec)
    except NotResolvedError as waiting:
        reason = api.REASON_FINE_TUNE_JOB_FAILED if waiting.failed else api.REASON_WAITING_FOR_FINE_TUNE_JOB
        publish_status(
            op, api.KIND, body, patch, modeldeployment_waiting(previous, generation, reason, str(waiting), now())
        )
        return None if waiting.failed else Wait(str(waiting), op.settings.wait_seconds)
    keda, scaling_warning = autoscaling_plan(op, spec)
    deployment = _ensure_server(op, owner, spec, model, first_pass=never_reconciled(body), keda=keda)
    ready = (deployment.get("status", {}).get("readyReplicas") or 0) >= spec.replicas
    problem = None if ready else pod_problem(op, owner, deployment)
    status = modeldeployment_status(
        previous,
        generation,
        deployment=deployment,
        view=_view(owner, spec, model),
        problem=problem,
        warnings=[w for w in (scaling_warning, claim_warning(op, owner, spec, model)) if w is not None],
        at=now(),
    )
    publish_status(op, api.KIND, body, patch, status)
    return None


def register(registry: kopf.OperatorRegistry, op: Operator) -> None:
    """Wire the ModelDeployment handlers."""
    register_kind(registry, op, api.INFO, reconcile)
