"""PromptExperiment -> ConfigMap (experiment definition), report objects and a ``kubellm experiment`` Job.

The results travel back through the report ConfigMap (:mod:`kubellm.operator.manifests.reporting`):
the runtime writes ``result.json`` (the status payload) and ``report.md`` there.

A dataset named by ``configMapKeyRef`` is mounted (that key only) at
``/mnt/configmap/<name>/<key>``, and the run document names that file as the dataset's ``uri``;
a ``pvc://`` dataset's claim is mounted read-only; an ``hf://`` dataset is read by the pod, its
token from ``tokenSecretRef`` in ``HF_TOKEN``.

A judge scorer's ``modelDeploymentRef`` becomes, in the run document, the server it resolved to
(``url`` and ``model``, a :class:`JudgeEndpoint`); its API key (``apiKeySecretRef``, else the
ModelDeployment's) reaches the pod as ``KUBELLM_JUDGE_API_KEY_<SCORER NAME>``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kubellm.contract.experiments import (
    ExperimentConfig,
    ExperimentDataset,
    ExperimentRun,
    RunTarget,
    Scorer,
    judge_api_key_env,
)
from kubellm.contract.schema import EXIT_BAD_INPUT, SecretKeyRef, run_document
from kubellm.operator.api.promptexperiment import PromptExperimentSpec
from kubellm.operator.manifests.common import (
    CONFIG_DIR,
    CONFIG_FILE,
    CONFIG_HASH_ANNOTATION,
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
    "DATASET_CONFIG_MAP_ROOT",
    "OUTPUT_DIR",
    "JudgeEndpoint",
    "JudgeEndpoints",
    "build_children",
    "build_experiment_config_map",
    "build_experiment_job",
    "config_map_name",
    "dataset_file",
    "dataset_volumes",
    "job_name",
    "judge_env",
]

COMPONENT = "experiment"
OUTPUT_DIR = "/tmp/kubellm-experiment"
DATASET_CONFIG_MAP_ROOT = "/mnt/configmap"
"""Where a dataset's ConfigMap key is mounted: ConfigMap ``c``, key ``k`` at ``/mnt/configmap/c/k``."""
DATASET_VOLUME = "dataset"


@dataclass(frozen=True)
class JudgeEndpoint:
    """The server a judge scorer's ``modelDeploymentRef`` resolved to, and the Secret key of its API key."""

    url: str
    model: str
    api_key_secret_ref: SecretKeyRef | None = None


JudgeEndpoints = Mapping[str, JudgeEndpoint]
"""Per judge scorer name (those with a ``modelDeploymentRef``): where its ModelDeployment answers."""


def config_map_name(owner: Owner) -> str:
    """The ConfigMap with ``config.yaml`` for ``kubellm experiment``."""
    return owner.child_name("config")


def job_name(owner: Owner) -> str:
    """The experiment Job: the PromptExperiment's own name."""
    return owner.child_name()


def dataset_file(dataset: ExperimentDataset) -> str | None:
    """The file in the pod holding a ``configMapKeyRef`` dataset's rows (None for other sources)."""
    ref = dataset.config_map_key_ref
    return f"{DATASET_CONFIG_MAP_ROOT}/{ref.name}/{ref.key}" if ref is not None else None


def _resolved_dataset(dataset: ExperimentDataset) -> ExperimentDataset:
    """The dataset as the pod reads it: a ConfigMap key becomes the file it is mounted as."""
    path = dataset_file(dataset)
    if path is None:
        return dataset
    return dataset.model_copy(update={"config_map_key_ref": None, "uri": path})


def _resolved_scorer(scorer: Scorer, judges: JudgeEndpoints) -> Scorer:
    """A judge scorer as the pod reads it: its ModelDeployment reference becomes the URL and model it resolved to."""
    judge = scorer.judge
    if judge is None or judge.model_deployment_ref is None:
        return scorer
    if scorer.name not in judges:
        raise ValueError(f"scorer {scorer.name}: judge.modelDeploymentRef has to be resolved to a server first")
    server = judges[scorer.name]
    resolved = judge.model_copy(update={"model_deployment_ref": None, "url": server.url, "model": server.model})
    return scorer.model_copy(update={"judge": resolved})


