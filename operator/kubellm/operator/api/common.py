"""Pieces shared by the three kinds: group/version, conditions, references, pod options.

Also the small descriptors (:class:`KindInfo`, :class:`PrinterColumn`) from which
:mod:`kubellm.operator.api.crdgen` builds the CustomResourceDefinitions.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, StrictInt, StringConstraints

from kubellm.contract.schema import (
    PVC_ROOT,
    CelRule,
    ConfigModel,
    LocalObjectReference,
    ModelSource,
    PvcLocation,
    ReportModel,
    SecretKeyRef,
    model_section,
)

__all__ = [
    "AGE_COLUMN",
    "API_VERSION",
    "CATEGORY",
    "CONDITION_DEGRADED",
    "CONDITION_FAILED",
    "CONDITION_PROGRESSING",
    "CONDITION_READY",
    "CONDITION_SUCCEEDED",
    "GROUP",
    "HAS_GPU_CEL",
    "PVC_ROOT",
    "REASON_INVALID_SPEC",
    "VERSION",
    "CelRule",
    "Condition",
    "ConditionStatus",
    "ConfigModel",
    "KindInfo",
    "LocalObjectReference",
    "ModelSource",
    "PrinterColumn",
    "PvcLocation",
    "Quantity",
    "ReportModel",
    "ResourceRequirements",
    "ScaleSubresource",
    "SecretKeyRef",
    "StatusBase",
    "Toleration",
    "WorkloadSpec",
    "condition_column",
]

GROUP = "kubellm.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
CATEGORY = "kubellm"

CONDITION_READY = "Ready"
CONDITION_SUCCEEDED = "Succeeded"
CONDITION_FAILED = "Failed"
CONDITION_PROGRESSING = "Progressing"
CONDITION_DEGRADED = "Degraded"

REASON_INVALID_SPEC = "InvalidSpec"

QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
CONDITION_TYPE_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
)
REASON_PATTERN = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
LABEL_KEY_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)

Quantity = Annotated[
    StrictInt | Annotated[str, StringConstraints(pattern=QUANTITY_PATTERN, max_length=64)],
    Field(
        json_schema_extra={"x-kubernetes-int-or-string": True, "pattern": QUANTITY_PATTERN, "maxLength": 64},
    ),
]
"""A resource quantity such as ``500m``, ``4Gi`` or ``1`` (integer or string, never a float)."""

ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(ReportModel):
    """One aspect of the resource's state (metav1.Condition)."""

    type: Annotated[str, StringConstraints(pattern=CONDITION_TYPE_PATTERN, max_length=316)] = Field(
        description="Condition type in CamelCase, e.g. Ready, Succeeded, Progressing or Degraded."
    )
    status: ConditionStatus = Field(description="True, False or Unknown.")
    observed_generation: int | None = Field(
        default=None, ge=0, description="The .metadata.generation the condition was computed from."
    )
    last_transition_time: datetime = Field(description="When status last changed.")
    reason: Annotated[str, StringConstraints(pattern=REASON_PATTERN, min_length=1, max_length=1024)] = Field(
        description="Machine-readable CamelCase reason for the last transition."
    )
    message: Annotated[str, StringConstraints(max_length=32_768)] = Field(
        description="Human-readable details; says what to do when something is wrong."
    )


class StatusBase(ReportModel):
    """Fields every kind's status has."""

    observed_generation: int | None = Field(
        default=None, ge=0, description="The .metadata.generation the operator last acted on."
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        max_length=16,
        description="Current conditions, one per type.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    kopf: dict[str, Any] | None = Field(
        default=None,
        description="Bookkeeping of the Kopf framework (handler progress); not part of the API.",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )

    def condition(self, condition_type: str) -> Condition | None:
        """The condition of this type, if present."""
        return next((c for c in self.conditions if c.type == condition_type), None)


class ResourceRequirements(ConfigModel):
    """Compute resources of the pods (as in a container's resources)."""

    requests: dict[str, Quantity] = Field(
        default_factory=dict, max_length=16, description="Minimum resources, e.g. cpu: 500m, memory: 2Gi."
    )
    limits: dict[str, Quantity] = Field(
        default_factory=dict, max_length=16, description="Maximum resources, e.g. memory: 4Gi, nvidia.com/gpu: 1."
    )


