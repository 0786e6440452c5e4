"""PromptExperiment: A/B-test prompt variants against a served model and declare a winner.

The spec is the runtime's :class:`~kubellm.contract.ExperimentConfig` (variants,
dataset, scorers, statistics) plus the target and pod options; the operator runs it as a
Job and copies the runtime's results (per-variant metrics with confidence intervals, the
comparisons with the control, the winner) into status. The summary condition is ``Ready``:
True once the results are final.

Condition reasons: ``WaitingForTarget`` (the target's ModelDeployment, or a judge scorer's, is not
Ready; the message says which), ``DatasetNotFound``
(the ConfigMap or key ``dataset.configMapKeyRef`` names is missing; no Job until it exists), ``Running``,
``WinnerDeclared`` / ``NoSignificantDifference`` (results final), ``InvalidInput`` (the run exited
with the code for unusable input, so the Job failed at once without a retry), ``RunFailed``
(any other failure, after the Job's one retry), ``InvalidSpec``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field, StringConstraints, model_validator

from kubellm.contract.experiments import (
    ExperimentConfig,
    ExperimentProgress,
    OptimizationReport,
    PowerReport,
    SequentialReport,
    VariantComparison,
    VariantResult,
)
from kubellm.contract.schema import Identifier
from kubellm.operator.api.common import (
    AGE_COLUMN,
    CONDITION_DEGRADED,
    CONDITION_PROGRESSING,
    CONDITION_READY,
    CelRule,
    ConfigModel,
    KindInfo,
    LocalObjectReference,
    PrinterColumn,
    SecretKeyRef,
    StatusBase,
    WorkloadSpec,
    condition_column,
)

__all__ = [
    "CONDITION_TYPES",
    "INFO",
    "KIND",
    "PLURAL",
    "REASON_COMPLETED",
    "REASON_DATASET_NOT_FOUND",
    "REASON_INVALID_INPUT",
    "REASON_NO_SIGNIFICANT_DIFFERENCE",
    "REASON_RUNNING",
    "REASON_RUN_FAILED",
    "REASON_UNDERPOWERED",
    "REASON_WAITING_FOR_TARGET",
    "REASON_WINNER_DECLARED",
    "SHORT_NAMES",
    "ExperimentTarget",
    "Phase",
    "PromptExperimentSpec",
    "PromptExperimentStatus",
]

KIND = "PromptExperiment"
PLURAL = "promptexperiments"
SHORT_NAMES = ("pexp",)

CONDITION_TYPES = (CONDITION_READY, CONDITION_PROGRESSING, CONDITION_DEGRADED)

REASON_WAITING_FOR_TARGET = "WaitingForTarget"
REASON_DATASET_NOT_FOUND = "DatasetNotFound"
REASON_RUNNING = "Running"
REASON_WINNER_DECLARED = "WinnerDeclared"
REASON_NO_SIGNIFICANT_DIFFERENCE = "NoSignificantDifference"
REASON_COMPLETED = "Completed"
REASON_RUN_FAILED = "RunFailed"
REASON_INVALID_INPUT = "InvalidInput"
REASON_UNDERPOWERED = "Underpowered"
"""Degraded: fewer rows than spec.minDetectableEffect needs; the verdict stands, but a missing winner proves little."""

Phase = Literal["Pending", "WaitingForTarget", "Running", "Succeeded", "Failed"]

_ONE_TARGET = "exactly one of modelDeploymentRef or url must be set"


class ExperimentTarget(ConfigModel):
    """The OpenAI-compatible server the variants are sent to."""

    cel_rules = (CelRule(rule="has(self.modelDeploymentRef) != has(self.url)", message=_ONE_TARGET),)

    model_deployment_ref: LocalObjectReference | None = Field(
        default=None, description="A ModelDeployment in the namespace; the run waits until it is Ready."
    )
    url: Annotated[str, StringConstraints(pattern=r"^https?://[^\s]+$", max_length=1024)] | None = Field(
        default=None, description="Base URL of another OpenAI-compatible server, e.g. http://llm:8000/v1."
    )
    model: Annotated[str, StringConstraints(max_length=253)] | None = Field(
        default=None, description="Model name to request. Default: the ModelDeployment's served model name."
    )
    api: Literal["chat", "completions"] = Field(
        default="chat", description="Send rendered prompts to /v1/chat/completions (chat) or /v1/completions."
    )
    api_key_secret_ref: SecretKeyRef | None = Field(
        default=None, description="Secret key holding the server's API key."
    )

    @model_validator(mode="after")
    def _one_target(self) -> ExperimentTarget:
        if (self.model_deployment_ref is None) == (self.url is None):
            raise ValueError(_ONE_TARGET)
        return self


class PromptExperimentSpec(ExperimentConfig, WorkloadSpec):
    """The desired experiment: the target plus the runtime's experiment definition."""

    cel_rules = ExperimentConfig.cel_rules

    target: ExperimentTarget = Field(description="Where the prompts are sent.")
    timeout_seconds: int = Field(
        default=3600, ge=60, le=604_800, description="Fail the run if it takes longer than this many seconds."
    )