def experiment_run(
    owner: Owner, spec: PromptExperimentSpec, endpoint: str, model: str, *, judges: JudgeEndpoints | None = None
) -> ExperimentRun:
    """What ``kubellm experiment --config`` reads: the definition, the name, the resolved endpoint and model.

    Each judge scorer with a ``modelDeploymentRef`` needs its resolved server in ``judges``.
    """
    definition = {name: getattr(spec, name) for name in ExperimentConfig.model_fields}
    definition["dataset"] = _resolved_dataset(spec.dataset)
    definition["scorers"] = [_resolved_scorer(scorer, judges or {}) for scorer in spec.scorers]
    target = RunTarget(url=endpoint, model=model, api=spec.target.api)
    return ExperimentRun(**definition, name=owner.name, target=target)


def dataset_volumes(dataset: ExperimentDataset) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Volumes and mounts for the dataset: its ConfigMap key, or its claim (read-only), or none."""
    ref = dataset.config_map_key_ref
    if ref is None:
        return claim_volumes(pvc_claims([dataset.uri]))
    items = [{"key": ref.key, "path": ref.key}]
    volume = {"name": DATASET_VOLUME, "configMap": {"name": ref.name, "items": items}}
    mount = {"name": DATASET_VOLUME, "mountPath": f"{DATASET_CONFIG_MAP_ROOT}/{ref.name}", "readOnly": True}
    return [volume], [mount]


def build_experiment_config_map(
    owner: Owner, spec: PromptExperimentSpec, endpoint: str, model: str, *, judges: JudgeEndpoints | None = None
) -> dict[str, Any]:
    """The ConfigMap holding the run document."""
    document = run_document(experiment_run(owner, spec, endpoint, model, judges=judges))
    return config_map(owner, config_map_name(owner), COMPONENT, document)


def judge_env(spec: PromptExperimentSpec, judges: JudgeEndpoints | None = None) -> list[dict[str, Any]]:
    """Each judge's API key from its Secret: the scorer's ``apiKeySecretRef``, else its ModelDeployment's."""
    env = []
    for scorer in spec.scorers:
        if scorer.judge is None:
            continue
        resolved = (judges or {}).get(scorer.name)
        ref = resolved.api_key_secret_ref if resolved is not None else scorer.judge.api_key_secret_ref
        env += secret_env(judge_api_key_env(scorer.name), ref)
    return env


def build_experiment_job(
    owner: Owner,
    spec: PromptExperimentSpec,
    endpoint: str,
    model: str,
    image: str,
    *,
    judges: JudgeEndpoints | None = None,
) -> dict[str, Any]:
    """The Job: one pod sending every variant to ``endpoint`` and reporting into the report ConfigMap."""
    args = ["experiment", "--config", f"{CONFIG_DIR}/{CONFIG_FILE}", "--output", OUTPUT_DIR]
    env = [
        *secret_env("KUBELLM_TARGET_API_KEY", spec.target.api_key_secret_ref),
        *secret_env("HF_TOKEN", spec.dataset.token_secret_ref),
        *judge_env(spec, judges),
        *report_env(owner),
    ]
    volumes, mounts = dataset_volumes(spec.dataset)
    container = runtime_container(spec, image, args, env, mounts)
    cm_hash = config_hash(build_experiment_config_map(owner, spec, endpoint, model, judges=judges)["data"])
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
    job_spec = {
        "backoffLimit": 1,
        "activeDeadlineSeconds": spec.timeout_seconds,
        "podFailurePolicy": pod_failure_policy([EXIT_BAD_INPUT]),
        "template": template,
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata(owner, job_name(owner), COMPONENT),
        "spec": job_spec,
    }


def build_children(
    owner: Owner,
    spec: PromptExperimentSpec,
    endpoint: str,
    model: str,
    image: str,
    *,
    judges: JudgeEndpoints | None = None,
) -> list[dict[str, Any]]:
    """Every child, in the order they must exist (the Job last)."""
    return [
        build_experiment_config_map(owner, spec, endpoint, model, judges=judges),
        *build_report_children(owner, COMPONENT),
        build_experiment_job(owner, spec, endpoint, model, image, judges=judges),
    ]
