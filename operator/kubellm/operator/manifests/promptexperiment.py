"""PromptExperiment -> ConfigMap (experiment definition), report objects and a ``kubellm experiment`` Job.

The results travel back through the report ConfigMap (:mod:`kubellm.operator.manifests.reporting`):
the runtime writes ``result.json`` (the status payload) and ``report.md`` there.
"""

from __future__ import annotations

from typing import Any

from kubellm.operator.api.promptexperiment import PromptExperimentSpec
from kubellm.operator.manifests.common import (
    CONFIG_DIR,
    CONFIG_FILE,
    CONFIG_HASH_ANNOTATION,
    Owner,
    config_hash,
    config_map,
    metadata,
    pod_failure_policy,
    pod_spec,
    runtime_container,
    secret_env,
)
from kubellm.operator.manifests.reporting import build_report_children, report_env, report_name
from kubellm.runtime.config import EXPERIMENT_EXIT_BAD_INPUT

__all__ = [
    "COMPONENT",
    "OUTPUT_DIR",
    "build_children",
    "build_experiment_config_map",
    "build_experiment_job",
    "config_map_name",
    "job_name",
]

COMPONENT = "experiment"
OUTPUT_DIR = "/tmp/kubellm-experiment"


def config_map_name(owner: Owner) -> str:
    """The ConfigMap with ``config.yaml`` for ``kubellm experiment``."""
    return owner.child_name("config")


def job_name(owner: Owner) -> str:
    """The experiment Job: the PromptExperiment's own name."""
    return owner.child_name()


def experiment_config(spec: PromptExperimentSpec, model: str) -> dict[str, Any]:
    """What ``kubellm experiment --config`` reads: the experiment definition plus the model and API to use."""
    return {**spec.experiment_config().dump(), "target": {"model": model, "api": spec.target.api}}


def build_experiment_config_map(owner: Owner, spec: PromptExperimentSpec, model: str) -> dict[str, Any]:
    """The ConfigMap holding the experiment definition."""
    return config_map(owner, config_map_name(owner), COMPONENT, experiment_config(spec, model))


def build_experiment_job(
    owner: Owner, spec: PromptExperimentSpec, endpoint: str, model: str, image: str
) -> dict[str, Any]:
    """The Job: one pod sending every variant to ``endpoint`` and reporting into the report ConfigMap."""
    args = ["experiment", "--config", f"{CONFIG_DIR}/{CONFIG_FILE}", "--endpoint", endpoint, "--output", OUTPUT_DIR]
    env = [*secret_env("KUBELLM_TARGET_API_KEY", spec.target.api_key_secret_ref), *report_env(owner)]
    container = runtime_container(spec, image, args, env, [])
    cm_hash = config_hash(build_experiment_config_map(owner, spec, model)["data"])
    template = {
        "metadata": {
            "labels": metadata(owner, "", COMPONENT)["labels"],
            "annotations": {CONFIG_HASH_ANNOTATION: cm_hash},
        },
        "spec": pod_spec(
            spec,
            container,
            config_map_name(owner),
            [],
            restartPolicy="Never",
            serviceAccountName=report_name(owner),
            automountServiceAccountToken=True,
        ),
    }
    job_spec = {
        "backoffLimit": 1,
        "activeDeadlineSeconds": spec.timeout_seconds,
        "podFailurePolicy": pod_failure_policy([EXPERIMENT_EXIT_BAD_INPUT]),
        "template": template,
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata(owner, job_name(owner), COMPONENT),
        "spec": job_spec,
    }


def build_children(
    owner: Owner, spec: PromptExperimentSpec, endpoint: str, model: str, image: str
) -> list[dict[str, Any]]:
    """Every child, in the order they must exist (the Job last)."""
    return [
        build_experiment_config_map(owner, spec, model),
        *build_report_children(owner, COMPONENT),
        build_experiment_job(owner, spec, endpoint, model, image),
    ]
