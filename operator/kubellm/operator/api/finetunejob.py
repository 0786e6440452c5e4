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
from typing import Annotated, Any, Literal, cast

from pydantic import ConfigDict, Field, StringConstraints, model_validator
from pydantic.config import JsonDict

from kubellm.contract.schema import publish_cel_rules
from kubellm.contract.training import (
    DataQualityReport,
    DistributedConfig,
    FineTuneSections,
    OutputLocation,
    SearchReport,
    TaskEvaluationReport,
    TrainingProgress,
)
from kubellm.operator.api.common import (
    AGE_COLUMN,
    CONDITION_FAILED,
    CONDITION_PROGRESSING,
    CONDITION_SUCCEEDED,
    HAS_GPU_CEL,
    CelRule,
    KindInfo,
    PrinterColumn,
    ReportModel,
    StatusBase,
    WorkloadSpec,
    condition_column,
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
_QLORA_NEEDS_GPU = CelRule(
    rule=f"self.training.method != 'qlora' || ({HAS_GPU_CEL})",
    message="training.method qlora needs a GPU: set resources.limits, e.g. nvidia.com/gpu: 1",
    field_path=".resources.limits",
)


def _no_adding_or_removing(field: str) -> CelRule:
    return CelRule(
        rule=f"has(self.{field}) == has(oldSelf.{field})",
        message=f"{field} {_IMMUTABLE_MESSAGE}",
        field_path=f".{field}",
    )


def _spec_schema(schema: JsonDict, cls: type[Any]) -> None:
    """The sections' schema, each of :data:`IMMUTABLE_FIELDS` frozen by a transition rule checked on every update."""
    publish_cel_rules(schema, cls)
    properties = cast(dict[str, JsonDict], schema["properties"])
    for field in IMMUTABLE_FIELDS:
        rule = CelRule(rule="self == oldSelf", message=f"{field} {_IMMUTABLE_MESSAGE}")
        properties[field]["x-kubernetes-validations"] = [rule.to_schema()]
        properties[field]["description"] = f"{properties[field]['description']} Immutable."


class FineTuneJobSpec(FineTuneSections, WorkloadSpec):
    """The desired fine-tuning run. Model, data, method, checks, search and output, plus the pod and Job options."""

    model_config = ConfigDict(json_schema_extra=_spec_schema)

    cel_rules = (
        _QLORA_NEEDS_GPU,
        *FineTuneSections.cel_rules,
        *(_no_adding_or_removing(field) for field in ("evaluation", "search", "dataAugmentation")),
    )

    output: OutputLocation = Field(description="Where the result and checkpoints go.")
    backoff_limit: int = Field(
        default=3, ge=0, le=100, description="Pod failures tolerated; each retry resumes from the last checkpoint."
    )
    active_deadline_seconds: int | None = Field(
        default=None, ge=60, le=31_536_000, description="Fail the run after this many seconds. Default: no deadline."
    )

    @model_validator(mode="after")
    def _gpu_for_qlora(self) -> FineTuneJobSpec:
        if self.training.method == "qlora" and not self.has_gpu():
            raise ValueError(_QLORA_NEEDS_GPU.message)
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
