"""What every builder shares: the owner, names, labels, pod security, volumes and the config hash.

Builders are pure: (custom resource) -> desired object dicts, ready for server-side apply.

Runtime pod contract (the runtime image reads this):

- ``/etc/kubellm/config.yaml``: the command's configuration (a ConfigMap the operator owns).
- ``pvc://<claim>/<path>`` URIs resolve to ``$KUBELLM_PVC_ROOT/<claim>/<path>``; every claim a
  spec names is mounted there (read-only unless the pod writes its output to it).
- Secrets arrive as environment variables from ``secretKeyRef`` (the operator never reads them):
  ``HF_TOKEN``, ``KUBELLM_API_KEY``, ``KUBELLM_REDIS_PASSWORD``, ``KUBELLM_TARGET_API_KEY``,
  ``KUBELLM_AUGMENTATION_API_KEY``.
- Reports go into a ConfigMap (see :mod:`kubellm.operator.manifests.reporting`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from kubellm.operator.api.common import API_VERSION, PVC_ROOT, SecretKeyRef, Toleration, WorkloadSpec

__all__ = [
    "CONFIG_DIR",
    "CONFIG_HASH_ANNOTATION",
    "GPU_RESOURCE",
    "MANAGED_BY",
    "PVC_ROOT",
    "Owner",
    "config_hash",
    "config_map",
    "labels",
    "pod_failure_policy",
    "pod_spec",
    "pvc_claims",
    "runtime_container",
    "secret_env",
]

MANAGED_BY = "kubellm-operator"
CONFIG_DIR = "/etc/kubellm"
CONFIG_FILE = "config.yaml"
CONFIG_HASH_ANNOTATION = "kubellm.io/config-hash"
CACHE_DIR = "/var/cache/kubellm"
GPU_RESOURCE = "nvidia.com/gpu"
RUN_AS_USER = 1000
RUNTIME_CONTAINER = "runtime"


@dataclass(frozen=True)
class Owner:
    """The custom resource the children belong to."""

    kind: str
    name: str
    namespace: str
    uid: str

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Owner:
        """The owner described by a custom resource's body."""
        meta = body["metadata"]
        return cls(kind=body["kind"], name=meta["name"], namespace=meta["namespace"], uid=meta["uid"])

    def reference(self) -> dict[str, Any]:
        """The controller owner reference children carry (garbage collection, no duplicates)."""
        return {
            "apiVersion": API_VERSION,
            "kind": self.kind,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }

    def child_name(self, suffix: str = "") -> str:
        """Deterministic child name: ``<name>`` or ``<name>-<suffix>``."""
        return f"{self.name}-{suffix}" if suffix else self.name


def labels(owner: Owner, component: str) -> dict[str, str]:
    """Recommended labels of every child; ``kubellm.io/<kind>`` doubles as the pod selector."""
    return {
        "app.kubernetes.io/name": "kubellm",
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/instance": owner.name,
        "app.kubernetes.io/managed-by": MANAGED_BY,
        f"kubellm.io/{owner.kind.lower()}": owner.name,
    }


def metadata(owner: Owner, name: str, component: str, **extra: Any) -> dict[str, Any]:
    """Child metadata: name, namespace, labels and the owner reference."""
    return {
        "name": name,
        "namespace": owner.namespace,
        "labels": labels(owner, component),
        "ownerReferences": [owner.reference()],
        **extra,
    }


def config_hash(data: Mapping[str, str]) -> str:
    """Short, stable hash of a ConfigMap's data; in a pod template it rolls the pods on change."""
    return hashlib.sha256(json.dumps(dict(data), sort_keys=True).encode()).hexdigest()[:16]


def config_map(owner: Owner, name: str, component: str, document: Mapping[str, Any]) -> dict[str, Any]:
    """A ConfigMap holding a runtime configuration as ``config.yaml`` (JSON is valid YAML)."""
    data = {CONFIG_FILE: json.dumps(dict(document), indent=2, sort_keys=True)}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata(owner, name, component), "data": data}


def secret_env(name: str, ref: SecretKeyRef | None) -> list[dict[str, Any]]:
    """An env var read from a Secret key by the kubelet (empty when there is no reference)."""
    if ref is None:
        return []
    return [{"name": name, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}}]


def pvc_claims(uris: Iterable[str | None]) -> list[str]:
    """The claims ``pvc://<claim>/...`` URIs name, sorted and unique (pure)."""
    return sorted({uri[len("pvc://") :].split("/", 1)[0] for uri in uris if uri and uri.startswith("pvc://")})


