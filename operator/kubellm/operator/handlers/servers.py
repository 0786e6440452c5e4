"""A ModelDeployment reference resolved to its server: URL, model name and API key Secret.

Used by the kinds that send a model deployment requests (PromptExperiment's target, a
FineTuneJob's data augmentation). Before their Job exists they wait until the model
deployment is Ready; once it exists they resolve it without waiting, so a model deployment
that goes away afterwards does not stop them from converging.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kubellm.operator.api import modeldeployment as mdep_api
from kubellm.operator.api.common import API_VERSION, CONDITION_READY, SecretKeyRef
from kubellm.operator.handlers.common import Operator

__all__ = ["ModelDeploymentServer", "ServerNotReadyError", "resolve_server"]


class ServerNotReadyError(Exception):
    """The ModelDeployment is missing or not Ready."""


@dataclass(frozen=True)
class ModelDeploymentServer:
    """Where a ModelDeployment answers, in the cluster."""

    url: str
    """Base URL of its OpenAI-compatible API (the Service), ending in ``/v1``."""
    model: str
    api_key_secret_ref: SecretKeyRef | None = None


def _model_deployment(op: Operator, namespace: str, name: str, *, need_ready: bool) -> dict[str, Any]:
    found = op.kube.get(API_VERSION, mdep_api.KIND, namespace, name)
    if found is None:
        if need_ready:
            raise ServerNotReadyError(f"waiting for ModelDeployment {name} to exist")
        return {"metadata": {"name": name}, "spec": {}}
    if need_ready:
        status = mdep_api.ModelDeploymentStatus.model_validate(found.get("status") or {})
        ready = status.condition(CONDITION_READY)
        if ready is None or ready.status != "True":
            raise ServerNotReadyError(
                f"waiting for ModelDeployment {name} to be Ready ({ready.reason if ready else 'no status yet'})"
            )
    return found


def resolve_server(
    op: Operator, namespace: str, name: str, model: str | None = None, *, need_ready: bool
) -> ModelDeploymentServer:
    """The server of ModelDeployment ``name``; ``model`` overrides its served model name."""
    spec = _model_deployment(op, namespace, name, need_ready=need_ready).get("spec") or {}
    port = (spec.get("service") or {}).get("port", 80)
    key = spec.get("apiKeySecretRef")
    return ModelDeploymentServer(
        url=f"http://{name}.{namespace}.svc:{port}/v1",
        model=model or spec.get("servedModelName") or name,
        api_key_secret_ref=SecretKeyRef.model_validate(key) if key else None,
    )
