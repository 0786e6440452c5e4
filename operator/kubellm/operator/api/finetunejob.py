"""FineTuneJob: fine-tune a base model (full, LoRA or QLoRA) as a Kubernetes Job.

Immutability: the training-relevant parts of the spec (baseModel, dataset, training,
dataQuality, dataAugmentation, search, output, distributed) cannot change after creation. A
CEL transition rule cannot see status, so "once started" cannot be told apart from "just
created"; the rules therefore freeze these fields from creation on. Changing them means a new
FineTuneJob (a new name, so a new output). The pod options (image, resources,
nodeSelector, tolerations) and the failure policy stay editable: they only affect pods the
operator creates afterwards (for example when it resumes a run from its checkpoint).

Condition reasons (``Succeeded``/``Failed``/``Progressing``): ``JobCreated``, ``Training``,
``Searching``, ``TrainingComplete``; failures: ``DataQualityCheckFailed`` (the data failed its
checks; status.dataQuality says why), ``InvalidInput`` (the pod exited with the code for a bad
configuration, model source or dataset: the Job fails at once, no retry), ``BackoffLimitExceeded``
(``backoffLimit`` retries used up; preempted or evicted pods do not count), ``DeadlineExceeded``,
``InvalidSpec``; ``WaitingForModelDeployment`` while data augmentation waits for its server.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field, StringConstraints, model_validator
from pydantic.config import JsonDict

from kubellm.operator.api.common import (
    AGE_COLUMN,
    CONDITION_FAILED,
    CONDITION_PROGRESSING,
    CONDITION_SUCCEEDED,
    HAS_GPU_CEL,
    CelRule,
    ConfigModel,
    KindInfo,
    ModelSource,
    PrinterColumn,
    PvcLocation,
    ReportModel,
    StatusBase,
    WorkloadSpec,
    condition_column,
)
from kubellm.runtime.config import (
    AUGMENTATION_NEEDS_PROMPTS,
    AugmentationConfig,
    DataQualityConfig,
    DataQualityReport,
    DatasetConfig,
    SearchConfig,
    SearchReport,
    TaskEvaluationConfig,
    TaskEvaluationReport,
    TrainingConfig,
    TrainingProgress,
)

__all__ = [
    "CONDITION_TYPES",
    "IMMUTABLE_FIELDS",
    "INFO",
    "KIND",
    "PLURAL",
    "REASON_BACKOFF_LIMIT_EXCEEDED",
    "REASON_COMPLETED",
    "REASON_DATA_QUALITY_FAILED",
    "REASON_DEADLINE_EXCEEDED",
    "REASON_INVALID_INPUT",
    "REASON_JOB_CREATED",
    "REASON_RESUMING",
    "REASON_SEARCHING",
    "REASON_TRAINING",
    "REASON_WAITING_FOR_MODEL_DEPLOYMENT",
    "SHORT_NAMES",
    "DistributedConfig",
    "FineTuneJobSpec",
    "FineTuneJobStatus",
    "OutputLocation",
    "OutputStatus",
    "Phase",
]

KIND = "FineTuneJob"
PLURAL = "finetunejobs"
SHORT_NAMES = ("ftj",)

CONDITION_TYPES = (CONDITION_SUCCEEDED, CONDITION_FAILED, CONDITION_PROGRESSING)

REASON_JOB_CREATED = "JobCreated"
REASON_TRAINING = "Training"
REASON_SEARCHING = "Searching"
REASON_RESUMING = "Resuming"
REASON_COMPLETED = "TrainingComplete"
REASON_DATA_QUALITY_FAILED = "DataQualityCheckFailed"
REASON_WAITING_FOR_MODEL_DEPLOYMENT = "WaitingForModelDeployment"
REASON_BACKOFF_LIMIT_EXCEEDED = "BackoffLimitExceeded"
REASON_DEADLINE_EXCEEDED = "DeadlineExceeded"
REASON_INVALID_INPUT = "InvalidInput"

Phase = Literal["Pending", "Running", "Succeeded", "Failed"]

IMMUTABLE_FIELDS = (
    "baseModel",
    "dataset",
    "training",
    "dataQuality",
    "search",
    "evaluation",
    "dataAugmentation",
    "output",
    "distributed",
)
_IMMUTABLE_MESSAGE = "is immutable once the FineTuneJob exists; create a new FineTuneJob to train differently"
_AUGMENTATION_ONE_PROCESS = "dataAugmentation runs in one process: set distributed to 1 node and 1 process per node"
_SEARCH_ONE_PROCESS = "a hyper-parameter search runs in one process: set distributed to 1 node and 1 process per node"
_ONE_PROCESS_CEL = "(self.distributed.nodes == 1 && self.distributed.processesPerNode == 1)"


def _immutable(field: str) -> JsonDict:
    """Schema extra freezing a field: a transition rule, checked on every update."""
    rule = CelRule(rule="self == oldSelf", message=f"{field} {_IMMUTABLE_MESSAGE}")
    return {"x-kubernetes-validations": [rule.to_schema()]}


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


class FineTuneJobSpec(WorkloadSpec):
    """The desired fine-tuning run."""

    cel_rules = (
        CelRule(
            rule=f"self.training.method != 'qlora' || ({HAS_GPU_CEL})",
            message="training.method qlora needs a GPU: set resources.limits, e.g. nvidia.com/gpu: 1",
            field_path=".resources.limits",
        ),
        CelRule(
            rule="!has(self.search) || self.training.method != 'full' "
            "|| !self.search.parameters.exists(p, p.name.startsWith('lora'))",
            message="search parameters loraRank, loraAlpha and loraDropout need training.method lora or qlora",
            field_path=".search.parameters",
        ),
        CelRule(
            rule="!has(self.evaluation) || !has(self.dataset.textField)",
            message="evaluation needs prompt/response or chat rows; a textField dataset has no prompts to answer",
            field_path=".evaluation",
        ),
        CelRule(
            rule="has(self.evaluation) == has(oldSelf.evaluation)",
            message=f"evaluation {_IMMUTABLE_MESSAGE}",
            field_path=".evaluation",
        ),
        CelRule(rule=f"!has(self.search) || {_ONE_PROCESS_CEL}", message=_SEARCH_ONE_PROCESS, field_path=".search"),
        CelRule(
            rule="has(self.search) == has(oldSelf.search)",
            message=f"search {_IMMUTABLE_MESSAGE}",
            field_path=".search",
        ),
        AUGMENTATION_NEEDS_PROMPTS,
        CelRule(
            rule="!has(self.dataAugmentation) "
            "|| (self.distributed.nodes == 1 && self.distributed.processesPerNode == 1)",
            message=_AUGMENTATION_ONE_PROCESS,
            field_path=".dataAugmentation",
        ),
        CelRule(
            rule="has(self.dataAugmentation) == has(oldSelf.dataAugmentation)",
            message=f"dataAugmentation {_IMMUTABLE_MESSAGE}",
            field_path=".dataAugmentation",
        ),
    )

    base_model: ModelSource = Field(
        description="The model to start from (immutable).", json_schema_extra=_immutable("baseModel")
    )
    dataset: DatasetConfig = Field(
        description="The training data (immutable).", json_schema_extra=_immutable("dataset")
    )
    training: TrainingConfig = Field(
        description="Method and hyper-parameters (immutable).", json_schema_extra=_immutable("training")
    )
    data_quality: DataQualityConfig = Field(
        default_factory=DataQualityConfig,
        description="Data checks and filters run before training (immutable).",
        json_schema_extra={"default": {}, **_immutable("dataQuality")},
    )
    search: SearchConfig | None = Field(
        default=None,
        description="Hyper-parameter search before the final training (immutable; cannot be added or removed).",
        json_schema_extra=_immutable("search"),
    )
    evaluation: TaskEvaluationConfig | None = Field(
        default=None,
        description="Task evaluation: answers generated for held-out rows and scored before and after training "
        "(status.evaluation). Needs prompt/response or chat rows. Default: none, only the evaluation loss (immutable).",
        json_schema_extra=_immutable("evaluation"),
    )
    data_augmentation: AugmentationConfig | None = Field(
        default=None,
        description="Rows generated by a model (a ModelDeployment, or the base model in the training pod) and added "
        "to the training split after the same data quality checks and deduplication; the counts are in "
        "status.dataQuality.augmentation. Default: none (immutable; cannot be added or removed).",
        json_schema_extra=_immutable("dataAugmentation"),
    )
    output: OutputLocation = Field(
        description="Where the result and checkpoints go (immutable).", json_schema_extra=_immutable("output")
    )
    distributed: DistributedConfig = Field(
        default_factory=DistributedConfig,
        description="Multi-pod training (immutable).",
        json_schema_extra={"default": {}, **_immutable("distributed")},
    )
    backoff_limit: int = Field(
        default=3, ge=0, le=100, description="Pod failures tolerated; each retry resumes from the last checkpoint."
    )
    active_deadline_seconds: int | None = Field(
        default=None, ge=60, le=31_536_000, description="Fail the run after this many seconds. Default: no deadline."
    )

    @model_validator(mode="after")
    def _consistent(self) -> FineTuneJobSpec:
        if self.training.method == "qlora" and not self.has_gpu():
            raise ValueError("training.method qlora needs a GPU: set resources.limits, e.g. nvidia.com/gpu: 1")
        lora_search = self.search is not None and any(p.name.startswith("lora") for p in self.search.parameters)
        if lora_search and self.training.method == "full":
            raise ValueError("search parameters loraRank, loraAlpha and loraDropout need training.method lora or qlora")
        if self.evaluation is not None and self.dataset.text_field is not None:
            raise ValueError(
                "evaluation needs prompt/response or chat rows; a textField dataset has no prompts to answer"
            )
        return self

    @model_validator(mode="after")
    def _augmentation_fits(self) -> FineTuneJobSpec:
        if self.data_augmentation is not None and self.dataset.text_field is not None:
            raise ValueError(AUGMENTATION_NEEDS_PROMPTS.message)
        one_process = self.distributed.nodes == 1 and self.distributed.processes_per_node == 1
        if self.data_augmentation is not None and not one_process:
            raise ValueError(_AUGMENTATION_ONE_PROCESS)
        if self.search is not None and not one_process:
            raise ValueError(_SEARCH_ONE_PROCESS)
        return self


class OutputStatus(ReportModel):
    """What the run produced."""

    uri: Annotated[str, StringConstraints(max_length=1024)] = Field(
        description="Location of the result, e.g. pvc://<claim>/<path>; ModelDeployments load it from here."
    )
    kind: Literal["model", "adapter"] = Field(description="A full model, or a LoRA adapter on baseModel.")
    base_model: Annotated[str, StringConstraints(max_length=1024)] | None = Field(
        default=None, description="URI of the base model an adapter applies to."
    )


class FineTuneJobStatus(StatusBase):
    """The observed state of the run."""

    phase: Phase | None = Field(
        default=None, description="Pending, Running, Succeeded or Failed; a summary of conditions."
    )
    job_name: Annotated[str, StringConstraints(max_length=253)] | None = Field(
        default=None, description="The Job running the training."
    )
    start_time: datetime | None = Field(default=None, description="When training started.")
    completion_time: datetime | None = Field(default=None, description="When training finished.")
    attempts: int | None = Field(default=None, ge=0, description="Training pods started, resumptions included.")
    progress: TrainingProgress | None = Field(default=None, description="Steps, loss and ETA.")
    data_quality: DataQualityReport | None = Field(default=None, description="Report of the data checks.")
    search: SearchReport | None = Field(
        default=None, description="Hyper-parameter search trials and the best settings."
    )
    evaluation: TaskEvaluationReport | None = Field(
        default=None, description="Task score on held-out rows before and after training (spec.evaluation)."
    )
    output: OutputStatus | None = Field(default=None, description="The result, once training succeeded.")


INFO = KindInfo(
    kind=KIND,
    plural=PLURAL,
    short_names=SHORT_NAMES,
    description="FineTuneJob fine-tunes a base model (full, LoRA or QLoRA) on a dataset as a Kubernetes Job, "
    "with data checks, optional hyper-parameter search, checkpoints and progress in status.",
    spec=FineTuneJobSpec,
    status=FineTuneJobStatus,
    printer_columns=(
        condition_column(CONDITION_SUCCEEDED, "status"),
        condition_column(CONDITION_SUCCEEDED, "reason"),
        PrinterColumn("Model", ".spec.baseModel.uri", "string", "The base model."),
        PrinterColumn("Method", ".spec.training.method", "string", "full, lora or qlora."),
        PrinterColumn("Progress", ".status.progress.percent", "integer", "Percent of the steps done."),
        PrinterColumn("Loss", ".status.progress.loss", "number", "Latest training loss."),
        PrinterColumn("Task", ".status.evaluation.after.score", "number", "Task score after training (0-1)."),
        AGE_COLUMN,
        PrinterColumn(
            "Before", ".status.evaluation.before.score", "number", "Task score before training (0-1).", priority=1
        ),
        PrinterColumn("Step", ".status.progress.step", "integer", "Optimizer steps done.", priority=1),
        PrinterColumn("ETA", ".status.progress.etaSeconds", "integer", "Seconds until done (estimate).", priority=1),
        PrinterColumn("Output", ".status.output.uri", "string", "Where the result is.", priority=1),
    ),
)
