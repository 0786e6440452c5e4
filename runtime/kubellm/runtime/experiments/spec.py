"""Reading what ``kubellm experiment --config FILE`` is given: a PromptExperiment manifest or its spec.

The experiment definition is parsed with the runtime's own :class:`ExperimentConfig`; the
target (where requests go) with a small tolerant model here, since the runtime never imports
the operator's API package. Pod-level fields of the spec (image, resources, ...) are the
operator's business and are ignored; any other unknown field is reported as a warning.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.alias_generators import to_camel

from kubellm.runtime.config import ExperimentConfig

__all__ = [
    "API_KEY_VARIABLES",
    "KIND",
    "ExperimentJob",
    "SpecError",
    "TargetSettings",
    "load_experiment",
    "resolve_endpoint",
]

KIND = "PromptExperiment"
API_KEY_VARIABLES = ("KUBELLM_TARGET_API_KEY", "OPENAI_API_KEY")
"""Environment variables read, in order, for the server's API key (the pod maps the Secret there)."""
_POD_FIELDS = frozenset({"image", "resources", "nodeSelector", "tolerations", "timeoutSeconds", "target"})


class SpecError(ValueError):
    """The configuration file cannot be used; the message says why in one line."""


class TargetSettings(BaseModel):
    """The parts of ``spec.target`` the runtime needs."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    url: str | None = None
    model: str | None = None
    api: Literal["chat", "completions"] = "chat"
    model_deployment_ref: dict[str, Any] | None = None


@dataclass(frozen=True)
class ExperimentJob:
    """A parsed configuration file."""

    name: str
    config: ExperimentConfig
    target: TargetSettings
    ignored_fields: tuple[str, ...]


def _read(path: Path) -> list[Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise SpecError(f"{path}: cannot read: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise SpecError(f"{path}: not UTF-8 text") from None
    try:
        return [document for document in yaml.safe_load_all(text) if document is not None]
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise SpecError(f"{path}: not valid YAML or JSON{where}: {problem}") from None


def _spec_of(path: Path, documents: list[Any]) -> tuple[str, Mapping[str, Any]]:
    """The spec and the experiment's name, from a manifest or a bare spec."""
    manifests = [d for d in documents if isinstance(d, dict) and "kind" in d]
    chosen = [d for d in manifests if d.get("kind") == KIND]
    if manifests and not chosen:
        raise SpecError(f"{path}: no {KIND} manifest (found {', '.join(sorted({str(d['kind']) for d in manifests}))})")
    if len(chosen) > 1 or (not chosen and len(documents) != 1):
        raise SpecError(f"{path}: expected one {KIND} manifest or one spec, found {len(chosen) or len(documents)}")
    if chosen:
        metadata = chosen[0].get("metadata") or {}
        spec = chosen[0].get("spec")
        name = str(metadata.get("name", path.stem)) if isinstance(metadata, dict) else path.stem
    else:
        spec, name = documents[0], path.stem
    if not isinstance(spec, dict):
        raise SpecError(f"{path}: the {KIND} spec must be a mapping")
    return name, spec


def _experiment_keys() -> frozenset[str]:
    keys = set()
    for name, info in ExperimentConfig.model_fields.items():
        keys.update({name, info.alias or to_camel(name)})
    return frozenset(keys)


def _first_error(error: ValidationError, prefix: str) -> str:
    first = error.errors()[0]
    location = ".".join(str(part) for part in first["loc"])
    message = str(first["msg"]).removeprefix("Value error, ")
    more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
    return f"{prefix}{'.' + location if location else ''}: {message}{more}"


def load_experiment(path: Path) -> ExperimentJob:
    """Parse ``path``: YAML or JSON, a PromptExperiment manifest or just its spec."""
    name, spec = _spec_of(path, _read(path))
    keys = _experiment_keys()
    try:
        config = ExperimentConfig.model_validate({k: v for k, v in spec.items() if k in keys})
    except ValidationError as error:
        raise SpecError(_first_error(error, f"{path}: invalid spec")) from None
    try:
        target = TargetSettings.model_validate(spec.get("target") or {})
    except ValidationError as error:
        raise SpecError(_first_error(error, f"{path}: invalid spec.target")) from None
    ignored = tuple(sorted(key for key in spec if key not in keys and key not in _POD_FIELDS))
    return ExperimentJob(name=name, config=config, target=target, ignored_fields=ignored)


def resolve_endpoint(target: TargetSettings, override: str | None) -> str:
    """The base URL to send to: ``--endpoint``, else ``target.url``; ``/v1`` added to a bare host."""
    url = override or target.url
    if url is None:
        ref = (target.model_deployment_ref or {}).get("name", "?")
        raise SpecError(f"no endpoint: target.modelDeploymentRef ({ref}) needs --endpoint with its Service URL")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise SpecError(f"endpoint {url!r} is not an http(s) URL")
    path = parts.path.rstrip("/") or "/v1"
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def api_key_from_environment() -> str | None:
    """The API key, from the first of :data:`API_KEY_VARIABLES` that is set."""
    return next((os.environ[name] for name in API_KEY_VARIABLES if os.environ.get(name)), None)
