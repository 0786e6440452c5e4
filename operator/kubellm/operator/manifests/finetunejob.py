"""FineTuneJob -> ConfigMap (runtime config), report objects and a Job running ``kubellm train``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kubellm.contract.schema import run_document
from kubellm.contract.training import (
    AUGMENTATION_API_KEY_ENV,
    DDP_BACKEND_ENV,
    DISTRIBUTED_LAUNCHER,
    INVALID_INPUT_EXIT_CODES,
    AugmentationServer,
    FineTuneSections,
    OutputLocation,
    TrainingRun,
)
from kubellm.operator.api.common import SecretKeyRef
from kubellm.operator.api.finetunejob import FineTuneJobSpec
from kubellm.operator.manifests.common import (
    CONFIG_DIR,
    CONFIG_FILE,
    CONFIG_HASH_ANNOTATION,
    GPU_RESOURCE,
    Owner,
    claim_volumes,
    config_hash,
    config_map,
    metadata,
    pod_failure_policy,
    pod_spec,
    pvc_claims,
    runtime_container,
    secret_env,
)
from kubellm.operator.manifests.reporting import build_report_children, report_env, report_name

__all__ = [
    "COMPONENT",
    "RENDEZVOUS_PORT",
    "AugmentationEndpoint",
    "build_children",
    "build_training_config_map",
    "build_training_job",
    "build_workers_service",
    "config_map_name",
    "is_distributed",
    "job_name",
    "output_path",
    "output_uri",
    "workers_service_name",
]

COMPONENT = "training"
RENDEZVOUS_PORT = 29500


@dataclass(frozen=True)
class AugmentationEndpoint:
    """The server ``dataAugmentation.modelDeploymentRef`` resolved to, and the Secret key of its API key."""

    server: AugmentationServer
    api_key_secret_ref: SecretKeyRef | None = None


def config_map_name(owner: Owner) -> str:
    """The ConfigMap with ``config.yaml`` for ``kubellm train``."""
    return owner.child_name("config")


def job_name(owner: Owner) -> str:
    """The training Job: the FineTuneJob's own name."""
    return owner.child_name()


def workers_service_name(owner: Owner) -> str:
    """The headless Service giving a distributed run's pods stable host names (``<job>-<index>.<service>``)."""
    return owner.child_name("workers")


def is_distributed(spec: FineTuneJobSpec) -> bool:
    """Whether the run spans several processes (an Indexed Job of torchrun pods)."""
    return spec.distributed.nodes > 1 or spec.distributed.processes_per_node > 1


def output_path(owner: Owner, spec: FineTuneJobSpec) -> str:
    """Folder inside the output claim (default: the FineTuneJob's name)."""
    return spec.output.pvc.path or owner.name


def output_uri(owner: Owner, spec: FineTuneJobSpec) -> str:
    """Where the result lands, as a source URI a ModelDeployment can load."""
    return f"pvc://{spec.output.pvc.claim_name}/{output_path(owner, spec)}"


def training_run(owner: Owner, spec: FineTuneJobSpec, augmentation: AugmentationEndpoint | None = None) -> TrainingRun:
    """What ``kubellm train --config`` reads: the spec's sections, the output folder filled in.

    A ``dataAugmentation.modelDeploymentRef`` needs its resolved ``augmentation`` endpoint: the pod
    reads the server's URL and model name from ``augmentationServer``.
    """
    sections = {name: getattr(spec, name) for name in FineTuneSections.model_fields}
    output = OutputLocation(pvc=spec.output.pvc.model_copy(update={"path": output_path(owner, spec)}))
    augmenting, server = spec.data_augmentation, None
    if augmenting is not None and augmenting.model_deployment_ref is not None:
        if augmentation is None:
            raise ValueError("dataAugmentation.modelDeploymentRef has to be resolved to a server first")
        # the reference and its model name become the server they resolved to
        augmenting = augmenting.model_copy(update={"model_deployment_ref": None, "model": None})
        server = augmentation.server
    resolved = {**sections, "output": output, "data_augmentation": augmenting}
    return TrainingRun(**resolved, augmentation_server=server)


def build_training_config_map(
    owner: Owner, spec: FineTuneJobSpec, augmentation: AugmentationEndpoint | None = None
) -> dict[str, Any]:
    """The ConfigMap holding the training configuration."""
    return config_map(owner, config_map_name(owner), COMPONENT, run_document(training_run(owner, spec, augmentation)))


def _env(owner: Owner, spec: FineTuneJobSpec, augmentation: AugmentationEndpoint | None) -> list[dict[str, Any]]:
    token = spec.base_model.token_secret_ref or spec.dataset.token_secret_ref
    env = secret_env("HF_TOKEN", token)
    if spec.dataset.token_secret_ref and spec.dataset.token_secret_ref != token:
        env += secret_env("HF_DATASET_TOKEN", spec.dataset.token_secret_ref)
    if augmentation is not None:
        env += secret_env(AUGMENTATION_API_KEY_ENV, augmentation.api_key_secret_ref)
    return [*env, *report_env(owner)]


