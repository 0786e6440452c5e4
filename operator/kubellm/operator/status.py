"""Status: conditions, observedGeneration and phase summaries, computed from what the children show.

Pure functions: the handlers pass in the children they read, get a typed status back and
write only the fields that differ (:func:`status_patch`), so an unchanged object is never
written. A condition keeps its ``lastTransitionTime`` while its status stays the same.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import ValidationError

from kubellm.contract.experiments import PowerReport
from kubellm.operator.api import finetunejob as ftj
from kubellm.operator.api import modeldeployment as mdep
from kubellm.operator.api import promptexperiment as pexp
from kubellm.operator.api.common import (
    CONDITION_DEGRADED,
    CONDITION_FAILED,
    CONDITION_PROGRESSING,
    CONDITION_READY,
    CONDITION_SUCCEEDED,
    REASON_INVALID_SPEC,
    Condition,
    ConditionStatus,
    StatusBase,
)

__all__ = [
    "ConditionSpec",
    "DeploymentView",
    "finetunejob_status",
    "finetunejob_waiting",
    "invalid_spec_status",
    "job_outcome",
    "load_status",
    "modeldeployment_status",
    "modeldeployment_waiting",
    "now",
    "promptexperiment_status",
    "promptexperiment_waiting",
    "set_conditions",
    "shared_claim_warning",
    "status_patch",
]

S = TypeVar("S", bound=StatusBase)


@dataclass(frozen=True)
class ConditionSpec:
    """A condition as a pass decides it (the transition time is filled in by :func:`set_conditions`)."""

    type: str
    status: ConditionStatus
    reason: str
    message: str


def now() -> datetime:
    """The current time, to the second (as the API server keeps it)."""
    return datetime.now(UTC).replace(microsecond=0)


def load_status(model: type[S], body: Mapping[str, Any]) -> S:
    """The status a resource carries, or an empty one if it is missing or unreadable."""
    try:
        return model.model_validate(dict(body.get("status") or {}))
    except ValidationError:
        return model()


def set_conditions(
    previous: StatusBase, generation: int, wanted: Sequence[ConditionSpec], at: datetime
) -> list[Condition]:
    """The new conditions, keeping each transition time while the status is unchanged."""
    result = []
    for spec in wanted:
        old = previous.condition(spec.type)
        changed = old is None or old.status != spec.status
        result.append(
            Condition(
                type=spec.type,
                status=spec.status,
                reason=spec.reason,
                message=spec.message,
                observed_generation=generation,
                last_transition_time=at if changed or old is None else old.last_transition_time,
            )
        )
    return result


def status_patch(current: Mapping[str, Any], desired: StatusBase) -> dict[str, Any]:
    """The merge patch turning ``current`` status into ``desired`` (empty when nothing differs)."""
    wanted = {k: v for k, v in desired.dump().items() if k != "kopf"}
    patch = {key: value for key, value in wanted.items() if current.get(key) != value}
    patch.update({key: None for key in current if key not in wanted and key != "kopf"})
    return patch


CONDITION_FALSE_FOR: dict[str, ConditionStatus] = {CONDITION_FAILED: "True", CONDITION_READY: "False"}


def invalid_spec_status(model: type[S], previous: S, generation: int, message: str, at: datetime) -> S:
    """Status of a spec that cannot work: the summary condition false with reason InvalidSpec."""
    summary = CONDITION_FAILED if model is ftj.FineTuneJobStatus else CONDITION_READY
    status = CONDITION_FALSE_FOR[summary]
    conditions = set_conditions(
        previous, generation, [ConditionSpec(summary, status, REASON_INVALID_SPEC, message)], at
    )
    return model(observed_generation=generation, conditions=conditions).model_copy(update={"phase": "Failed"})


def _report(data: Mapping[str, str] | None, key: str) -> dict[str, Any]:
    """A JSON document the runtime wrote into its report ConfigMap ({} if absent or broken)."""
    try:
        document = json.loads((data or {}).get(key) or "{}")
    except json.JSONDecodeError:
        return {}
    return document if isinstance(document, dict) else {}


def job_outcome(job: Mapping[str, Any] | None) -> tuple[str, str, str]:
    """(``Pending``/``Running``/``Succeeded``/``Failed``, reason, message) of a Job."""
    if job is None:
        return "Pending", "JobCreated", "creating the Job"
    for condition in job.get("status", {}).get("conditions", []):
        if condition.get("status") != "True":
            continue
        if condition.get("type") == "Complete":
            return "Succeeded", "Complete", "the Job completed"
        if condition.get("type") == "Failed":
            return "Failed", condition.get("reason") or "JobFailed", condition.get("message") or "the Job failed"
    return "Running", "Running", "the Job is running"


JOB_REASON_POD_FAILURE_POLICY = "PodFailurePolicy"
"""The reason of a Job failed by its ``podFailurePolicy`` (an exit code meaning "the input is wrong")."""


# --- FineTuneJob -------------------------------------------------------------------------------

_FTJ_FAILURE_REASONS = {
    "BackoffLimitExceeded": ftj.REASON_BACKOFF_LIMIT_EXCEEDED,
    "DeadlineExceeded": ftj.REASON_DEADLINE_EXCEEDED,
}


def _ftj_conditions(phase: str, reason: str, message: str) -> list[ConditionSpec]:
    succeeded: ConditionStatus = "True" if phase == "Succeeded" else "False" if phase == "Failed" else "Unknown"
    return [
        ConditionSpec(CONDITION_SUCCEEDED, succeeded, reason, message),
        ConditionSpec(CONDITION_FAILED, "True" if phase == "Failed" else "False", reason, message),
        ConditionSpec(CONDITION_PROGRESSING, "True" if phase in ("Pending", "Running") else "False", reason, message),
    ]


def _runtime_failure(document: Mapping[str, Any]) -> str:
    """``<reason>: <message>`` of a run the runtime reported as failed, or ""."""
    if document.get("phase") != "Failed":
        return ""
    return ": ".join(str(part) for part in (document.get("reason"), document.get("message")) if part)


def _ftj_phase(
    job: Mapping[str, Any] | None, report: ftj.FineTuneJobStatus, runtime_failure: str = ""
) -> tuple[str, str, str]:
    phase, reason, message = job_outcome(job)
    if phase == "Pending":
        return phase, ftj.REASON_JOB_CREATED, message
    if phase == "Running":
        searching = report.search is not None and report.progress is None
        return phase, ftj.REASON_SEARCHING if searching else ftj.REASON_TRAINING, "training is running"
    if phase == "Succeeded":
        return phase, ftj.REASON_COMPLETED, "training finished; the result is in status.output"
    if report.data_quality is not None and not report.data_quality.passed:
        return phase, ftj.REASON_DATA_QUALITY_FAILED, report.data_quality.message or "the data quality checks failed"
    if reason == JOB_REASON_POD_FAILURE_POLICY:
        detail = runtime_failure or message
        return phase, ftj.REASON_INVALID_INPUT, f"the input cannot work, so the run was not retried: {detail}"
    return phase, _FTJ_FAILURE_REASONS.get(reason, reason), message


def finetunejob_waiting(
    previous: ftj.FineTuneJobStatus, generation: int, message: str, at: datetime
) -> ftj.FineTuneJobStatus:
    """Status while the ModelDeployment that augments the data is not Ready (no Job yet)."""
    wanted = _ftj_conditions("Pending", ftj.REASON_WAITING_FOR_MODEL_DEPLOYMENT, message)
    return previous.model_copy(
        update={
            "observed_generation": generation,
            "conditions": set_conditions(previous, generation, wanted, at),
            "phase": "Pending",
        }
    )


def finetunejob_status(
    previous: ftj.FineTuneJobStatus,
    generation: int,
    *,
    job: Mapping[str, Any] | None,
    report_data: Mapping[str, str] | None,
    output: ftj.OutputStatus,
    at: datetime,
) -> ftj.FineTuneJobStatus:
    """FineTuneJob status from its Job and the runtime's ``status.json``."""
    document = _report(report_data, "status.json")
    report = ftj.FineTuneJobStatus.model_validate(document)
    phase, reason, message = _ftj_phase(job, report, _runtime_failure(document))
    job_status = (job or {}).get("status", {})
    counts = [job_status.get(key) or 0 for key in ("active", "failed", "succeeded")]
    return ftj.FineTuneJobStatus(
        observed_generation=generation,
        conditions=set_conditions(previous, generation, _ftj_conditions(phase, reason, message), at),
        phase=phase,  # type: ignore[arg-type]
        job_name=(job or {}).get("metadata", {}).get("name"),
        start_time=job_status.get("startTime"),
        completion_time=job_status.get("completionTime"),
        attempts=sum(counts) if job is not None else None,
        progress=report.progress,
        data_quality=report.data_quality,
        search=report.search,
        evaluation=report.evaluation,
        output=output if phase == "Succeeded" else None,
    )


