"""FineTuneJob's part of the contract: its spec sections, the run document ``kubellm train`` reads, its reports.

- Spec sections: :class:`FineTuneSections` is everything a FineTuneJob spec says about the run
  itself; the operator's ``FineTuneJobSpec`` adds only the pod and Job options (image,
  resources, backoffLimit, ...).
- Run document: :class:`TrainingRun` is the sections plus what the operator resolves (the
  output folder, the server a ``dataAugmentation.modelDeploymentRef`` names); the operator writes
  it into the FineTuneJob's ConfigMap and ``kubellm train --config`` reads it.
- Reports: progress, data quality, search and task evaluation, copied into status.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, ClassVar, Literal

from pydantic import Field, StringConstraints, model_validator

from kubellm.contract.schema import (
    EXIT_BAD_INPUT,
    HF_ONLY_RULE,
    SOURCE_URI_PATTERN,
    CelRule,
    ConfigModel,
    Count,
    DecimalString,
    FractionString,
    LocalObjectReference,
    ModelSource,
    PvcLocation,
    ReportModel,
    SecretKeyRef,
    ShortText,
    check,
    check_hf_only,
    check_unique,
    model_section,
)

__all__ = [
    "AUGMENTATION_API_KEY_ENV",
    "AUGMENTATION_NEEDS_PROMPTS",
    "DDP_BACKEND_ENV",
    "DISTRIBUTED_LAUNCHER",
    "EXIT_DATA_QUALITY",
    "INVALID_INPUT_EXIT_CODES",
    "NEW_ROW_TEMPLATE",
    "PARAPHRASE_TEMPLATE",
    "AugmentationConfig",
    "AugmentationReport",
    "AugmentationServer",
    "DataQualityConfig",
    "DataQualityReport",
    "DatasetConfig",
    "DistributedConfig",
    "FineTuneSections",
    "LoraConfig",
    "OutputLocation",
    "ParameterValue",
    "SearchConfig",
    "SearchParameter",
    "SearchReport",
    "SearchTrial",
    "TaskEvaluationConfig",
    "TaskEvaluationReport",
    "TaskScore",
    "TrainingConfig",
    "TrainingMethod",
    "TrainingProgress",
    "TrainingRun",
]

EXIT_DATA_QUALITY = 3
"""``kubellm train``: the data failed its quality checks (status.dataQuality says why)."""
INVALID_INPUT_EXIT_CODES = (EXIT_BAD_INPUT, EXIT_DATA_QUALITY)
"""Exit codes of ``kubellm train`` that no retry can fix: the Job's podFailurePolicy fails the Job on them."""
DDP_BACKEND_ENV = "KUBELLM_DDP_BACKEND"
"""torch.distributed backend of a multi-process training run (``nccl`` on GPUs, ``gloo`` on CPUs)."""
DISTRIBUTED_LAUNCHER = "kubellm.runtime.training.launch"
"""Module a distributed run's pods start (``python -m``): torchrun's arguments, the workers' bad-input exit codes."""


# --- model and data ---------------------------------------------------------------------------


class DatasetConfig(ConfigModel):
    """The training data and how to read it."""

    cel_rules = (HF_ONLY_RULE,)

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
        check_hf_only(self.uri, self.revision, self.token_secret_ref)
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
        check(self.method == "full" and self.lora is not None, _LORA_FORBIDDEN.message)
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
        check(self.max_chars is not None and self.min_chars > self.max_chars, "minChars must not exceed maxChars")
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
        check(self.prompt_template is not None and needed not in self.prompt_template, _TEMPLATE_PLACEHOLDER.message)
        check(self.model is not None and self.model_deployment_ref is None, _MODEL_NEEDS_REF.message)
        check(self.rows_per_example > 1 and float(self.temperature) == 0, _SAMPLE_FOR_SEVERAL.message)
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
        check(not (listed if self.type == "categorical" else ranged), _RANGE_OR_CHOICES.message)
        check(
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
        check_unique("parameters", [parameter.name for parameter in self.parameters])
        return self


# --- where the result goes, and on how many processes ------------------------------------------


class OutputLocation(ConfigModel):
    """Where the trained model (or adapter) and the checkpoints are written."""

    pvc: PvcLocation = Field(
        description="Folder in a PersistentVolumeClaim; a ModelDeployment with fineTuneJobRef serves from it."
    )


class DistributedConfig(ConfigModel):
    """Training across several processes and pods: an Indexed Job of torchrun pods (c10d rendezvous on pod 0).

    Above 1 node or 1 process, each pod runs ``torchrun`` with data-parallel training (DDP; NCCL
    when the pods request GPUs, gloo otherwise); the global batch is ``batchSize`` x
    ``gradientAccumulationSteps`` x nodes x processesPerNode. Rank 0 writes the checkpoints and
    the result, so with several nodes the output claim must be ReadWriteMany. One failed pod
    fails the group; the Job retries it from the last checkpoint.
    """

    nodes: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Pods, one torchrun agent each (usually one per node); above 1, an Indexed Job plus a headless "
        "Service <name>-workers for the rendezvous.",
    )
    processes_per_node: int = Field(
        default=1,
        ge=1,
        le=16,
        description="Training processes per pod, one per GPU: with GPUs, each pod requests this many nvidia.com/gpu "
        "(overriding resources); without, gloo processes share the pod's CPUs.",
    )

    @property
    def one_process(self) -> bool:
        """One node, one process: no torchrun."""
        return self.nodes == 1 and self.processes_per_node == 1


