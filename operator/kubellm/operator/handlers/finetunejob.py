"""FineTuneJob handlers: ConfigMap + report objects + Job; status follows the Job and the runtime's report.

A FineTuneJob whose data augmentation uses a ModelDeployment waits (no Job yet) until that
ModelDeployment is Ready. A finished FineTuneJob (Succeeded or Failed) never gets a new Job,
even if its Job is deleted: retraining is a new FineTuneJob.
"""

from __future__ import annotations

import kopf

from kubellm.contract.training import AugmentationServer
from kubellm.operator.api import finetunejob as api
from kubellm.operator.handlers.common import (
    TERMINAL_PHASES,
    Operator,
    Wait,
    ensure_children,
    never_reconciled,
    parse_spec,
    publish_status,
    register_kind,
)
from kubellm.operator.handlers.servers import ServerNotReadyError, resolve_server
from kubellm.operator.manifests import finetunejob as manifests
from kubellm.operator.manifests.common import Owner
from kubellm.operator.manifests.reporting import report_name
from kubellm.operator.status import finetunejob_status, finetunejob_waiting, load_status, now

__all__ = ["augmentation_endpoint", "output_status", "reconcile", "register"]


def output_status(owner: Owner, spec: api.FineTuneJobSpec) -> api.OutputStatus:
    """What the run produces: a model, or an adapter on the base model."""
    adapter = spec.training.method in ("lora", "qlora")
    return api.OutputStatus(
        uri=manifests.output_uri(owner, spec),
        kind="adapter" if adapter else "model",
        base_model=spec.base_model.uri if adapter else None,
    )


def augmentation_endpoint(
    op: Operator, owner: Owner, spec: api.FineTuneJobSpec, *, need_ready: bool
) -> manifests.AugmentationEndpoint | None:
    """The server of ``dataAugmentation.modelDeploymentRef``, if there is one (:class:`ServerNotReadyError` to wait)."""
    augmentation = spec.data_augmentation
    if augmentation is None or augmentation.model_deployment_ref is None:
        return None
    ref = augmentation.model_deployment_ref
    server = resolve_server(op, owner.namespace, ref.name, augmentation.model, need_ready=need_ready)
    return manifests.AugmentationEndpoint(
        AugmentationServer(url=server.url, model=server.model), server.api_key_secret_ref
    )


def _started(op: Operator, owner: Owner, spec: api.FineTuneJobSpec, finished: bool) -> bool:
    """Whether the Job was created (asked only of a job that augments from a ModelDeployment)."""
    augmentation = spec.data_augmentation
    if finished or augmentation is None or augmentation.model_deployment_ref is None:
        return True
    return op.kube.get("batch/v1", "Job", owner.namespace, manifests.job_name(owner)) is not None


def reconcile(op: Operator, body: kopf.Body, patch: kopf.Patch, logger: kopf.Logger) -> Wait | None:
    """One pass: wait for the augmenting ModelDeployment, children in place, status from the Job and the report."""
    owner = Owner.from_body(body)
    spec = parse_spec(api.FineTuneJobSpec, body)
    previous = load_status(api.FineTuneJobStatus, body)
    finished = previous.phase in TERMINAL_PHASES
    try:
        augmentation = augmentation_endpoint(op, owner, spec, need_ready=not _started(op, owner, spec, finished))
    except ServerNotReadyError as waiting:
        generation = body["metadata"].get("generation", 0)
        publish_status(op, api.KIND, body, patch, finetunejob_waiting(previous, generation, str(waiting), now()))
        return Wait(str(waiting), op.settings.wait_seconds)
    children = manifests.build_children(owner, spec, op.settings.image, augmentation)
    live = ensure_children(op, api.KIND, children[:-1] if finished else children, first_pass=never_reconciled(body))
    job = live.get(("Job", manifests.job_name(owner)))
    if finished and job is None:
        job = op.kube.get("batch/v1", "Job", owner.namespace, manifests.job_name(owner))
        if job is None:
            return None  # the Job is gone after the run; status keeps the outcome
    report = live[("ConfigMap", report_name(owner))]
    status = finetunejob_status(
        previous,
        body["metadata"].get("generation", 0),
        job=job,
        report_data=report.get("data"),
        output=output_status(owner, spec),
        at=now(),
    )
    publish_status(op, api.KIND, body, patch, status)
    return None


def register(registry: kopf.OperatorRegistry, op: Operator) -> None:
    """Wire the FineTuneJob handlers."""
    register_kind(registry, op, api.INFO, reconcile)
