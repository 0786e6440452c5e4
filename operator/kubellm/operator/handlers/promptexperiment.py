"""PromptExperiment handlers: wait for the dataset, the target and the judges, then a ``kubellm experiment`` Job.

The results come back through the report ConfigMap (``result.json``, ``report.md``; see
:mod:`kubellm.operator.manifests.reporting`) and are copied into status. A finished experiment
never gets a new Job.
"""

from __future__ import annotations

import kopf

from kubellm.operator.api import promptexperiment as api
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
from kubellm.operator.manifests import promptexperiment as manifests
from kubellm.operator.manifests.common import Owner
from kubellm.operator.manifests.reporting import report_name
from kubellm.operator.status import load_status, now, promptexperiment_status, promptexperiment_waiting

__all__ = ["DatasetNotFoundError", "check_dataset", "reconcile", "register", "resolve_judges", "resolve_target"]


class DatasetNotFoundError(Exception):
    """The ConfigMap, or the key, that ``spec.dataset.configMapKeyRef`` names does not exist (yet)."""


def check_dataset(op: Operator, owner: Owner, spec: api.PromptExperimentSpec) -> None:
    """Raise :class:`DatasetNotFoundError` in one line when the dataset's ConfigMap or key is missing."""
    ref = spec.dataset.config_map_key_ref
    if ref is None:
        return
    found = op.kube.get("v1", "ConfigMap", owner.namespace, ref.name)
    if found is None:
        raise DatasetNotFoundError(f"ConfigMap {ref.name} (spec.dataset.configMapKeyRef) does not exist")
    keys = sorted({**(found.get("data") or {}), **(found.get("binaryData") or {})})
    if ref.key not in keys:
        listed = ", ".join(keys) or "none"
        raise DatasetNotFoundError(
            f"ConfigMap {ref.name} has no key {ref.key!r} (spec.dataset.configMapKeyRef; keys: {listed})"
        )


def resolve_target(op: Operator, owner: Owner, spec: api.PromptExperimentSpec, *, need_ready: bool) -> tuple[str, str]:
    """(endpoint base URL, model name) the experiment sends requests to."""
    ref = spec.target.model_deployment_ref
    if ref is None:
        assert spec.target.url is not None  # the spec validator guarantees one target
        return spec.target.url, spec.target.model or "default"
    server = resolve_server(op, owner.namespace, ref.name, spec.target.model, need_ready=need_ready)
    return server.url, server.model


def resolve_judges(
    op: Operator, owner: Owner, spec: api.PromptExperimentSpec, *, need_ready: bool
) -> dict[str, manifests.JudgeEndpoint]:
    """The server of every judge scorer's ``modelDeploymentRef`` (:class:`ServerNotReadyError` to wait)."""
    judges = {}
    for scorer in spec.scorers:
        judge = scorer.judge
        if judge is None or judge.model_deployment_ref is None:
            continue
        name = judge.model_deployment_ref.name
        try:
            server = resolve_server(op, owner.namespace, name, judge.model, need_ready=need_ready)
        except ServerNotReadyError as waiting:
            raise ServerNotReadyError(f"judge of scorer {scorer.name}: {waiting}") from waiting
        key = judge.api_key_secret_ref or server.api_key_secret_ref
        judges[scorer.name] = manifests.JudgeEndpoint(url=server.url, model=server.model, api_key_secret_ref=key)
    return judges


def reconcile(op: Operator, body: kopf.Body, patch: kopf.Patch, logger: kopf.Logger) -> Wait | None:
    """One pass: gate the Job on the target, children in place, status from the Job and the report."""
    owner = Owner.from_body(body)
    spec = parse_spec(api.PromptExperimentSpec, body)
    previous = load_status(api.PromptExperimentStatus, body)
    generation = body["metadata"].get("generation", 0)
    job = op.kube.get("batch/v1", "Job", owner.namespace, manifests.job_name(owner))
    finished = previous.phase in TERMINAL_PHASES
    if finished and job is None:
        return None  # the Job is gone after the run; status keeps the results
    try:
        if job is None:
            check_dataset(op, owner, spec)
    except DatasetNotFoundError as missing:
        waiting = promptexperiment_waiting(previous, generation, str(missing), now(), api.REASON_DATASET_NOT_FOUND)
        publish_status(op, api.KIND, body, patch, waiting)
        return Wait(str(missing), op.settings.wait_seconds)
    try:
        endpoint, model = resolve_target(op, owner, spec, need_ready=job is None)
        judges = resolve_judges(op, owner, spec, need_ready=job is None)
    except ServerNotReadyError as waiting:
        publish_status(op, api.KIND, body, patch, promptexperiment_waiting(previous, generation, str(waiting), now()))
        return Wait(str(waiting), op.settings.wait_seconds)
    children = manifests.build_children(owner, spec, endpoint, model, op.settings.image, judges=judges)
    live = ensure_children(op, api.KIND, children, first_pass=never_reconciled(body))
    report = live[("ConfigMap", report_name(owner))]
    job = live[("Job", manifests.job_name(owner))]
    status = promptexperiment_status(
        previous, generation, job=job, report_data=report.get("data"), report_name=report_name(owner), at=now()
    )
    publish_status(op, api.KIND, body, patch, status)
    return None


def register(registry: kopf.OperatorRegistry, op: Operator) -> None:
    """Wire the PromptExperiment handlers."""
    register_kind(registry, op, api.INFO, reconcile)
