"""The generated CRDs on the real API server: accepted, documented, validating, round-tripping.

Each invalid manifest of :mod:`tests.api_cases` (one per schema or CEL rule) must be rejected
with an error that names the field; ``test_rejection_summary`` prints how many were.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from kubellm.contract.experiments import ExperimentProgress, MetricSummary, VariantComparison, VariantResult
from kubellm.contract.training import DataQualityReport, ParameterValue, SearchReport, SearchTrial, TrainingProgress
from kubellm.operator import api
from kubellm.operator.api import crdgen, finetunejob, modeldeployment, promptexperiment
from kubellm.operator.api.common import Condition, KindInfo
from tests.api_cases import EXAMPLES, INVALID_CASES, LLAMACPP_SPEC, InvalidCase, load_example, merge_patch
from tests.harness.cluster import Cluster

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CRD_DIR = ROOT / "crds"
NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
EXAMPLE_OBJECTS = {
    "finetunejob": ("finetunejob", "smollm2-dates"),
    "modeldeployment": ("modeldeployment", "smollm2"),
    "promptexperiment": ("promptexperiment", "prompt-styles"),
}

_attempted: list[str] = []
_rejected: list[str] = []


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def crds(cluster: Cluster) -> Cluster:
    """The generated CRDs, applied (server-side: they are too big for the last-applied annotation)."""
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "--field-manager=kubellm-tests", "-f", str(CRD_DIR))
    names = [f"crd/{info.crd_name}" for info in api.KINDS]
    cluster.kubectl("wait", "--for", "condition=established", "--timeout=60s", *names)
    return cluster


@pytest.fixture(scope="module")
def scratch_namespace(crds: Cluster) -> Iterator[str]:
    """One namespace for the many dry-run rejections (a namespace per case would be slow)."""
    name = f"crd-cases-{os.getpid()}"
    crds.kubectl("create", "namespace", name)
    yield name
    crds.kubectl("delete", "namespace", name, "--wait=false", check=False)


def _get(cluster: Cluster, *args: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(cluster.kubectl("get", *args, "-o", "json").stdout)
    return result


def _apply_example(cluster: Cluster, name: str, namespace: str) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", str(EXAMPLES / f"{name}.yaml"))


def _eventually(check: Callable[[], None], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            check()
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


# --- the CRDs themselves ------------------------------------------------------------------------


@pytest.mark.parametrize("info", api.KINDS, ids=lambda i: i.kind)
def test_crd_is_established_and_kept_whole(crds: Cluster, info: KindInfo) -> None:
    crd = _get(crds, "crd", info.crd_name)
    conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
    assert conditions.get("Established") == "True"
    assert conditions.get("NamesAccepted") == "True"
    assert conditions.get("NonStructuralSchema") is None
    assert crd["status"]["acceptedNames"]["categories"] == ["kubellm"]
    generated = crdgen.build_crd(info)["spec"]["versions"][0]
    served = crd["spec"]["versions"][0]
    assert served["schema"] == generated["schema"], "the server changed or dropped part of the schema"
    assert served["subresources"] == generated["subresources"]


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("finetunejobs.spec", "The desired fine-tuning run."),
        ("finetunejobs.spec.training.learningRate", "Peak learning rate"),
        ("modeldeployments.spec.serving.quantization", "int4 (GPU only)"),
        ("promptexperiments.spec.variants", "at least two"),
        ("promptexperiments.status.winner", "significantly best"),
    ],
)
def test_explain_shows_field_descriptions(crds: Cluster, path: str, expected: str) -> None:
    def explained() -> None:
        result = crds.kubectl("explain", path, check=False)
        assert result.returncode == 0, result.stderr
        assert expected in " ".join(result.stdout.split()), result.stdout  # explain wraps long lines

    _eventually(explained)  # the OpenAPI document is published shortly after Established


# --- examples -----------------------------------------------------------------------------------


def test_examples_apply_and_get_listed_by_category(crds: Cluster, namespace: str) -> None:
    for name in EXAMPLE_OBJECTS:
        crds.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", str(EXAMPLES / f"{name}.yaml"))
    for name in EXAMPLE_OBJECTS:
        _apply_example(crds, name, namespace)
    listed = set(crds.kubectl("get", "kubellm", "-n", namespace, "-o", "name").stdout.split())
    assert listed == {
        "finetunejob.kubellm.io/smollm2-dates",
        "modeldeployment.kubellm.io/smollm2",
        "promptexperiment.kubellm.io/prompt-styles",
    }
    short = crds.kubectl("get", "ftj,mdep,pexp", "-n", namespace, "-o", "name").stdout.split()
    assert len(short) == 3


@pytest.mark.parametrize("example", list(EXAMPLE_OBJECTS))
def test_server_defaults_equal_model_defaults(crds: Cluster, namespace: str, example: str) -> None:
    _apply_example(crds, example, namespace)
    resource, name = EXAMPLE_OBJECTS[example]
    stored = _get(crds, resource, name, "-n", namespace)
    manifest = load_example(example)
    spec_model = next(i for i in api.KINDS if i.kind == manifest["kind"]).spec
    assert spec_model.model_validate(stored["spec"]) == spec_model.model_validate(manifest["spec"])
    assert stored["spec"] != manifest["spec"], "the schema defaults should have filled in fields"


def test_printer_columns(crds: Cluster, namespace: str) -> None:
    _apply_example(crds, "finetunejob", namespace)
    header = crds.kubectl("get", "ftj", "-n", namespace).stdout.splitlines()[0].split()
    assert header == ["NAME", "SUCCEEDED", "REASON", "MODEL", "METHOD", "PROGRESS", "LOSS", "TASK", "AGE"]
    wide = crds.kubectl("get", "ftj", "-n", namespace, "-o", "wide").stdout.splitlines()[0].split()
    assert wide[-4:] == ["BEFORE", "STEP", "ETA", "OUTPUT"]


# --- one invalid manifest per rule ----------------------------------------------------------------


@pytest.mark.parametrize("case", INVALID_CASES, ids=lambda c: c.name)
def test_invalid_manifest_is_rejected(crds: Cluster, scratch_namespace: str, case: InvalidCase) -> None:
    _attempted.append(case.name)
    manifest = json.dumps(case.manifest())
    result = crds.kubectl(
        "create",
        "--dry-run=server",
        "--validate=strict",
        "-n",
        scratch_namespace,
        "-f",
        "-",
        input=manifest,
        check=False,
    )
    assert result.returncode != 0, f"{case.name} was accepted"
    assert case.field in result.stderr, result.stderr
    if case.message is not None:
        assert case.message in result.stderr, result.stderr
    _rejected.append(case.name)


# Settings an earlier rule refused or ignored, which the API now means: each one accepted by the server
# and by the models alike.
ACCEPTED_VARIANTS = {
    "mdep-cache-redis-by-url-alone": (
        "modeldeployment",
        {"serving": {"cache": {"url": "redis://redis:6379/0", "passwordSecretRef": {"name": "r", "key": "pw"}}}},
    ),
    "mdep-cache-off": ("modeldeployment", {"serving": {"cache": {"enabled": False}}}),
    "mdep-cache-enabled-in-process": ("modeldeployment", {"serving": {"cache": {"enabled": True}}}),
    "ftj-lora-without-settings": ("finetunejob", {"training": {"lora": None}}),
    "mdep-llamacpp-gguf": ("modeldeployment", LLAMACPP_SPEC),
}


@pytest.mark.parametrize("name", list(ACCEPTED_VARIANTS))
def test_meaningful_variants_are_accepted(crds: Cluster, scratch_namespace: str, name: str) -> None:
    example, spec_patch = ACCEPTED_VARIANTS[name]
    manifest = merge_patch(load_example(example), {"metadata": {"name": name}, "spec": spec_patch})
    next(i for i in api.KINDS if i.kind == manifest["kind"]).spec.model_validate(manifest["spec"])
    create = ("create", "--dry-run=server", "--validate=strict", "-n", scratch_namespace, "-f", "-")
    result = crds.kubectl(*create, input=json.dumps(manifest), check=False)
    assert result.returncode == 0, result.stderr


def test_rejection_summary(capsys: pytest.CaptureFixture[str]) -> None:
    if not _attempted:
        pytest.skip("no invalid manifest was tried in this run")
    with capsys.disabled():
        print(f"\nrejected {len(_rejected)}/{len(_attempted)} invalid manifests")
    assert sorted(_rejected) == sorted(_attempted)


# --- immutability -----------------------------------------------------------------------------------


def _patch(cluster: Cluster, namespace: str, patch: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    return cluster.kubectl(
        "patch",
        "finetunejob",
        "smollm2-dates",
        "-n",
        namespace,
        "--type",
        "merge",
        "-p",
        json.dumps(patch),
        check=False,
    )


@pytest.mark.parametrize(
    "patch",
    [
        {"spec": {"training": {"learningRate": "5e-4"}}},  # the example's is 1e-3
        {"spec": {"baseModel": {"uri": "dummy://llama?layers=4"}}},
        {"spec": {"dataset": {"validationPercent": 20}}},
        {"spec": {"dataQuality": {"minChars": 10}}},
        {"spec": {"output": {"pvc": {"path": "elsewhere"}}}},
        {"spec": {"distributed": {"nodes": 2}}},
        {"spec": {"search": {"parameters": [{"name": "epochs", "type": "int", "low": "1", "high": "3"}]}}},
        {"spec": {"dataAugmentation": {"mode": "paraphrase"}}},
    ],
    ids=[
        "learningRate",
        "baseModel",
        "dataset",
        "dataQuality",
        "output",
        "distributed",
        "search-added",
        "dataAugmentation-added",
    ],
)
def test_training_spec_is_immutable(crds: Cluster, namespace: str, patch: dict[str, Any]) -> None:
    _apply_example(crds, "finetunejob", namespace)
    result = _patch(crds, namespace, patch)
    assert result.returncode != 0, "the change was accepted"
    assert "immutable" in result.stderr, result.stderr


def test_pod_options_stay_editable(crds: Cluster, namespace: str) -> None:
    _apply_example(crds, "finetunejob", namespace)
    patch = {"spec": {"resources": {"limits": {"memory": "3Gi"}}, "backoffLimit": 5}}
    result = _patch(crds, namespace, patch)
    assert result.returncode == 0, result.stderr
    stored = _get(crds, "finetunejob", "smollm2-dates", "-n", namespace)
    assert stored["spec"]["backoffLimit"] == 5


# --- scale and status ------------------------------------------------------------------------------


def _fine_tune_job_status() -> dict[str, Any]:
    return finetunejob.FineTuneJobStatus(
        observed_generation=1,
        phase="Running",
        conditions=[
            Condition(
                type="Progressing",
                status="True",
                reason="Training",
                message="step 10 of 40",
                last_transition_time=NOW,
                observed_generation=1,
            ),
            Condition(
                type="Succeeded",
                status="Unknown",
                reason="Training",
                message="training is running",
                last_transition_time=NOW,
                observed_generation=1,
            ),
        ],
        job_name="smollm2-dates",
        start_time=NOW,
        attempts=2,
        progress=TrainingProgress(
            percent=25,
            step=10,
            total_steps=40,
            epoch=0.5,
            loss=2.25,
            eval_loss=2.5,
            learning_rate=0.0002,
            samples_per_second=12.5,
            eta_seconds=30,
            last_checkpoint_step=10,
            updated_at=NOW,
        ),
        data_quality=DataQualityReport(passed=True, rows=512, kept=500, duplicates=12, mean_chars=80.5, max_chars=300),
        search=SearchReport(
            trials_completed=1,
            best_trial=0,
            best_value=2.5,
            best_params=[ParameterValue(name="learningRate", value="1e-4")],
            trials=[
                SearchTrial(
                    number=0, state="complete", value=2.5, params=[ParameterValue(name="learningRate", value="1e-4")]
                )
            ],
        ),
        kopf={"progress": {"create_fn": {"started": "2025-01-02T03:04:05.000000", "retries": 1}}},
    ).dump()


def _model_deployment_status() -> dict[str, Any]:
    return modeldeployment.ModelDeploymentStatus(
        observed_generation=1,
        phase="Ready",
        conditions=[
            Condition(
                type="Ready",
                status="True",
                reason="ReplicasReady",
                message="2/2 replicas ready",
                last_transition_time=NOW,
                observed_generation=1,
            )
        ],
        replicas=2,
        ready_replicas=2,
        selector="app.kubernetes.io/instance=smollm2,app.kubernetes.io/name=kubellm-server",
        model="pvc://kubellm-models/smollm2-dates",
        served_models=["smollm2"],
        url="http://smollm2.default.svc:80/v1",
        deployment_name="smollm2",
        service_name="smollm2",
    ).dump()


def _prompt_experiment_status() -> dict[str, Any]:
    def result(name: str, mean: float) -> VariantResult:
        return VariantResult(
            name=name,
            samples=8,
            errors=0,
            metrics=[MetricSummary(name="score", mean=mean, ci_low=mean - 0.1, ci_high=mean + 0.1)],
            latency_p50_seconds=0.05,
            latency_p95_seconds=0.125,
            prompt_tokens=400,
            completion_tokens=64,
        )

    return promptexperiment.PromptExperimentStatus(
        observed_generation=1,
        phase="Succeeded",
        conditions=[
            Condition(
                type="Ready",
                status="True",
                reason="WinnerDeclared",
                message="few-shot wins",
                last_transition_time=NOW,
                observed_generation=1,
            )
        ],
        job_name="prompt-styles",
        start_time=NOW,
        completion_time=NOW,
        progress=ExperimentProgress(completed=24, total=24, percent=100),
        results=[result("zero-shot", 0.5), result("few-shot", 0.875), result("chain-of-thought", 0.625)],
        comparisons=[
            VariantComparison(
                variant="few-shot",
                control="zero-shot",
                metric="score",
                difference=0.375,
                ci_low=0.125,
                ci_high=0.625,
                p_value=0.0025,
                adjusted_p_value=0.005,
                significant=True,
                test="paired",
            )
        ],
        winner="few-shot",
        summary="few-shot beats zero-shot on score by 0.375 (adjusted p=0.005)",
        report_config_map="prompt-styles-report",
    ).dump()


STATUSES = {
    "finetunejob": _fine_tune_job_status,
    "modeldeployment": _model_deployment_status,
    "promptexperiment": _prompt_experiment_status,
}


@pytest.mark.parametrize("example", list(STATUSES))
def test_status_round_trips_without_pruning(crds: Cluster, namespace: str, example: str) -> None:
    _apply_example(crds, example, namespace)
    resource, name = EXAMPLE_OBJECTS[example]
    status = STATUSES[example]()
    patch = json.dumps({"status": {**status, "notDeclared": "pruned"}})
    crds.kubectl("patch", resource, name, "-n", namespace, "--subresource=status", "--type", "merge", "-p", patch)
    stored = _get(crds, resource, name, "-n", namespace)
    assert stored["status"] == status
    status_model = next(i for i in api.KINDS if i.kind == stored["kind"]).status
    assert status_model.model_validate(stored["status"]) == status_model.model_validate(status)


def test_scale_subresource(crds: Cluster, namespace: str) -> None:
    _apply_example(crds, "modeldeployment", namespace)
    crds.kubectl("scale", "modeldeployment", "smollm2", "-n", namespace, "--replicas=2")
    assert _get(crds, "modeldeployment", "smollm2", "-n", namespace)["spec"]["replicas"] == 2
    status = json.dumps({"status": _model_deployment_status()})
    crds.kubectl("patch", "mdep", "smollm2", "-n", namespace, "--subresource=status", "--type", "merge", "-p", status)
    scale = _get(crds, "mdep", "smollm2", "-n", namespace, "--subresource=scale")
    assert scale["spec"]["replicas"] == 2
    assert scale["status"]["replicas"] == 2
    assert scale["status"]["selector"].startswith("app.kubernetes.io/instance=smollm2")
