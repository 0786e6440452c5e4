"""ModelDeployment: serve a model (or a FineTuneJob's output) behind an OpenAI-compatible API.

The operator turns it into a Deployment, a Service, optionally a HorizontalPodAutoscaler,
an Ingress and a ServiceMonitor. The scale subresource (``.spec.replicas`` /
``.status.replicas`` / ``.status.selector``) lets ``kubectl scale`` and an HPA drive it; with
autoscaling on, leave ``replicas`` out of the manifest so GitOps shows no drift.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints, model_validator

from kubellm.contract.schema import DNS_SUBDOMAIN_PATTERN, SOURCE_URI_PATTERN, Identifier, check, model_section
from kubellm.contract.serving import LLAMACPP_NEEDS_GGUF, LLAMACPP_NO_ADAPTERS, LLAMACPP_ON_CPU, ServingConfig
from kubellm.operator.api.common import (
    AGE_COLUMN,
    CONDITION_DEGRADED,
    CONDITION_PROGRESSING,
    CONDITION_READY,
    HAS_GPU_CEL,
    CelRule,
    ConfigModel,
    KindInfo,
    LocalObjectReference,
    ModelSource,
    PrinterColumn,
    ScaleSubresource,
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
    "REASON_AUTOSCALING_METRIC_UNAVAILABLE",
    "REASON_AVAILABLE",
    "REASON_DEPLOYING",
    "REASON_FINE_TUNE_JOB_FAILED",
    "REASON_READ_WRITE_ONCE_CLAIM_SHARED",
    "REASON_REPLICAS_UNAVAILABLE",
    "REASON_SCALED_TO_ZERO",
    "REASON_WAITING_FOR_FINE_TUNE_JOB",
    "SHORT_NAMES",
    "AdapterSource",
    "AutoscalingConfig",
    "IngressConfig",
    "ModelDeploymentSpec",
    "ModelDeploymentStatus",
    "MonitoringConfig",
    "Phase",
    "ServiceConfig",
]

KIND = "ModelDeployment"
PLURAL = "modeldeployments"
SHORT_NAMES = ("mdep",)

CONDITION_TYPES = (CONDITION_READY, CONDITION_PROGRESSING, CONDITION_DEGRADED)

REASON_WAITING_FOR_FINE_TUNE_JOB = "WaitingForFineTuneJob"
REASON_FINE_TUNE_JOB_FAILED = "FineTuneJobFailed"
REASON_DEPLOYING = "Deploying"
REASON_AVAILABLE = "ReplicasReady"
REASON_REPLICAS_UNAVAILABLE = "ReplicasUnavailable"
REASON_SCALED_TO_ZERO = "ScaledToZero"
REASON_AUTOSCALING_METRIC_UNAVAILABLE = "AutoscalingMetricUnavailable"
"""Degraded: autoscaling.metric is queueSize or activeRequests and nothing in the cluster serves it."""
REASON_READ_WRITE_ONCE_CLAIM_SHARED = "ReadWriteOnceClaimShared"
"""Degraded: more than one replica may mount a claim that only one node can mount at a time."""

Phase = Literal["Pending", "WaitingForModel", "Deploying", "Ready", "Degraded", "Failed"]

_ONE_SOURCE = "exactly one of {} must be set"


class AdapterSource(ConfigModel):
    """A LoRA adapter served on the base model, chosen per request by its name."""

    cel_rules = (
        CelRule(
            rule="has(self.uri) != has(self.fineTuneJobRef)",
            message=_ONE_SOURCE.format("uri or fineTuneJobRef"),
        ),
    )

    name: Identifier = Field(description="Model name clients request to use this adapter (e.g. in /v1/models).")
    uri: Annotated[str, StringConstraints(pattern=SOURCE_URI_PATTERN, max_length=1024)] | None = Field(
        default=None, description="Adapter location: hf://, file:// or pvc://<claim>/<path>."
    )
    fine_tune_job_ref: LocalObjectReference | None = Field(
        default=None,
        description="A FineTuneJob (method lora or qlora) whose output is the adapter; waits until it succeeded.",
    )

    @model_validator(mode="after")
    def _one_source(self) -> AdapterSource:
        if (self.uri is None) == (self.fine_tune_job_ref is None):
            raise ValueError(_ONE_SOURCE.format("uri or fineTuneJobRef"))
        return self


_PROMETHEUS_FOR_SERVER_METRICS = CelRule(
    rule="self.metric != 'cpu' || !has(self.prometheusAddress)",
    message="prometheusAddress applies only to metric queueSize or activeRequests (cpu comes from the kubelet)",
    field_path=".prometheusAddress",
    reason="FieldValueForbidden",
)


class AutoscalingConfig(ConfigModel):
    """A HorizontalPodAutoscaler on the scale subresource."""

    cel_rules = (
        CelRule(
            rule="self.minReplicas <= self.maxReplicas",
            message="minReplicas must not exceed maxReplicas",
            field_path=".minReplicas",
        ),
        _PROMETHEUS_FOR_SERVER_METRICS,
    )

    min_replicas: int = Field(default=1, ge=1, le=1000, description="Fewest replicas.")
    max_replicas: int = Field(ge=1, le=1000, description="Most replicas.")
    metric: Literal["cpu", "queueSize", "activeRequests"] = Field(
        default="cpu",
        description="What to scale on: cpu (utilisation percent), queueSize or activeRequests (per-pod average "
        "of the server's metrics). The latter two need KEDA with prometheusAddress set (a KEDA ScaledObject is "
        "made instead of an HPA) or a custom metrics adapter such as prometheus-adapter serving the metric to an "
        "HPA; with neither, Degraded says so (reason AutoscalingMetricUnavailable).",
    )
    target_value: int | None = Field(
        default=None,
        ge=1,
        le=100_000,
        description="Target per pod. Default: cpu 80 (percent), queueSize 4, activeRequests 8.",
    )
    prometheus_address: Annotated[str, StringConstraints(pattern=r"^https?://[^\s]+$", max_length=1024)] | None = Field(
        default=None,
        description="The Prometheus server KEDA queries for queueSize or activeRequests, e.g. "
        "http://prometheus-operated.monitoring.svc:9090. With KEDA installed, the operator makes a KEDA "
        "ScaledObject (a prometheus trigger on the sum of the metric over the server's pods, by their namespace "
        "and pod labels, against targetValue per pod) instead of an HPA. Only with those two metrics.",
    )

    @model_validator(mode="after")
    def _bounds(self) -> AutoscalingConfig:
        if self.min_replicas > self.max_replicas:
            raise ValueError("minReplicas must not exceed maxReplicas")
        if self.metric == "cpu" and self.prometheus_address is not None:
            raise ValueError(_PROMETHEUS_FOR_SERVER_METRICS.message)
        return self


class ServiceConfig(ConfigModel):
    """The Service in front of the replicas."""

    type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = Field(default="ClusterIP", description="Service type.")
    port: int = Field(default=80, ge=1, le=65_535, description="Service port; the pods listen on 8000.")


class IngressConfig(ConfigModel):
    """An Ingress exposing the API outside the cluster."""

    host: Annotated[str, StringConstraints(pattern=DNS_SUBDOMAIN_PATTERN, max_length=253)] = Field(
        description="Host name, e.g. llm.example.com."
    )
    class_name: Annotated[str, StringConstraints(max_length=253)] | None = Field(
        default=None, description="IngressClass. Default: the cluster's default class."
    )
    path: Annotated[str, StringConstraints(pattern=r"^/[^\s]*$", max_length=512)] = Field(
        default="/", description="Path prefix."
    )
    tls_secret_name: Annotated[str, StringConstraints(pattern=DNS_SUBDOMAIN_PATTERN, max_length=253)] | None = Field(
        default=None, description="Secret with the TLS certificate. Default: plain HTTP."
    )


class MonitoringConfig(ConfigModel):
    """Prometheus scraping."""

    service_monitor: bool = Field(
        default=False, description="Create a ServiceMonitor (needs the Prometheus Operator's CRDs)."
    )
    interval_seconds: int = Field(default=30, ge=5, le=3600, description="Scrape interval.")


_LLAMACPP_CEL = "!has(self.serving) || self.serving.engine != 'llamacpp'"
"""CEL, true when a spec does not ask for the llama.cpp engine (the rules after it apply only with it)."""


class ModelDeploymentSpec(WorkloadSpec):
    """The desired model server."""

    cel_rules = (
        CelRule(
            rule="has(self.model) != has(self.fineTuneJobRef)",
            message=_ONE_SOURCE.format("model or fineTuneJobRef"),
        ),
        CelRule(
            rule=f"!has(self.serving) || self.serving.quantization != 'int4' || ({HAS_GPU_CEL})",
            message="serving.quantization int4 needs a GPU: set resources.limits, e.g. nvidia.com/gpu: 1",
            field_path=".serving.quantization",
        ),
        CelRule(
            rule=f"{_LLAMACPP_CEL} || (has(self.model) && self.model.uri.lowerAscii().endsWith('.gguf'))",
            message=LLAMACPP_NEEDS_GGUF,
            field_path=".serving.engine",
        ),
        CelRule(
            rule=f"{_LLAMACPP_CEL} || !has(self.adapters) || size(self.adapters) == 0",
            message=LLAMACPP_NO_ADAPTERS,
            field_path=".serving.engine",
        ),
        CelRule(
            rule=f"{_LLAMACPP_CEL} || !({HAS_GPU_CEL})",
            message=LLAMACPP_ON_CPU,
            field_path=".serving.engine",
        ),
    )

    model: ModelSource | None = Field(default=None, description="The model to serve; set this or fineTuneJobRef.")
    fine_tune_job_ref: LocalObjectReference | None = Field(
        default=None, description="Serve the output of this FineTuneJob; waits until it succeeded. Set this or model."
    )
    served_model_name: Identifier | None = Field(
        default=None, description="Model name in the API (/v1/models). Default: the ModelDeployment's name."
    )
    adapters: list[AdapterSource] = Field(
        default_factory=list, max_length=16, description="LoRA adapters on the same base model, names unique."
    )
    replicas: int = Field(default=1, ge=0, le=1000, description="Pods serving the model; an autoscaler may change it.")
    serving: ServingConfig = model_section(ServingConfig, "Server settings: quantization, limits and cache.")
    autoscaling: AutoscalingConfig | None = Field(
        default=None, description="Scale replicas automatically. Default: fixed."
    )
    service: ServiceConfig = model_section(ServiceConfig, "The Service.")
    ingress: IngressConfig | None = Field(default=None, description="Expose the API through an Ingress.")
    monitoring: MonitoringConfig = model_section(MonitoringConfig, "Prometheus scraping.")
    api_key_secret_ref: SecretKeyRef | None = Field(
        default=None, description="Secret key holding the API key clients must send as a bearer token. Default: no key."
    )
    startup_timeout_seconds: int = Field(
        default=600, ge=10, le=86_400, description="Time allowed to load the model before the pod is restarted."
    )

    @model_validator(mode="after")
    def _consistent(self) -> ModelDeploymentSpec:
        if (self.model is None) == (self.fine_tune_job_ref is None):
            raise ValueError(_ONE_SOURCE.format("model or fineTuneJobRef"))
        if self.serving.quantization == "int4" and not self.has_gpu():
            raise ValueError("serving.quantization int4 needs a GPU: set resources.limits, e.g. nvidia.com/gpu: 1")
        if self.serving.engine == "llamacpp":
            self._check_llamacpp()
        names = [adapter.name for adapter in self.adapters]
        if len(set(names)) != len(names):
            raise ValueError(f"adapters: duplicate names {sorted(names)}")
        return self

    def _check_llamacpp(self) -> None:
        check(self.model is None or not self.model.uri.lower().endswith(".gguf"), LLAMACPP_NEEDS_GGUF)
        check(bool(self.adapters), LLAMACPP_NO_ADAPTERS)
        check(self.has_gpu(), LLAMACPP_ON_CPU)

    def most_replicas(self) -> int:
        """The most replicas this spec can run: the autoscaler's maximum, else replicas."""
        return self.autoscaling.max_replicas if self.autoscaling is not None else self.replicas


