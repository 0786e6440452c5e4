"""What ``kubellm train --config FILE`` reads: a FineTuneJob manifest, or just its spec.

The runtime never imports the operator, so :class:`TrainJob` declares the spec fields the
trainer uses with the runtime's own contract models (:mod:`kubellm.runtime.config`) and
accepts the pod and Job options (image, resources, ...) without using them: a whole spec
validates, and a misspelt field is still rejected.

The output folder is ``--output`` when given, else the spec's ``output.pvc`` mounted under the
PVC root (``/mnt/pvc/<claimName>/<path or the FineTuneJob's name>``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, model_validator

from kubellm.runtime.config import (
    AUGMENTATION_NEEDS_PROMPTS,
    AugmentationConfig,
    AugmentationServer,
    ConfigModel,
    DataQualityConfig,
    DatasetConfig,
    ModelSource,
    SearchConfig,
    TaskEvaluationConfig,
    TrainingConfig,
    model_section,
)
from kubellm.runtime.models.sources import pvc_root
from kubellm.runtime.training.errors import ConfigError

__all__ = ["KIND", "JobFile", "OutputLocation", "PvcFolder", "TrainJob", "load_job_file", "resolve_output"]

KIND = "FineTuneJob"


class PvcFolder(ConfigModel):
    """A folder in a PersistentVolumeClaim (mirrors the operator's PvcLocation)."""

    claim_name: str = Field(max_length=253)
    path: str | None = Field(default=None, max_length=512)


class OutputLocation(ConfigModel):
    """Where the result goes (mirrors the FineTuneJob's output)."""

    pvc: PvcFolder


class TrainJob(ConfigModel):
    """The parts of a FineTuneJob spec the trainer uses."""

    base_model: ModelSource
    dataset: DatasetConfig
    training: TrainingConfig
    data_quality: DataQualityConfig = model_section(DataQualityConfig, "Data checks and filters.")
    search: SearchConfig | None = None
    evaluation: TaskEvaluationConfig | None = None
    data_augmentation: AugmentationConfig | None = None
    augmentation_server: AugmentationServer | None = None
    """Where a ``dataAugmentation.modelDeploymentRef`` points: the operator (or ``kubellm run``) writes it."""
    output: OutputLocation | None = None
    # Pod and Job options: the operator's business, accepted so that a whole spec validates.
    image: Any = None
    resources: Any = None
    node_selector: Any = None
    tolerations: Any = None
    distributed: Any = None
    backoff_limit: Any = None
    active_deadline_seconds: Any = None

    @model_validator(mode="after")
    def _augmentation_usable(self) -> TrainJob:
        augmentation = self.data_augmentation
        if augmentation is not None and self.dataset.text_field is not None:
            raise ValueError(AUGMENTATION_NEEDS_PROMPTS.message)
        if augmentation is not None and augmentation.model_deployment_ref is not None and not self.augmentation_server:
            raise ValueError(
                "dataAugmentation.modelDeploymentRef is resolved by the operator or kubellm run; for kubellm train, "
                "add augmentationServer: {url, model} (the server's OpenAI-compatible base URL) to the config"
            )
        return self


@dataclass(frozen=True)
class JobFile:
    """A parsed configuration file."""

    job: TrainJob
    name: str | None
    """The FineTuneJob's metadata.name, when the file held a whole manifest."""


def load_job_file(path: Path) -> JobFile:
    """Read and validate a config file; every problem is a one-line :class:`ConfigError`."""
    documents = _documents(path)
    spec, name = _pick_spec(path, documents)
    try:
        return JobFile(job=TrainJob.model_validate(spec), name=name)
    except ValidationError as error:
        raise ConfigError(f"{path}: {_first_error(error)}") from None


def resolve_output(job_file: JobFile, override: Path | None) -> Path:
    """The output folder: the ``--output`` override, else the spec's PVC folder."""
    if override is not None:
        return override
    output = job_file.job.output
    if output is None:
        raise ConfigError("no output location: pass --output DIR or set spec.output.pvc")
    folder = output.pvc.path or job_file.name
    if folder is None:
        raise ConfigError("spec.output.pvc.path is required when the file holds only a spec (no metadata.name)")
    return pvc_root() / output.pvc.claim_name / folder


def _documents(path: Path) -> list[Any]:
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError(f"{path}: cannot read: {error.strerror or error}") from None
    try:
        if path.suffix == ".json":
            return [json.loads(text)]
        return [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except json.JSONDecodeError as error:
        raise ConfigError(f"{path}: invalid JSON at line {error.lineno}: {error.msg}") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: invalid YAML{where}: {getattr(error, 'problem', None) or error}") from None


def _pick_spec(path: Path, documents: list[Any]) -> tuple[Any, str | None]:
    jobs = [doc for doc in documents if isinstance(doc, dict) and doc.get("kind") == KIND]
    if len(jobs) > 1:
        raise ConfigError(f"{path}: holds {len(jobs)} FineTuneJobs; keep one per file")
    if jobs:
        metadata = jobs[0].get("metadata") or {}
        name = metadata.get("name") if isinstance(metadata, dict) else None
        return jobs[0].get("spec"), name if isinstance(name, str) else None
    if len(documents) != 1 or not isinstance(documents[0], dict) or "kind" in documents[0]:
        kinds = sorted({str(doc.get("kind")) for doc in documents if isinstance(doc, dict) and "kind" in doc})
        found = f" (found kinds: {', '.join(kinds)})" if kinds else ""
        raise ConfigError(f"{path}: expected a FineTuneJob manifest or a FineTuneJob spec mapping{found}")
    return documents[0], None


def _first_error(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "spec"
    more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
    return f"spec.{where}: {first['msg']}{more}"
