"""ModelDeployment -> ConfigMap, Deployment (``kubellm serve``), Service, HPA, optional Ingress and ServiceMonitor.

The HPA targets the ModelDeployment itself (its scale subresource), so the autoscaler writes
``spec.replicas`` of the custom resource and the operator copies it into the Deployment; the
operator never writes a user's spec. A change of the serving configuration changes the
config-hash annotation of the pod template, which rolls the Deployment.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from kubellm.contract.schema import ModelSource, run_document
from kubellm.contract.serving import SERVER_PORT, ServedAdapter, ServerRun
from kubellm.operator.api.common import API_VERSION
from kubellm.operator.api.modeldeployment import ModelDeploymentSpec
from kubellm.operator.manifests.common import (
    CONFIG_DIR,
    CONFIG_FILE,
    CONFIG_HASH_ANNOTATION,
    Owner,
    claim_volumes,
    config_hash,
    config_map,
    labels,
    metadata,
    pod_spec,
    pvc_claims,
    runtime_container,
    secret_env,
)

__all__ = [
    "COMPONENT",
    "HPA_METRICS",
    "OPTIONAL_CHILDREN",
    "SERVER_PORT",
    "ServedModel",
    "base_model_name",
    "build_children",
    "build_server_autoscaler",
    "build_server_config_map",
    "build_server_deployment",
    "build_server_ingress",
    "build_server_scaled_object",
    "build_server_service",
    "build_service_monitor",
    "config_map_name",
    "selector",
    "selector_labels",
    "served_model_name",
    "served_model_names",
    "server_claims",
    "server_url",
]

COMPONENT = "server"
STARTUP_PERIOD_SECONDS = 10
HPA_METRICS: dict[str, tuple[str, int]] = {
    "cpu": ("cpu", 80),
    "queueSize": ("llm_queue_size", 4),
    "activeRequests": ("llm_active_requests", 8),
}
"""Autoscaling metric -> (resource or per-pod metric name, default target)."""
OPTIONAL_CHILDREN = (
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
    ("keda.sh/v1alpha1", "ScaledObject"),
    ("networking.k8s.io/v1", "Ingress"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
)
"""Children only some specs ask for; the handler deletes them when the spec stops asking."""


@dataclass(frozen=True)
class ServedModel:
    """The model actually served, once every fineTuneJobRef is resolved to its output."""

    uri: str
    kind: str = "model"
    base_uri: str | None = None
    adapters: tuple[tuple[str, str], ...] = field(default=())


def config_map_name(owner: Owner) -> str:
    """The ConfigMap with ``config.yaml`` for ``kubellm serve``."""
    return owner.child_name("config")


def selector_labels(owner: Owner) -> dict[str, str]:
    """The (immutable) pod selector of the Deployment and the Service."""
    all_labels = labels(owner, COMPONENT)
    keys = ("app.kubernetes.io/component", f"kubellm.io/{owner.kind.lower()}")
    return {key: all_labels[key] for key in keys}


def selector(owner: Owner) -> str:
    """The pod selector as a string, for ``status.selector`` (scale subresource)."""
    return ",".join(f"{key}={value}" for key, value in sorted(selector_labels(owner).items()))


def served_model_name(owner: Owner, spec: ModelDeploymentSpec) -> str:
    """The model name clients request."""
    return spec.served_model_name or owner.name


def base_model_name(owner: Owner, spec: ModelDeploymentSpec, model: ServedModel) -> str | None:
    """``<served name>-base`` when the served model is a fine-tuned adapter: its plain base model's name."""
    return f"{served_model_name(owner, spec)}-base" if model.kind == "adapter" else None


def served_model_names(owner: Owner, spec: ModelDeploymentSpec, model: ServedModel) -> list[str]:
    """Every model name clients may request: the model, its plain base (adapters only), the extra adapters."""
    base = base_model_name(owner, spec, model)
    return [served_model_name(owner, spec), *([base] if base else []), *(name for name, _ in model.adapters)]


def server_url(owner: Owner, spec: ModelDeploymentSpec) -> str:
    """In-cluster base URL of the OpenAI-compatible API."""
    return f"http://{owner.name}.{owner.namespace}.svc:{spec.service.port}/v1"