def _resources(spec: WorkloadSpec) -> dict[str, Any]:
    resources: dict[str, Any] = {}
    if spec.resources.requests:
        resources["requests"] = {k: str(v) for k, v in spec.resources.requests.items()}
    if spec.resources.limits:
        resources["limits"] = {k: str(v) for k, v in spec.resources.limits.items()}
    return resources


def runtime_container(
    spec: WorkloadSpec, image: str, args: list[str], env: list[dict[str, Any]], mounts: list[dict[str, Any]]
) -> dict[str, Any]:
    """The runtime container: image, args, env, resources, mounts, restricted security context."""
    container: dict[str, Any] = {
        "name": RUNTIME_CONTAINER,
        "image": spec.image or image,
        "args": args,
        "env": [
            {"name": "KUBELLM_PVC_ROOT", "value": PVC_ROOT},
            {"name": "HF_HOME", "value": f"{CACHE_DIR}/huggingface"},
            {"name": "KUBELLM_CACHE_DIR", "value": CACHE_DIR},  # converted models (GGUF files), kept across runs
            {"name": "KUBELLM_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            *env,
        ],
        "volumeMounts": [
            {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "cache", "mountPath": CACHE_DIR},
            *mounts,
        ],
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    resources = _resources(spec)
    if resources:
        container["resources"] = resources
    return container


def pod_failure_policy(invalid_input_codes: Iterable[int]) -> dict[str, Any]:
    """A Job ``podFailurePolicy``: preemption never counts, "your input is wrong" fails the Job at once.

    A pod evicted or preempted (condition ``DisruptionTarget``) is replaced without using up
    ``backoffLimit``; a runtime exit code in ``invalid_input_codes`` (bad config, data that fails
    its checks) fails the Job with reason ``PodFailurePolicy`` instead of retrying something that
    cannot work. Any other failure retries, up to ``backoffLimit``. Needs ``restartPolicy: Never``.
    """
    return {
        "rules": [
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
            {
                "action": "FailJob",
                "onExitCodes": {
                    "containerName": RUNTIME_CONTAINER,
                    "operator": "In",
                    "values": sorted(set(invalid_input_codes)),
                },
            },
        ]
    }


def _tolerations(spec: WorkloadSpec) -> list[dict[str, Any]]:
    tolerations = [t.dump() for t in spec.tolerations]
    gpu_tolerated = any(t.key == GPU_RESOURCE for t in spec.tolerations)
    if spec.has_gpu() and not gpu_tolerated:
        tolerations.append(Toleration(key=GPU_RESOURCE, operator="Exists", effect="NoSchedule").dump())
    return tolerations


def claim_volumes(
    claims: Iterable[str], writable: Iterable[str] = ()
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Volumes and mounts for PVC claims under :data:`PVC_ROOT` (read-only unless ``writable``)."""
    rw = set(writable)
    volumes, mounts = [], []
    for index, claim in enumerate(sorted(set(claims) | rw)):
        volume = f"pvc-{index}"
        # readOnly only when true: the API server drops a false one, which would look like drift.
        read_only = {"readOnly": True} if claim not in rw else {}
        volumes.append({"name": volume, "persistentVolumeClaim": {"claimName": claim, **read_only}})
        mounts.append({"name": volume, "mountPath": f"{PVC_ROOT}/{claim}", **read_only})
    return volumes, mounts


def pod_spec(
    spec: WorkloadSpec,
    container: dict[str, Any],
    config_map_name: str,
    volumes: list[dict[str, Any]],
    **extra: Any,
) -> dict[str, Any]:
    """A restricted pod: the container, config/tmp/cache volumes, node selector and tolerations."""
    pod: dict[str, Any] = {
        "containers": [container],
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS_USER,
            "runAsGroup": RUN_AS_USER,
            "fsGroup": RUN_AS_USER,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumes": [
            {"name": "config", "configMap": {"name": config_map_name}},
            {"name": "tmp", "emptyDir": {}},
            {"name": "cache", "emptyDir": {}},
            *volumes,
        ],
        **extra,
    }
    if spec.node_selector:
        pod["nodeSelector"] = dict(spec.node_selector)
    tolerations = _tolerations(spec)
    if tolerations:
        pod["tolerations"] = tolerations
    return pod
