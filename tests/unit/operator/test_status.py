"""Status from children: phases, conditions with stable transition times, minimal patches."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

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
    shared_claim_warning,
    status_patch,
)
from tests.api_cases import example_documents, load_example

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


def _claim(*modes: str, bound: bool = True) -> dict[str, Any]:
    status = {"phase": "Bound", "accessModes": list(modes)} if bound else {"phase": "Pending"}
    return {"spec": {"accessModes": list(modes)}, "status": status}


@pytest.mark.parametrize(
    ("most_replicas", "claims", "flagged"),
    [
        (1, {"models": _claim("ReadWriteOnce")}, None),  # one replica: one node
        (3, {"models": _claim("ReadWriteMany")}, None),
        (3, {"models": _claim("ReadWriteOnce", "ReadOnlyMany")}, None),  # the server mounts read-only
        (3, {"models": None}, None),  # not created yet: nothing to say
        (3, {"models": _claim("ReadWriteOnce", bound=False)}, "models (ReadWriteOnce)"),
        (2, {"a": _claim("ReadWriteMany"), "models": _claim("ReadWriteOncePod")}, "models (ReadWriteOncePod)"),
    ],
)
def test_several_replicas_on_a_single_node_claim_are_flagged(
    most_replicas: int, claims: dict[str, dict[str, Any] | None], flagged: str | None
) -> None:
    warning = shared_claim_warning(most_replicas, claims)
    if flagged is None:
        assert warning is None
    else:
        assert warning is not None
        reason, message = warning
        assert reason == mdep.REASON_READ_WRITE_ONCE_CLAIM_SHARED
        assert f"up to {most_replicas} replicas mount claim {flagged}," in message
        assert "ReadWriteMany" in message  # what to do instead


def test_the_examples_serve_from_a_claim_every_replica_can_mount() -> None:
    (claim,) = [doc for doc in example_documents("finetunejob") if doc["kind"] == "PersistentVolumeClaim"]
    assert load_example("finetunejob")["spec"]["output"]["pvc"]["claimName"] == claim["metadata"]["name"]
    spec = mdep.ModelDeploymentSpec.model_validate(load_example("modeldeployment")["spec"])
    assert spec.most_replicas() > 1
    assert shared_claim_warning(spec.most_replicas(), {claim["metadata"]["name"]: claim}) is None


def test_a_shared_claim_degrades_a_ready_deployment_and_a_pod_problem_comes_first() -> None:
    warning = shared_claim_warning(3, {"models": _claim("ReadWriteOnce")})
    assert warning is not None
    previous = mdep.ModelDeploymentStatus()
    ready = modeldeployment_status(
        previous, 1, deployment=_deployment(2), view=VIEW, problem=None, warnings=[warning], at=T0
    )
    assert ready.phase == "Ready"
    assert _types(ready)["Ready"] == ("True", mdep.REASON_AVAILABLE)
    assert _types(ready)["Degraded"] == ("True", mdep.REASON_READ_WRITE_ONCE_CLAIM_SHARED)
    problem = ("Unschedulable", "pod m-1: 0/3 nodes are available")
    stuck = modeldeployment_status(
        previous, 1, deployment=_deployment(0), view=VIEW, problem=problem, warnings=[warning], at=T0
    )
    assert (stuck.phase, _types(stuck)["Degraded"]) == ("Degraded", ("True", "Unschedulable"))
    fixed = modeldeployment_status(ready, 2, deployment=_deployment(2), view=VIEW, problem=None, at=T0)
    assert _types(fixed)["Degraded"] == ("False", "AsExpected")


def test_several_warnings_share_the_degraded_condition() -> None:
    warnings = [("AutoscalingMetricUnavailable", "nothing serves llm_queue_size"), ("ReadWriteOnceClaimShared", "x")]
    status = modeldeployment_status(
        mdep.ModelDeploymentStatus(), 1, deployment=_deployment(2), view=VIEW, problem=None, warnings=warnings, at=T0
    )
    degraded = next(c for c in status.conditions if c.type == "Degraded")
    assert (degraded.status, degraded.reason) == ("True", "AutoscalingMetricUnavailable")
    assert degraded.message == "nothing serves llm_queue_size; x"


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


def test_an_underpowered_experiment_is_degraded_and_says_by_how_much() -> None:
    power = {"minDetectableEffect": "0.05", "power": "0.8", "rows": 30, "rowsNeeded": 212, "underpowered": True}
    report = {"result.json": json.dumps({**RESULT, "winner": None, "power": power})}
    status = promptexperiment_status(
        pexp.PromptExperimentStatus(), 1, job=_job("Complete"), report_data=report, report_name="e-report", at=T0
    )
    assert status.power is not None and status.power.rows_needed == 212
    assert _types(status)["Ready"] == ("True", pexp.REASON_NO_SIGNIFICANT_DIFFERENCE)
    assert _types(status)["Degraded"] == ("True", pexp.REASON_UNDERPOWERED)
    degraded = next(c for c in status.conditions if c.type == "Degraded")
    assert "30 rows, 212 needed to detect a difference of 0.05 with 80% power" in degraded.message
    enough = {"result.json": json.dumps({**RESULT, "power": {**power, "rows": 300, "underpowered": False}})}
    powered = promptexperiment_status(
        pexp.PromptExperimentStatus(), 1, job=_job("Complete"), report_data=enough, report_name="e-report", at=T0
    )
    assert _types(powered)["Degraded"][0] == "False"


def test_a_prompt_search_shows_its_progress_while_running_and_its_variant_at_the_end() -> None:
    splits = {"train": 12, "search": 24, "heldOut": 24}
    searching = {"variant": "optimized", "metric": "score", "trials": 16, "completed": 3, "splits": splits}
    report = {"status.json": json.dumps({"optimization": {**searching, "controlScore": 0.4, "bestScore": 0.6}})}
    running = promptexperiment_status(
        pexp.PromptExperimentStatus(), 1, job=_job(active=1), report_data=report, report_name="e-report", at=T0
    )
    assert running.optimization is not None
    assert (running.optimization.completed, running.optimization.best_score) == (3, 0.6)
    final = {**searching, "completed": 16, "template": "Be brief.\n\n{{ input }}", "variantKey": "v.yaml"}
    report["result.json"] = json.dumps({**RESULT, "winner": None, "optimization": final})
    done = promptexperiment_status(running, 1, job=_job("Complete"), report_data=report, report_name="e-report", at=T0)
    assert done.optimization is not None
    assert (done.optimization.completed, done.optimization.variant_key) == (16, "v.yaml")
    assert done.dump()["optimization"]["splits"] == splits


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


def test_every_report_section_of_the_finetunejob_status_is_sent_by_the_training_pod() -> None:
    """A status field the runtime fills but does not send would stay empty on a cluster (and locally)."""
    from kubellm.contract import schema, training  # noqa: PLC0415
    from kubellm.operator.api import finetunejob as ftj_api  # noqa: PLC0415
    from kubellm.runtime.training.reporting import STATUS_FIELDS  # noqa: PLC0415

    runtime_models = {
        model for model in vars(training).values() if isinstance(model, type) and issubclass(model, schema.ReportModel)
    }
    reported = {
        field.alias or name
        for name, field in ftj_api.FineTuneJobStatus.model_fields.items()
        if any(model in runtime_models for model in getattr(field.annotation, "__args__", (field.annotation,)))
    }
    assert reported == {"progress", "dataQuality", "search", "evaluation"}
    assert reported <= set(STATUS_FIELDS)