def server_run(owner: Owner, spec: ModelDeploymentSpec, model: ServedModel) -> ServerRun:
    """What ``kubellm serve --config`` reads: the resolved model and adapters, their names, the serving section."""
    source = ModelSource(uri=model.uri)
    if spec.model is not None and spec.model.uri == model.uri:
        source = spec.model
    return ServerRun(
        model=source,
        served_model_name=served_model_name(owner, spec),
        base_model_name=base_model_name(owner, spec, model),
        adapters=[ServedAdapter(name=name, uri=uri) for name, uri in model.adapters],
        serving=spec.serving,
    )


def build_server_config_map(owner: Owner, spec: ModelDeploymentSpec, model: ServedModel) -> dict[str, Any]:
    """The ConfigMap holding the server configuration."""
    return config_map(owner, config_map_name(owner), COMPONENT, run_document(server_run(owner, spec, model)))


def _probes(spec: ModelDeploymentSpec) -> dict[str, Any]:
    def http_get(path: str) -> dict[str, Any]:
        return {"path": path, "port": "http"}

    return {
        "startupProbe": {
            "httpGet": http_get("/health"),
            "periodSeconds": STARTUP_PERIOD_SECONDS,
            "failureThreshold": math.ceil(spec.startup_timeout_seconds / STARTUP_PERIOD_SECONDS),
        },
        "readinessProbe": {"httpGet": http_get("/ready"), "periodSeconds": 5, "failureThreshold": 3},
        "livenessProbe": {"httpGet": http_get("/health"), "periodSeconds": 10, "failureThreshold": 3},
    }


def _env(spec: ModelDeploymentSpec) -> list[dict[str, Any]]:
    token = spec.model.token_secret_ref if spec.model is not None else None
    return [
        *secret_env("HF_TOKEN", token),
        *secret_env("KUBELLM_API_KEY", spec.api_key_secret_ref),
        *secret_env("KUBELLM_REDIS_PASSWORD", spec.serving.cache.password_secret_ref),
    ]


def server_claims(model: ServedModel) -> list[str]:
    """The PersistentVolumeClaims every replica mounts: those the model, its base and adapters name."""
    return pvc_claims([model.uri, model.base_uri, *(uri for _, uri in model.adapters)])


def _pod_template(owner: Owner, spec: ModelDeploymentSpec, model: ServedModel, image: str) -> dict[str, Any]:
    volumes, mounts = claim_volumes(server_claims(model))
    container = runtime_container(spec, image, ["serve", "--config", f"{CONFIG_DIR}/{CONFIG_FILE}"], _env(spec), mounts)
    container["ports"] = [{"name": "http", "containerPort": SERVER_PORT, "protocol": "TCP"}]
    container.update(_probes(spec))
    annotations = {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(SERVER_PORT),
        "prometheus.io/path": "/metrics",
        CONFIG_HASH_ANNOTATION: config_hash(build_server_config_map(owner, spec, model)["data"]),
    }
    return {
        "metadata": {"labels": labels(owner, COMPONENT), "annotations": annotations},
        "spec": pod_spec(spec, container, config_map_name(owner), volumes, automountServiceAccountToken=False),
    }


def build_server_deployment(owner: Owner, spec: ModelDeploymentSpec, model: ServedModel, image: str) -> dict[str, Any]:
    """The Deployment running ``kubellm serve``; replicas follow the custom resource's spec."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(owner, owner.child_name(), COMPONENT),
        "spec": {
            "replicas": spec.replicas,
            "selector": {"matchLabels": selector_labels(owner)},
            "template": _pod_template(owner, spec, model, image),
        },
    }


def build_server_service(owner: Owner, spec: ModelDeploymentSpec) -> dict[str, Any]:
    """The Service in front of the replicas."""
    port = {"name": "http", "port": spec.service.port, "targetPort": "http", "protocol": "TCP"}
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(owner, owner.child_name(), COMPONENT),
        "spec": {"type": spec.service.type, "selector": selector_labels(owner), "ports": [port]},
    }


def _hpa_metric(metric: str, target: int | None) -> dict[str, Any]:
    name, default = HPA_METRICS[metric]
    value = target or default
    if metric == "cpu":
        return {
            "type": "Resource",
            "resource": {"name": name, "target": {"type": "Utilization", "averageUtilization": value}},
        }
    return {
        "type": "Pods",
        "pods": {"metric": {"name": name}, "target": {"type": "AverageValue", "averageValue": str(value)}},
    }


def build_server_autoscaler(owner: Owner, spec: ModelDeploymentSpec) -> dict[str, Any] | None:
    """The HorizontalPodAutoscaler on the ModelDeployment's scale subresource, if autoscaling is on."""
    if spec.autoscaling is None:
        return None
    scaling = spec.autoscaling
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": metadata(owner, owner.child_name(), COMPONENT),
        "spec": {
            "scaleTargetRef": {"apiVersion": API_VERSION, "kind": owner.kind, "name": owner.name},
            "minReplicas": scaling.min_replicas,
            "maxReplicas": scaling.max_replicas,
            "metrics": [_hpa_metric(scaling.metric, scaling.target_value)],
        },
    }