# --- the spec sections and the run document ---------------------------------------------------

_LORA_SEARCH_NEEDS_ADAPTERS = CelRule(
    rule="!has(self.search) || self.training.method != 'full' "
    "|| !self.search.parameters.exists(p, p.name.startsWith('lora'))",
    message="search parameters loraRank, loraAlpha and loraDropout need training.method lora or qlora",
    field_path=".search.parameters",
)
_EVALUATION_NEEDS_PROMPTS = CelRule(
    rule="!has(self.evaluation) || !has(self.dataset.textField)",
    message="evaluation needs prompt/response or chat rows; a textField dataset has no prompts to answer",
    field_path=".evaluation",
)
_ONE_PROCESS_CEL = "(self.distributed.nodes == 1 && self.distributed.processesPerNode == 1)"
_SEARCH_ONE_PROCESS = CelRule(
    rule=f"!has(self.search) || {_ONE_PROCESS_CEL}",
    message="a hyper-parameter search runs in one process: set distributed to 1 node and 1 process per node",
    field_path=".search",
)
_AUGMENTATION_ONE_PROCESS = CelRule(
    rule=f"!has(self.dataAugmentation) || {_ONE_PROCESS_CEL}",
    message="dataAugmentation runs in one process: set distributed to 1 node and 1 process per node",
    field_path=".dataAugmentation",
)


class FineTuneSections(ConfigModel):
    """What a FineTuneJob spec says about the run itself: model, data, method, checks, search, output."""

    cel_rules: ClassVar[tuple[CelRule, ...]] = (
        _LORA_SEARCH_NEEDS_ADAPTERS,
        _EVALUATION_NEEDS_PROMPTS,
        AUGMENTATION_NEEDS_PROMPTS,
        _SEARCH_ONE_PROCESS,
        _AUGMENTATION_ONE_PROCESS,
    )

    base_model: ModelSource = Field(description="The model to start from.")
    dataset: DatasetConfig = Field(description="The training data.")
    training: TrainingConfig = Field(description="Method and hyper-parameters.")
    data_quality: DataQualityConfig = model_section(DataQualityConfig, "Data checks and filters run before training.")
    search: SearchConfig | None = Field(
        default=None, description="Hyper-parameter search before the final training (cannot be added or removed)."
    )
    evaluation: TaskEvaluationConfig | None = Field(
        default=None,
        description="Task evaluation: answers generated for held-out rows and scored before and after training "
        "(status.evaluation). Needs prompt/response or chat rows. Default: none, only the evaluation loss.",
    )
    data_augmentation: AugmentationConfig | None = Field(
        default=None,
        description="Rows generated by a model (a ModelDeployment, or the base model in the training pod) and added "
        "to the training split after the same data quality checks and deduplication; the counts are in "
        "status.dataQuality.augmentation. Default: none (cannot be added or removed).",
    )
    output: OutputLocation | None = Field(
        default=None,
        description="Where the result and checkpoints go (a FineTuneJob must say; kubellm train may "
        "be given --output instead).",
    )
    distributed: DistributedConfig = model_section(DistributedConfig, "Multi-pod training.")

    @model_validator(mode="after")
    def _sections_fit(self) -> FineTuneSections:
        lora_search = self.search is not None and any(p.name.startswith("lora") for p in self.search.parameters)
        check(lora_search and self.training.method == "full", _LORA_SEARCH_NEEDS_ADAPTERS.message)
        prompts = self.dataset.text_field is None
        check(self.evaluation is not None and not prompts, _EVALUATION_NEEDS_PROMPTS.message)
        check(self.data_augmentation is not None and not prompts, AUGMENTATION_NEEDS_PROMPTS.message)
        check(self.search is not None and not self.distributed.one_process, _SEARCH_ONE_PROCESS.message)
        augmenting = self.data_augmentation is not None
        check(augmenting and not self.distributed.one_process, _AUGMENTATION_ONE_PROCESS.message)
        return self


class TrainingRun(FineTuneSections):
    """The run document of ``kubellm train --config FILE``: the spec's sections, resolved by the operator.

    The operator fills in ``output.pvc.path`` (default: the FineTuneJob's name) and replaces a
    ``dataAugmentation.modelDeploymentRef`` (and its ``model``) by the ``augmentationServer`` it resolved to.
    """

    augmentation_server: AugmentationServer | None = Field(
        default=None,
        description="The server that generates augmentation rows (what dataAugmentation.modelDeploymentRef resolved "
        "to). Default: the base model, in-process.",
    )

    @model_validator(mode="after")
    def _resolved(self) -> TrainingRun:
        augmentation = self.data_augmentation
        check(
            augmentation is not None and augmentation.model_deployment_ref is not None,
            "dataAugmentation.modelDeploymentRef is resolved by the operator and kubellm run; in a run document, "
            "give augmentationServer: {url, model} (the server's OpenAI-compatible base URL) instead",
        )
        return self


# --- what the training pod reports --------------------------------------------------------------


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