# --- ModelDeployment ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DeploymentView:
    """What a ModelDeployment's status needs besides its Deployment."""

    model: str | None
    served_models: list[str]
    url: str
    selector: str
    deployment_name: str
    service_name: str
    desired_replicas: int


def modeldeployment_waiting(
    previous: mdep.ModelDeploymentStatus, generation: int, reason: str, message: str, at: datetime
) -> mdep.ModelDeploymentStatus:
    """Status while a FineTuneJob the deployment serves has not succeeded (or has failed)."""
    failed = reason == mdep.REASON_FINE_TUNE_JOB_FAILED
    wanted = [
        ConditionSpec(CONDITION_READY, "False", reason, message),
        ConditionSpec(CONDITION_PROGRESSING, "False" if failed else "True", reason, message),
        ConditionSpec(CONDITION_DEGRADED, "True" if failed else "False", reason, message),
    ]
    return previous.model_copy(
        update={
            "observed_generation": generation,
            "conditions": set_conditions(previous, generation, wanted, at),
            "phase": "Failed" if failed else "WaitingForModel",
        }
    )


MULTI_NODE_ACCESS_MODES = frozenset({"ReadWriteMany", "ReadOnlyMany"})


def _access_modes(claim: Mapping[str, Any]) -> list[str]:
    """What the bound volume offers (status), else what the claim asks for (spec)."""
    modes = (claim.get("status") or {}).get("accessModes") or (claim.get("spec") or {}).get("accessModes")
    return list(modes or [])


