"""Status from children: phases, conditions with stable transition times, minimal patches."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from kubellm.operator.api import finetunejob as ftj
from kubellm.operator.api import modeldeployment as mdep
from kubellm.operator.api import promptexperiment as pexp
from kubellm.operator.status import (
    ConditionSpec,
    DeploymentView,
    finetunejob_status,
    job_outcome,
    load_status,
    modeldeployment_status,
    modeldeployment_waiting,
    promptexperiment_status,
    promptexperiment_waiting,
    set_conditions,
    status_patch,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)
OUTPUT = ftj.OutputStatus(uri="pvc://models/x", kind="adapter", base_model="dummy://llama")


def _job(condition: str | None = None, reason: str | None = None, **status: Any) -> dict[str, Any]:
    conditions = [{"type": condition, "status": "True", "reason": reason}] if condition else []
    return {"metadata": {"name": "x"}, "status": {"conditions": conditions, **status}}


def _types(status: Any) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.reason) for c in status.conditions}


def test_job_outcome() -> None:
    assert job_outcome(None)[0] == "Pending"
    assert job_outcome(_job(active=1))[0] == "Running"
    assert job_outcome(_job("Complete"))[0] == "Succeeded"
    assert job_outcome(_job("Failed", "BackoffLimitExceeded"))[:2] == ("Failed", "BackoffLimitExceeded")


def test_transition_time_kept_while_status_unchanged() -> None:
    first = ftj.FineTuneJobStatus(
        conditions=set_conditions(
            ftj.FineTuneJobStatus(), 1, [ConditionSpec("Succeeded", "Unknown", "Training", "m")], T0
        )
    )
    again = set_conditions(first, 2, [ConditionSpec("Succeeded", "Unknown", "Training", "other")], T1)
    assert again[0].last_transition_time == T0
    assert again[0].observed_generation == 2
    flipped = set_conditions(first, 2, [ConditionSpec("Succeeded", "True", "TrainingComplete", "done")], T1)
    assert flipped[0].last_transition_time == T1


def test_finetunejob_running_with_reported_progress() -> None:
    report = {"status.json": json.dumps({"progress": {"percent": 40, "step": 8, "totalSteps": 20, "loss": 1.5}})}
    status = finetunejob_status(
        ftj.FineTuneJobStatus(), 1, job=_job(active=1), report_data=report, output=OUTPUT, at=T0
    )
    assert status.phase == "Running"
    assert status.progress is not None and status.progress.percent == 40
    assert _types(status)["Succeeded"] == ("Unknown", ftj.REASON_TRAINING)
    assert _types(status)["Progressing"] == ("True", ftj.REASON_TRAINING)
    assert status.output is None
    assert status.attempts == 1


def test_finetunejob_succeeded_and_failed() -> None:
    done = finetunejob_status(
        ftj.FineTuneJobStatus(), 1, job=_job("Complete", succeeded=1), report_data=None, output=OUTPUT, at=T0
    )
    assert done.phase == "Succeeded"
    assert done.output == OUTPUT
    assert _types(done)["Succeeded"] == ("True", ftj.REASON_COMPLETED)
    failed = finetunejob_status(
        ftj.FineTuneJobStatus(), 1, job=_job("Failed", "DeadlineExceeded"), report_data={}, output=OUTPUT, at=T0
    )
    assert failed.phase == "Failed"
    assert _types(failed)["Failed"] == ("True", ftj.REASON_DEADLINE_EXCEEDED)
    report = {
        "status.json": json.dumps({"dataQuality": {"passed": False, "rows": 10, "kept": 1, "message": "too few rows"}})
    }
    bad_data = finetunejob_status(
        ftj.FineTuneJobStatus(), 1, job=_job("Failed", "BackoffLimitExceeded"), report_data=report, output=OUTPUT, at=T0
    )
    assert _types(bad_data)["Failed"] == ("True", ftj.REASON_DATA_QUALITY_FAILED)


def test_failed_by_the_pod_failure_policy_says_the_input_is_wrong() -> None:
    job = _job("Failed", "PodFailurePolicy")
    job["status"]["conditions"][0]["message"] = "Container runtime for pod ns/x-abc failed with exit code 2"
    report = {"status.json": json.dumps({"phase": "Failed", "reason": "InvalidDataset", "message": "no train file"})}
    invalid = finetunejob_status(ftj.FineTuneJobStatus(), 1, job=job, report_data=report, output=OUTPUT, at=T0)
    assert invalid.phase == "Failed"
    assert _types(invalid)["Failed"] == ("True", ftj.REASON_INVALID_INPUT)
    assert "InvalidDataset: no train file" in invalid.conditions[0].message
    no_report = finetunejob_status(ftj.FineTuneJobStatus(), 1, job=job, report_data={}, output=OUTPUT, at=T0)
    assert "exit code 2" in no_report.conditions[0].message
    quality = {"status.json": json.dumps({"dataQuality": {"passed": False, "rows": 9, "kept": 1, "message": "few"}})}
    bad_data = finetunejob_status(ftj.FineTuneJobStatus(), 1, job=job, report_data=quality, output=OUTPUT, at=T0)
    assert _types(bad_data)["Failed"] == ("True", ftj.REASON_DATA_QUALITY_FAILED)
    experiment = promptexperiment_status(
        pexp.PromptExperimentStatus(), 1, job=job, report_data={}, report_name="r", at=T0
    )
    assert experiment.phase == "Failed"
    assert _types(experiment)["Ready"] == ("False", pexp.REASON_INVALID_INPUT)


VIEW = DeploymentView(
    model="pvc://models/x", served_models=["m"], url="http://m.ns.svc:80/v1", selector="a=b",
    deployment_name="m", service_name="m", desired_replicas=2,
)  # fmt: skip


def _deployment(ready: int, *, reason: str | None = None) -> dict[str, Any]:
    conditions = [{"type": "Progressing", "status": "False", "reason": reason, "message": "stuck"}] if reason else []
    status = {
        "observedGeneration": 3,
        "replicas": 2,
        "readyReplicas": ready,
        "updatedReplicas": 2,
        "conditions": conditions,
    }
    return {"metadata": {"generation": 3}, "status": status}


def test_modeldeployment_ready_deploying_degraded() -> None:
    previous = mdep.ModelDeploymentStatus()
    ready = modeldeployment_status(previous, 1, deployment=_deployment(2), view=VIEW, problem=None, at=T0)
    assert (ready.phase, ready.replicas, ready.ready_replicas, ready.selector) == ("Ready", 2, 2, "a=b")
    assert _types(ready)["Ready"] == ("True", mdep.REASON_AVAILABLE)
    deploying = modeldeployment_status(previous, 1, deployment=_deployment(1), view=VIEW, problem=None, at=T0)
    assert deploying.phase == "Deploying"
    assert _types(deploying)["Progressing"] == ("True", mdep.REASON_DEPLOYING)
    problem = ("ImagePullBackOff", "pod m-1: back-off pulling image")
    degraded = modeldeployment_status(previous, 1, deployment=_deployment(0), view=VIEW, problem=problem, at=T0)
    assert degraded.phase == "Degraded"
    assert _types(degraded)["Degraded"] == ("True", "ImagePullBackOff")
    assert _types(degraded)["Ready"] == ("False", "ImagePullBackOff")


def test_modeldeployment_waits_for_its_finetunejob() -> None:
    waiting = modeldeployment_waiting(
        mdep.ModelDeploymentStatus(), 1, mdep.REASON_WAITING_FOR_FINE_TUNE_JOB, "waiting for x", T0
    )
    assert waiting.phase == "WaitingForModel"
    assert _types(waiting)["Ready"] == ("False", mdep.REASON_WAITING_FOR_FINE_TUNE_JOB)
    failed = modeldeployment_waiting(mdep.ModelDeploymentStatus(), 1, mdep.REASON_FINE_TUNE_JOB_FAILED, "x failed", T0)
    assert failed.phase == "Failed"
    assert _types(failed)["Degraded"] == ("True", mdep.REASON_FINE_TUNE_JOB_FAILED)


RESULT = {
    "winner": "few-shot",
    "summary": "few-shot beats zero-shot",
    "results": [{"name": "few-shot", "samples": 8, "metrics": [{"name": "score", "mean": 0.9}]}],
    "comparisons": [
        {"variant": "few-shot", "control": "zero-shot", "metric": "score", "difference": 0.3, "significant": True}
    ],
}


def test_promptexperiment_copies_the_result() -> None:
    report = {"result.json": json.dumps(RESULT)}
    status = promptexperiment_status(
        pexp.PromptExperimentStatus(), 1, job=_job("Complete"), report_data=report, report_name="e-report", at=T0
    )
    assert status.phase == "Succeeded"
    assert status.winner == "few-shot"
    assert status.results[0].metrics[0].mean == 0.9
    assert status.report_config_map == "e-report"
    assert _types(status)["Ready"] == ("True", pexp.REASON_WINNER_DECLARED)


def test_promptexperiment_running_waiting_and_missing_result() -> None:
    progress = {"status.json": json.dumps({"progress": {"completed": 6, "total": 24, "percent": 25}})}
    running = promptexperiment_status(
        pexp.PromptExperimentStatus(), 1, job=_job(active=1), report_data=progress, report_name="r", at=T0
    )
    assert running.phase == "Running"
    assert running.progress is not None and running.progress.percent == 25
    no_result = promptexperiment_status(
        pexp.PromptExperimentStatus(), 1, job=_job("Complete"), report_data={}, report_name="r", at=T0
    )
    assert no_result.phase == "Failed"
    assert _types(no_result)["Ready"] == ("False", pexp.REASON_RUN_FAILED)
    waiting = promptexperiment_waiting(pexp.PromptExperimentStatus(), 1, "waiting for m", T0)
    assert _types(waiting)["Ready"] == ("False", pexp.REASON_WAITING_FOR_TARGET)


def test_status_patch_only_holds_changes() -> None:
    status = modeldeployment_status(
        mdep.ModelDeploymentStatus(), 1, deployment=_deployment(2), view=VIEW, problem=None, at=T0
    )
    current = {**status.dump(), "kopf": {"progress": {}}}
    assert status_patch(current, status) == {}
    assert status_patch({**current, "stale": 1}, status) == {"stale": None}
    assert status_patch({}, status)["readyReplicas"] == 2
    assert load_status(mdep.ModelDeploymentStatus, {"status": current}).dump() == current
    assert load_status(mdep.ModelDeploymentStatus, {"status": {"replicas": -1}}) == mdep.ModelDeploymentStatus()