def build_server_scaled_object(owner: Owner, spec: ModelDeploymentSpec) -> dict[str, Any] | None:
    """A KEDA ScaledObject on a server metric in Prometheus, if autoscaling names one and its Prometheus.

    KEDA divides the query's value by the threshold, so the query sums the metric over the
    server's pods (``<deployment>-<replica set hash>-<pod hash>``) and the target stays per pod.
    """
    scaling = spec.autoscaling
    if scaling is None or scaling.metric == "cpu" or scaling.prometheus_address is None:
        return None
    name, default = HPA_METRICS[scaling.metric]
    pods = f"{owner.child_name()}-[a-z0-9]+-[a-z0-9]+"
    trigger = {
        "serverAddress": scaling.prometheus_address,
        "query": f'sum({name}{{namespace="{owner.namespace}",pod=~"{pods}"}})',
        "threshold": str(scaling.target_value or default),
    }
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": metadata(owner, owner.child_name(), COMPONENT),
        "spec": {
            "scaleTargetRef": {"apiVersion": API_VERSION, "kind": owner.kind, "name": owner.name},
            "minReplicaCount": scaling.min_replicas,
            "maxReplicaCount": scaling.max_replicas,
            "triggers": [{"type": "prometheus", "metadata": trigger}],
        },
    }


def build_server_ingress(owner: Owner, spec: ModelDeploymentSpec) -> dict[str, Any] | None:
    """The Ingress, if the spec asks for one."""
    if spec.ingress is None:
        return None
    ingress = spec.ingress
    backend = {"service": {"name": owner.child_name(), "port": {"name": "http"}}}
    body: dict[str, Any] = {
        "rules": [
            {
                "host": ingress.host,
                "http": {"paths": [{"path": ingress.path, "pathType": "Prefix", "backend": backend}]},
            }
        ]
    }
    if ingress.class_name:
        body["ingressClassName"] = ingress.class_name
    if ingress.tls_secret_name:
        body["tls"] = [{"hosts": [ingress.host], "secretName": ingress.tls_secret_name}]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": metadata(owner, owner.child_name(), COMPONENT),
        "spec": body,
    }


def build_service_monitor(owner: Owner, spec: ModelDeploymentSpec) -> dict[str, Any] | None:
    """A Prometheus Operator ServiceMonitor scraping ``/metrics``, if the spec asks for one."""
    if not spec.monitoring.service_monitor:
        return None
    endpoint = {"port": "http", "path": "/metrics", "interval": f"{spec.monitoring.interval_seconds}s"}
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": metadata(owner, owner.child_name(), COMPONENT),
        "spec": {"selector": {"matchLabels": selector_labels(owner)}, "endpoints": [endpoint]},
    }


def build_children(
    owner: Owner, spec: ModelDeploymentSpec, model: ServedModel, image: str, *, keda: bool = False
) -> list[dict[str, Any]]:
    """Every child, in the order they must exist; ``keda``: the cluster serves KEDA's ScaledObject."""
    scaled_object = build_server_scaled_object(owner, spec) if keda else None
    optional = [
        scaled_object or build_server_autoscaler(owner, spec),
        build_server_ingress(owner, spec),
        build_service_monitor(owner, spec),
    ]
    return [
        build_server_config_map(owner, spec, model),
        build_server_deployment(owner, spec, model, image),
        build_server_service(owner, spec),
        *(child for child in optional if child is not None),
    ]