def _torchrun_args(owner: Owner, spec: FineTuneJobSpec, train_args: list[str]) -> list[str]:
    """torchrun, c10d rendezvous on pod 0, running the same ``kubellm train`` in every process.

    ``$(JOB_COMPLETION_INDEX)`` is expanded by the kubelet from the env var the Job controller
    sets on an Indexed Job's pods. ``--max-restarts 0``: a broken group fails its pods, and the
    Job (not torchrun) starts them again, resuming from the last checkpoint.
    """
    endpoint = f"{job_name(owner)}-0.{workers_service_name(owner)}:{RENDEZVOUS_PORT}"
    return [
        "--nnodes", str(spec.distributed.nodes),
        "--nproc-per-node", str(spec.distributed.processes_per_node),
        "--node-rank", "$(JOB_COMPLETION_INDEX)",
        "--rdzv-backend", "c10d",
        "--rdzv-endpoint", endpoint,
        "--rdzv-id", owner.uid,
        "--max-restarts", "0",
        "-m", "kubellm.cli",
        *train_args,
    ]  # fmt: skip


def _distribute(owner: Owner, spec: FineTuneJobSpec, container: dict[str, Any]) -> None:
    """Turn the one-process container into a torchrun agent (in place).

    The launcher is torchrun keeping a worker's bad-input exit code (torchrun alone exits 1), so
    the podFailurePolicy still fails the Job at once on a bad config or a failed data check.
    """
    container["command"] = ["python", "-m", DISTRIBUTED_LAUNCHER]
    container["args"] = _torchrun_args(owner, spec, container["args"])
    container["env"].append({"name": DDP_BACKEND_ENV, "value": "nccl" if spec.has_gpu() else "gloo"})
    container["ports"] = [{"name": "rendezvous", "containerPort": RENDEZVOUS_PORT, "protocol": "TCP"}]
    if spec.has_gpu():  # one GPU per process
        for section in container.get("resources", {}).values():
            if GPU_RESOURCE in section:
                section[GPU_RESOURCE] = str(spec.distributed.processes_per_node)


def _distributed_job_spec(owner: Owner, spec: FineTuneJobSpec, job_spec: dict[str, Any]) -> dict[str, Any]:
    """An Indexed Job: one pod per node, each a torchrun agent; the group fails and retries together.

    When one pod fails, its peers lose the group and fail too, so a retry costs up to ``nodes``
    pod failures: the Job's ``backoffLimit`` is the spec's ``backoffLimit`` times ``nodes``
    (``backoffLimitPerIndex`` would retry one index alone, which cannot rejoin a running group).
    """
    nodes = spec.distributed.nodes
    job_spec["template"]["spec"]["subdomain"] = workers_service_name(owner)
    return {
        **job_spec,
        "backoffLimit": spec.backoff_limit * nodes,
        "completionMode": "Indexed",
        "completions": nodes,
        "parallelism": nodes,
    }


def build_workers_service(owner: Owner) -> dict[str, Any]:
    """Headless Service over the run's pods: DNS names for the rendezvous, ready or not."""
    selector = metadata(owner, "", COMPONENT)["labels"]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(owner, workers_service_name(owner), COMPONENT),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": selector,
            "ports": [
                {"name": "rendezvous", "port": RENDEZVOUS_PORT, "targetPort": RENDEZVOUS_PORT, "protocol": "TCP"}
            ],
        },
    }


def build_training_job(
    owner: Owner, spec: FineTuneJobSpec, image: str, augmentation: AugmentationEndpoint | None = None
) -> dict[str, Any]:
    """The Job: one pod running ``kubellm train`` (or, distributed, an Indexed Job of torchrun pods)."""
    claim = spec.output.pvc.claim_name
    read_claims = pvc_claims([spec.base_model.uri, spec.dataset.uri])
    volumes, mounts = claim_volumes(read_claims, writable=[claim])
    args = ["train", "--config", f"{CONFIG_DIR}/{CONFIG_FILE}"]
    container = runtime_container(spec, image, args, _env(owner, spec, augmentation), mounts)
    if is_distributed(spec):
        _distribute(owner, spec, container)
    cm_hash = config_hash(build_training_config_map(owner, spec, augmentation)["data"])
    template = {
        "metadata": {
            "labels": metadata(owner, "", COMPONENT)["labels"],
            "annotations": {CONFIG_HASH_ANNOTATION: cm_hash},
        },
        "spec": pod_spec(
            spec,
            container,
            config_map_name(owner),
            volumes,
            restartPolicy="Never",
            serviceAccountName=report_name(owner),
            automountServiceAccountToken=True,
        ),
    }
    job_spec: dict[str, Any] = {
        "backoffLimit": spec.backoff_limit,
        "podFailurePolicy": pod_failure_policy(INVALID_INPUT_EXIT_CODES),
        "template": template,
    }
    if spec.active_deadline_seconds is not None:
        job_spec["activeDeadlineSeconds"] = spec.active_deadline_seconds
    if is_distributed(spec):
        job_spec = _distributed_job_spec(owner, spec, job_spec)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata(owner, job_name(owner), COMPONENT),
        "spec": job_spec,
    }


def build_children(
    owner: Owner, spec: FineTuneJobSpec, image: str, augmentation: AugmentationEndpoint | None = None
) -> list[dict[str, Any]]:
    """Every child, in the order they must exist (the Job last: its pod needs the rest)."""
    return [
        build_training_config_map(owner, spec, augmentation),
        *build_report_children(owner, COMPONENT),
        *([build_workers_service(owner)] if is_distributed(spec) else []),
        build_training_job(owner, spec, image, augmentation),
    ]