class PromptExperimentStatus(StatusBase):
    """The observed state and the results."""

    phase: Phase | None = Field(default=None, description="A summary of the conditions.")
    job_name: Annotated[str, StringConstraints(max_length=253)] | None = Field(
        default=None, description="The Job running the experiment."
    )
    start_time: datetime | None = Field(default=None, description="When the run started.")
    completion_time: datetime | None = Field(default=None, description="When the run finished.")
    progress: ExperimentProgress | None = Field(default=None, description="Requests answered so far.")
    results: list[VariantResult] = Field(
        default_factory=list,
        max_length=17,
        description="Per-variant metrics with confidence intervals (an optimize run adds its variant).",
    )
    comparisons: list[VariantComparison] = Field(
        default_factory=list, max_length=17, description="Each variant against the control on the primary metric."
    )
    winner: Identifier | None = Field(
        default=None, description="The variant significantly best on the primary metric; empty when none is."
    )
    summary: Annotated[str, StringConstraints(max_length=1024)] | None = Field(
        default=None, description="One-line conclusion, e.g. few-shot beats zero-shot on score by 0.12 (p=0.003)."
    )
    sequential: SequentialReport | None = Field(
        default=None, description="With spec.earlyStopping: the look the run ended at and whether it stopped early."
    )
    power: PowerReport | None = Field(
        default=None, description="Rows the run had against the rows spec.minDetectableEffect needs."
    )
    optimization: OptimizationReport | None = Field(
        default=None,
        description="With spec.optimize: the search's progress and its best candidate (the found variant is in the "
        "report ConfigMap under variantKey); the confirmation is in results and comparisons, on the held-out rows.",
    )
    report_config_map: Annotated[str, StringConstraints(max_length=253)] | None = Field(
        default=None, description="ConfigMap holding the full report (JSON and Markdown)."
    )


INFO = KindInfo(
    kind=KIND,
    plural=PLURAL,
    short_names=SHORT_NAMES,
    description="PromptExperiment A/B-tests prompt variants (zero-shot, few-shot, chain-of-thought, ...) "
    "against a served model, scores the answers and declares a statistically significant winner in status.",
    spec=PromptExperimentSpec,
    status=PromptExperimentStatus,
    printer_columns=(
        condition_column(CONDITION_READY, "status"),
        condition_column(CONDITION_READY, "reason"),
        PrinterColumn("Target", ".spec.target.modelDeploymentRef.name", "string", "The ModelDeployment tested."),
        PrinterColumn("Winner", ".status.winner", "string", "The winning variant, if any."),
        PrinterColumn("Progress", ".status.progress.percent", "integer", "Percent of the requests answered."),
        AGE_COLUMN,
        PrinterColumn("Metric", ".spec.primaryMetric", "string", "Metric the winner is decided on.", priority=1),
        PrinterColumn("Report", ".status.reportConfigMap", "string", "ConfigMap with the full report.", priority=1),
    ),
)