def shared_claim_warning(most_replicas: int, claims: Mapping[str, Mapping[str, Any] | None]) -> tuple[str, str] | None:
    """Degraded's (reason, message) when several replicas may mount a claim only one node can mount (pure).

    ``claims``: each claim the server mounts, as read (None: not found, nothing to say yet).
    ReadWriteOnce lets the pods of one node share a volume; a replica scheduled elsewhere hangs in
    ContainerCreating (a Multi-Attach error), and ReadWriteOncePod admits a single pod only.
    """
    if most_replicas <= 1:
        return None
    single = [
        f"{name} ({', '.join(modes)})"
        for name, claim in sorted(claims.items())
        if claim is not None and (modes := _access_modes(claim)) and not MULTI_NODE_ACCESS_MODES & set(modes)
    ]
    if not single:
        return None
    message = (
        f"up to {most_replicas} replicas mount claim {', '.join(single)}, which only one node can mount at a "
        "time: replicas on other nodes cannot start. Serve from a ReadWriteMany or ReadOnlyMany claim, or run "
        "one replica"
    )
    return mdep.REASON_READ_WRITE_ONCE_CLAIM_SHARED, message


def _mdep_conditions(
    deployment: Mapping[str, Any],
    view: DeploymentView,
    problem: tuple[str, str] | None,
    warnings: Sequence[tuple[str, str]] = (),
) -> tuple[str, list[ConditionSpec]]:
    status = deployment.get("status", {})
    ready = status.get("readyReplicas") or 0
    updated = status.get("updatedReplicas") or 0
    current = status.get("observedGeneration") == deployment["metadata"].get("generation")
    if view.desired_replicas == 0:
        done, reason, message = True, mdep.REASON_SCALED_TO_ZERO, "scaled to zero replicas"
    else:
        done = current and ready >= view.desired_replicas and updated >= view.desired_replicas
        reason = mdep.REASON_AVAILABLE if done else mdep.REASON_DEPLOYING
        message = f"{ready}/{view.desired_replicas} replicas ready"
    degraded_reason, degraded_message = problem or ("AsExpected", "no problem seen")
    phase = "Ready" if done else "Degraded" if problem else "Deploying"
    # A pod problem degrades while replicas are missing; warnings about the spec whatever they do.
    warned = (warnings[0][0], "; ".join(message for _, message in warnings)) if warnings else None
    degraded = problem if problem and not done else warned
    return phase, [
        ConditionSpec(
            CONDITION_READY, "True" if done else "False", reason if not problem or done else degraded_reason, message
        ),
        ConditionSpec(CONDITION_PROGRESSING, "False" if done else "True", reason, message),
        ConditionSpec(
            CONDITION_DEGRADED, "True" if degraded else "False", *(degraded or (degraded_reason, degraded_message))
        ),
    ]


def modeldeployment_status(
    previous: mdep.ModelDeploymentStatus,
    generation: int,
    *,
    deployment: Mapping[str, Any],
    view: DeploymentView,
    problem: tuple[str, str] | None,
    at: datetime,
    warnings: Sequence[tuple[str, str]] = (),
) -> mdep.ModelDeploymentStatus:
    """ModelDeployment status from its Deployment (and a pod problem found, or warnings about the spec)."""
    phase, wanted = _mdep_conditions(deployment, view, problem, warnings)
    status = deployment.get("status", {})
    return mdep.ModelDeploymentStatus(
        observed_generation=generation,
        conditions=set_conditions(previous, generation, wanted, at),
        phase=phase,  # type: ignore[arg-type]
        replicas=status.get("replicas") or 0,
        ready_replicas=status.get("readyReplicas") or 0,
        selector=view.selector,
        model=view.model,
        served_models=view.served_models,
        url=view.url,
        deployment_name=view.deployment_name,
        service_name=view.service_name,
    )


