"""The runner's pure parts: a local pod's state read as a Job or Deployment by the operator's status functions."""

from __future__ import annotations

from pathlib import Path

from kubellm.contract.experiments import MetricSummary, VariantComparison, VariantResult
from kubellm.operator.api import finetunejob as ftj
from kubellm.operator.api import promptexperiment as pexp
from kubellm.operator.api.modeldeployment import ModelDeploymentStatus
from kubellm.operator.local.documents import load_manifests
from kubellm.operator.local.runner import LocalStore, deployment_view, job_view, results_table
from kubellm.operator.status import DeploymentView, finetunejob_status, modeldeployment_status, now
from tests.api_cases import EXAMPLES

OUTPUT = ftj.OutputStatus(uri="pvc://c/p", kind="adapter", base_model="dummy://llama")


def _ftj_phase(exit_code: int | None) -> ftj.FineTuneJobStatus:
    job = job_view("job", now(), exit_code, Path("pod.log"))
    return finetunejob_status(ftj.FineTuneJobStatus(), 1, job=job, report_data={}, output=OUTPUT, at=now())


def test_a_running_exited_or_failed_process_reads_as_the_job_would() -> None:
    assert _ftj_phase(None).phase == "Running"
    succeeded = _ftj_phase(0)
    assert (succeeded.phase, succeeded.output) == ("Succeeded", OUTPUT)
    failed = _ftj_phase(3)
    assert failed.phase == "Failed"
    assert "exited with code 3; its log: pod.log" in failed.conditions[0].message


def test_a_server_is_ready_once_its_ready_probe_answers() -> None:
    view = DeploymentView("m", ["m"], "http://127.0.0.1:1/v1", "s", "d", "d", 1)
    waiting = modeldeployment_status(
        ModelDeploymentStatus(), 1, deployment=deployment_view(False), view=view, problem=None, at=now()
    )
    ready = modeldeployment_status(waiting, 1, deployment=deployment_view(True), view=view, problem=None, at=now())
    assert (waiting.phase, ready.phase) == ("Deploying", "Ready")


def test_the_store_answers_the_resolvers_with_the_latest_status() -> None:
    resource = load_manifests([EXAMPLES]).resources[0]
    store = LocalStore()
    assert store.get("kubellm.io/v1alpha1", "FineTuneJob", "default", resource.name) is None
    store.put(resource, _ftj_phase(0))
    stored = store.get("kubellm.io/v1alpha1", "FineTuneJob", "default", resource.name)
    assert stored is not None
    assert stored["status"]["phase"] == "Succeeded"


def test_the_results_table_shows_intervals_comparisons_and_the_verdict() -> None:
    spec = load_manifests([EXAMPLES]).resources[2].spec
    status = pexp.PromptExperimentStatus(
        results=[
            VariantResult(
                name="zero-shot", samples=8, metrics=[MetricSummary(name="score", mean=0.25, ci_low=0.0, ci_high=0.5)]
            ),
            VariantResult(name="few-shot", samples=8, errors=1, latency_p50_seconds=0.1234),
            VariantResult(name="chain-of-thought", samples=8, cut_off=3, unextracted=2),
        ],
        comparisons=[
            VariantComparison(
                variant="few-shot",
                control="zero-shot",
                metric="score",
                difference=0.5,
                ci_low=0.1,
                ci_high=0.9,
                adjusted_p_value=0.01,
                significant=True,
            )
        ],
        winner="few-shot",
        summary="few-shot beats zero-shot",
    )
    lines = list(results_table(spec, status))
    assert lines[0].split()[:3] == ["VARIANT", "SAMPLES", "ERRORS"]
    assert "SCORE (95% CI)" in lines[0]
    assert "zero-shot (control)" in lines[1] and "0.250 [0.000, 0.500]" in lines[1]
    assert "0.123s" in lines[2]
    assert "CUT OFF" in lines[0] and "NO ANSWER" in lines[0]
    assert lines[3].split()[-2:] == ["3", "2"]  # cut off by the token limit, no answer extracted: counted, not a 0
    assert any("few-shot vs zero-shot" in line and "+0.500" in line and "yes" in line for line in lines)
    assert lines[-1] == "verdict: winner few-shot: few-shot beats zero-shot"
