"""Run documents from the manifests tests write: what the operator would put in a pod's ConfigMap.

Tests keep whole manifests (they read like the examples); a pod command (``kubellm train`` or
``kubellm experiment``) is given the run document of one, as a pod is. Only the fields of the
run document are kept: the pod and Job options are the operator's.
"""

from __future__ import annotations

from typing import Any

from kubellm.contract.experiments import ExperimentConfig
from kubellm.contract.schema import ConfigModel
from kubellm.contract.training import TrainingRun

__all__ = ["run_document"]


def _keys(model: type[ConfigModel]) -> set[str]:
    return {field.alias or name for name, field in model.model_fields.items()}


def run_document(manifest: dict[str, Any]) -> dict[str, Any]:
    """The run document of a FineTuneJob or PromptExperiment manifest (its target's URL and model kept)."""
    spec: dict[str, Any] = manifest["spec"]
    if manifest["kind"] == "FineTuneJob":
        return {key: value for key, value in spec.items() if key in _keys(TrainingRun)}
    if manifest["kind"] == "PromptExperiment":
        definition = {key: value for key, value in spec.items() if key in _keys(ExperimentConfig)}
        target = {key: value for key, value in spec.get("target", {}).items() if key in ("url", "model", "api")}
        return {**definition, "name": manifest["metadata"]["name"], "target": target}
    raise ValueError(f"no run document for a {manifest['kind']} here")