# --- PromptExperiment --------------------------------------------------------------------------


def _pexp_conditions(
    ready: ConditionStatus, reason: str, message: str, running: bool, degraded: bool
) -> list[ConditionSpec]:
    return [
        ConditionSpec(CONDITION_READY, ready, reason, message),
        ConditionSpec(CONDITION_PROGRESSING, "True" if running else "False", reason, message),
        ConditionSpec(CONDITION_DEGRADED, "True" if degraded else "False", reason, message),
    ]


def _power_condition(power: PowerReport | None) -> ConditionSpec | None:
    """Degraded when the run had fewer rows than spec.minDetectableEffect needs."""
    if power is None or not power.underpowered:
        return None
    message = (
        f"{power.rows} rows, {power.rows_needed} needed to detect a difference of {power.min_detectable_effect} "
        f"with {float(power.power):.0%} power: a missing winner proves little; add rows or accept a larger effect"
    )
    return ConditionSpec(CONDITION_DEGRADED, "True", pexp.REASON_UNDERPOWERED, message)


def promptexperiment_waiting(
    previous: pexp.PromptExperimentStatus,
    generation: int,
    message: str,
    at: datetime,
    reason: str = pexp.REASON_WAITING_FOR_TARGET,
) -> pexp.PromptExperimentStatus:
    """Status before the Job: the target ModelDeployment is not Ready, or the dataset's ConfigMap is missing."""
    wanted = _pexp_conditions("False", reason, message, running=True, degraded=False)
    waiting_for_target = reason == pexp.REASON_WAITING_FOR_TARGET
    return previous.model_copy(
        update={
            "observed_generation": generation,
            "conditions": set_conditions(previous, generation, wanted, at),
            "phase": "WaitingForTarget" if waiting_for_target else "Pending",
        }
    )


def _pexp_outcome(
    job: Mapping[str, Any] | None, result: pexp.PromptExperimentStatus | None, report_name: str
) -> tuple[str, list[ConditionSpec]]:
    if result is not None:
        reason = pexp.REASON_WINNER_DECLARED if result.winner else pexp.REASON_NO_SIGNIFICANT_DIFFERENCE
        conditions = _pexp_conditions("True", reason, result.summary or "results are final", False, False)
        return "Succeeded", [*conditions[:2], _power_condition(result.power) or conditions[2]]
    phase, job_reason, message = job_outcome(job)
    if phase == "Succeeded":
        message = f"the run finished without writing result.json to ConfigMap {report_name}"
        phase = "Failed"
    if phase == "Failed" and job_reason == JOB_REASON_POD_FAILURE_POLICY:
        message = f"the experiment's input cannot work, so the run was not retried: {message}"
        return "Failed", _pexp_conditions("False", pexp.REASON_INVALID_INPUT, message, False, True)
    if phase == "Failed":
        return "Failed", _pexp_conditions("False", pexp.REASON_RUN_FAILED, f"{job_reason}: {message}", False, True)
    return "Running", _pexp_conditions("False", pexp.REASON_RUNNING, "the experiment is running", True, False)


def promptexperiment_status(
    previous: pexp.PromptExperimentStatus,
    generation: int,
    *,
    job: Mapping[str, Any] | None,
    report_data: Mapping[str, str] | None,
    report_name: str,
    at: datetime,
) -> pexp.PromptExperimentStatus:
    """PromptExperiment status from its Job and the runtime's ``status.json`` / ``result.json``."""
    result_doc = _report(report_data, "result.json")
    result = pexp.PromptExperimentStatus.model_validate(result_doc) if result_doc else None
    running = pexp.PromptExperimentStatus.model_validate(_report(report_data, "status.json"))
    phase, wanted = _pexp_outcome(job, result, report_name)
    job_status = (job or {}).get("status", {})
    final = result or pexp.PromptExperimentStatus()
    return pexp.PromptExperimentStatus(
        observed_generation=generation,
        conditions=set_conditions(previous, generation, wanted, at),
        phase=phase,  # type: ignore[arg-type]
        job_name=(job or {}).get("metadata", {}).get("name"),
        start_time=job_status.get("startTime"),
        completion_time=job_status.get("completionTime"),
        progress=final.progress or running.progress,
        results=final.results,
        comparisons=final.comparisons,
        winner=final.winner,
        summary=final.summary,
        power=final.power,
        sequential=final.sequential,
        optimization=final.optimization or running.optimization,
        report_config_map=report_name,
    )