class Toleration(ConfigModel):
    """Lets the pods run on nodes with a matching taint (as in a pod's tolerations)."""

    key: Annotated[str, StringConstraints(pattern=LABEL_KEY_PATTERN, max_length=316)] | None = Field(
        default=None, description="Taint key; empty with operator Exists matches every taint."
    )
    operator: Literal["Exists", "Equal"] = Field(default="Equal", description="Exists or Equal.")
    value: Annotated[str, StringConstraints(max_length=63)] | None = Field(
        default=None, description="Taint value for Equal."
    )
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="Taint effect to match. Default: all effects."
    )
    toleration_seconds: int | None = Field(
        default=None, ge=0, le=31_536_000, description="How long a NoExecute taint is tolerated. Default: forever."
    )


class WorkloadSpec(ConfigModel):
    """Pod options every kind offers for the pods it runs."""

    image: Annotated[str, StringConstraints(max_length=512)] | None = Field(
        default=None, description="Runtime image override. Default: the image the operator was installed with."
    )
    resources: ResourceRequirements = model_section(ResourceRequirements, "Compute resources per pod.")
    node_selector: dict[str, Annotated[str, StringConstraints(max_length=63)]] = Field(
        default_factory=dict, max_length=16, description="Node labels the pods must run on."
    )
    tolerations: list[Toleration] = Field(
        default_factory=list, max_length=16, description="Taints the pods tolerate (e.g. GPU nodes)."
    )

    def has_gpu(self) -> bool:
        """Whether the pods ask for a GPU (a limit on a ``*/gpu`` resource)."""
        return any(name.endswith("/gpu") for name in self.resources.limits)


HAS_GPU_CEL = "has(self.resources) && has(self.resources.limits) && self.resources.limits.exists(k, k.endsWith('/gpu'))"
"""CEL, true when a spec (a WorkloadSpec) asks for a GPU; mirrors :meth:`WorkloadSpec.has_gpu`."""


@dataclass(frozen=True)
class PrinterColumn:
    """An ``additionalPrinterColumns`` entry of ``kubectl get``."""

    name: str
    json_path: str
    type: Literal["string", "integer", "number", "boolean", "date"]
    description: str
    priority: int = 0

    def to_crd(self) -> dict[str, Any]:
        """The column as the CRD spells it."""
        column: dict[str, Any] = {
            "name": self.name,
            "type": self.type,
            "jsonPath": self.json_path,
            "description": self.description,
        }
        if self.priority:
            column["priority"] = self.priority
        return column


def condition_column(condition_type: str, field: Literal["status", "reason"], priority: int = 0) -> PrinterColumn:
    """A column showing one condition's status or reason."""
    name = condition_type if field == "status" else "Reason"
    return PrinterColumn(
        name=name,
        json_path=f'.status.conditions[?(@.type=="{condition_type}")].{field}',
        type="string",
        description=f"The {condition_type} condition's {field}.",
        priority=priority,
    )


AGE_COLUMN = PrinterColumn(
    name="Age", json_path=".metadata.creationTimestamp", type="date", description="Time since creation."
)


@dataclass(frozen=True)
class ScaleSubresource:
    """Paths of the scale subresource (``kubectl scale``, HorizontalPodAutoscaler)."""

    spec_replicas_path: str = ".spec.replicas"
    status_replicas_path: str = ".status.replicas"
    label_selector_path: str = ".status.selector"


@dataclass(frozen=True)
class KindInfo:
    """Everything the CRD generator and the handlers need to know about a kind."""

    kind: str
    plural: str
    short_names: tuple[str, ...]
    description: str
    spec: type[BaseModel]
    status: type[BaseModel]
    printer_columns: tuple[PrinterColumn, ...]
    scale: ScaleSubresource | None = None
    name_max_length: int = 50

    @property
    def singular(self) -> str:
        """Lowercase kind."""
        return self.kind.lower()

    @property
    def crd_name(self) -> str:
        """``<plural>.<group>``, the CustomResourceDefinition's name."""
        return f"{self.plural}.{GROUP}"
