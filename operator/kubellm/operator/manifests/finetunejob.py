"""FineTuneJob -> ConfigMap (runtime config), report objects and a Job running ``kubellm train``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kubellm.operator.api.common import SecretKeyRef
from kubellm.operator.api.finetunejob import FineTuneJobSpec
from kubellm.operator.manifests.common import (
    CONFIG_DIR,
    CONFIG_FILE,
    CONFIG_HASH_ANNOTATION,
    PVC_ROOT,
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
from kubellm.runtime.config import (
    AUGMENTATION_API_KEY_ENV,
    TRAIN_EXIT_DATA_QUALITY,
    TRAIN_EXIT_INVALID,
    AugmentationServer,
)

__all__ = [
    "COMPONENT",
    "AugmentationEndpoint",
    "build_children",
    "build_training_config_map",
    "build_training_job",
    "config_map_name",
    "job_name",
    "output_path",
    "output_uri",
]

COMPONENT = "training"


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


def output_path(owner: Owner, spec: FineTuneJobSpec) -> str:
    """Folder inside the output claim (default: the FineTuneJob's name)."""
    return spec.output.pvc.path or owner.name


def output_uri(owner: Owner, spec: FineTuneJobSpec) -> str:
    """Where the result lands, as a source URI a ModelDeployment can load."""
    return f"pvc://{spec.output.pvc.claim_name}/{output_path(owner, spec)}"


def training_config(spec: FineTuneJobSpec, augmentation: AugmentationEndpoint | None = None) -> dict[str, Any]:
    """What ``kubellm train --config`` reads: the runtime sections of the spec, as the runtime models dump them.

    A ``dataAugmentation.modelDeploymentRef`` needs its resolved ``augmentation`` endpoint: the pod
    reads the server's URL and model name from ``augmentationServer``.
    """
    document: dict[str, Any] = {
        "baseModel": spec.base_model.dump(),
        "dataset": spec.dataset.dump(),
        "training": spec.training.dump(),
        "dataQuality": spec.data_quality.dump(),
        "distributed": spec.distributed.dump(),
    }
    if spec.search is not None:
        document["search"] = spec.search.dump()
    if spec.evaluation is not None:
        document["evaluation"] = spec.evaluation.dump()
    if spec.data_augmentation is not None:
        document["dataAugmentation"] = spec.data_augmentation.dump()
        if spec.data_augmentation.model_deployment_ref is not None:
            if augmentation is None:
                raise ValueError("dataAugmentation.modelDeploymentRef has to be resolved to a server first")
            document["augmentationServer"] = augmentation.server.dump()
    return document


def build_training_config_map(
    owner: Owner, spec: FineTuneJobSpec, augmentation: AugmentationEndpoint | None = None
) -> dict[str, Any]:
    """The ConfigMap holding the training configuration."""
    return config_map(owner, config_map_name(owner), COMPONENT, training_config(spec, augmentation))


def _env(owner: Owner, spec: FineTuneJobSpec, augmentation: AugmentationEndpoint | None) -> list[dict[str, Any]]:
    token = spec.base_model.token_secret_ref or spec.dataset.token_secret_ref
    env = secret_env("HF_TOKEN", token)
    if spec.dataset.token_secret_ref and spec.dataset.token_secret_ref != token:
        env += secret_env("HF_DATASET_TOKEN", spec.dataset.token_secret_ref)
    if augmentation is not None:
        env += secret_env(AUGMENTATION_API_KEY_ENV, augmentation.api_key_secret_ref)
    return [*env, *report_env(owner)]


def build_training_job(
    owner: Owner, spec: FineTuneJobSpec, image: str, augmentation: AugmentationEndpoint | None = None
) -> dict[str, Any]:
    """The Job: one pod running ``kubellm train``, writing into the output claim."""
    claim = spec.output.pvc.claim_name
    read_claims = pvc_claims([spec.base_model.uri, spec.dataset.uri])
    volumes, mounts = claim_volumes(read_claims, writable=[claim])
    args = [
        "train",
        "--config",
        f"{CONFIG_DIR}/{CONFIG_FILE}",
        "--output",
        f"{PVC_ROOT}/{claim}/{output_path(owner, spec)}",
    ]
    container = runtime_container(spec, image, args, _env(owner, spec, augmentation), mounts)
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
        "podFailurePolicy": pod_failure_policy([TRAIN_EXIT_INVALID, TRAIN_EXIT_DATA_QUALITY]),
        "template": template,
    }
    if spec.active_deadline_seconds is not None:
        job_spec["activeDeadlineSeconds"] = spec.active_deadline_seconds
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
        build_training_job(owner, spec, image, augmentation),
    ]