class ModelDeploymentStatus(StatusBase):
    """The observed state of the model server.

    Degraded is True with the reason of a pod problem (ImagePullBackOff, CrashLoopBackOff,
    Unschedulable, ...) while replicas are missing; otherwise with reason
    AutoscalingMetricUnavailable when autoscaling.metric is queueSize or activeRequests and
    neither KEDA (with prometheusAddress) nor a custom metrics adapter can serve it, or
    ReadWriteOnceClaimShared when more than one replica (replicas, or autoscaling.maxReplicas) may
    mount a claim that is not ReadWriteMany or ReadOnlyMany: replicas on another node than the
    first cannot mount it. Several warnings share the message.
    """

    phase: Phase | None = Field(default=None, description="A summary of the conditions.")
    replicas: int | None = Field(default=None, ge=0, description="Pods created (scale subresource).")
    ready_replicas: int | None = Field(default=None, ge=0, description="Pods ready to serve.")
    selector: Annotated[str, StringConstraints(max_length=1024)] | None = Field(
        default=None, description="Label selector of the pods, as a string (scale subresource)."
    )
    model: Annotated[str, StringConstraints(max_length=1024)] | None = Field(
        default=None, description="The model actually served, e.g. pvc://<claim>/<path> of the FineTuneJob's output."
    )
    served_models: list[Annotated[str, StringConstraints(max_length=253)]] = Field(
        default_factory=list, max_length=17, description="Model names clients can request (base and adapters)."
    )
    url: Annotated[str, StringConstraints(max_length=1024)] | None = Field(
        default=None, description="In-cluster base URL of the OpenAI-compatible API."
    )
    deployment_name: Annotated[str, StringConstraints(max_length=253)] | None = Field(
        default=None, description="The Deployment running the server."
    )
    service_name: Annotated[str, StringConstraints(max_length=253)] | None = Field(
        default=None, description="The Service in front of it."
    )


INFO = KindInfo(
    kind=KIND,
    plural=PLURAL,
    short_names=SHORT_NAMES,
    description="ModelDeployment serves a model or a FineTuneJob's output behind an OpenAI-compatible API, "
    "with quantization, batching, a response cache and autoscaling.",
    spec=ModelDeploymentSpec,
    status=ModelDeploymentStatus,
    printer_columns=(
        condition_column(CONDITION_READY, "status"),
        condition_column(CONDITION_READY, "reason"),
        PrinterColumn("Model", ".status.model", "string", "The model served."),
        PrinterColumn("Quantization", ".spec.serving.quantization", "string", "Weight precision."),
        PrinterColumn("Replicas", ".status.replicas", "integer", "Pods created."),
        PrinterColumn("Available", ".status.readyReplicas", "integer", "Pods ready to serve."),
        AGE_COLUMN,
        PrinterColumn("FineTuneJob", ".spec.fineTuneJobRef.name", "string", "FineTuneJob served.", priority=1),
        PrinterColumn("URL", ".status.url", "string", "In-cluster API URL.", priority=1),
    ),
    scale=ScaleSubresource(),
)
