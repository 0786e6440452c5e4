"""Manifests for ``kubellm run``: read from files or a folder, validated as the API server would, ordered.

A FineTuneJob, ModelDeployment or PromptExperiment is checked with the same models the CRDs
are generated from; PersistentVolumeClaims become local folders, Secrets feed the pods'
``secretKeyRef`` variables, ConfigMaps the volumes that mount them (a PromptExperiment's
dataset), anything else is listed as skipped. References between resources
must be satisfiable by the manifests given (nothing else exists locally). Problems are raised
as one :class:`ManifestError` listing every one of them, before anything runs.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from kubellm.operator.api import finetunejob as ftj
from kubellm.operator.api import modeldeployment as mdep
from kubellm.operator.api import promptexperiment as pexp
from kubellm.operator.api.common import API_VERSION, KindInfo
from kubellm.operator.manifests.common import Owner

__all__ = [
    "DEFAULT_NAMESPACE",
    "KINDS",
    "ManifestError",
    "ManifestSet",
    "Resource",
    "load_manifests",
    "manifest_files",
]

DEFAULT_NAMESPACE = "default"
KINDS: dict[str, KindInfo] = {info.kind: info for info in (ftj.INFO, mdep.INFO, pexp.INFO)}
"""The kinds ``kubellm run`` runs, in their usual dependency order (a reference can reorder two resources)."""
SUFFIXES = (".yaml", ".yml", ".json")
NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
MAX_ERRORS_PER_RESOURCE = 5


class ManifestError(Exception):
    """Manifests that cannot run; the message lists every problem, one per line."""


@dataclass(frozen=True)
class Resource:
    """One kubellm custom resource, parsed."""

    source: str
    body: dict[str, Any]
    spec: Any

    @property
    def kind(self) -> str:
        """The resource's kind."""
        return str(self.body["kind"])

    @property
    def name(self) -> str:
        """metadata.name."""
        return str(self.body["metadata"]["name"])

    @property
    def namespace(self) -> str:
        """metadata.namespace, or the default namespace."""
        return str(self.body["metadata"].get("namespace") or DEFAULT_NAMESPACE)

    @property
    def owner(self) -> Owner:
        """The owner its children name (a stable local uid instead of the API server's)."""
        uid = hashlib.sha256(f"{self.kind}/{self.namespace}/{self.name}".encode()).hexdigest()[:32]
        return Owner(kind=self.kind, name=self.name, namespace=self.namespace, uid=f"local-{uid}")


@dataclass
class ManifestSet:
    """What the manifests ask for, in the order it must run."""

    resources: list[Resource] = field(default_factory=list)
    claims: list[str] = field(default_factory=list)
    secrets: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    config_maps: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)

    def of_kind(self, kind: str) -> list[Resource]:
        """The resources of one kind, in file order."""
        return [r for r in self.resources if r.kind == kind]

    def find(self, kind: str, namespace: str, name: str) -> Resource | None:
        """The resource of that kind and name, if the manifests have it."""
        return next((r for r in self.of_kind(kind) if (r.namespace, r.name) == (namespace, name)), None)


def manifest_files(path: Path) -> list[Path]:
    """A file, or the ``.yaml``/``.yml``/``.json`` files of a folder (not recursive), sorted."""
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.suffix in SUFFIXES and p.is_file())
    if path.is_file():
        return [path]
    raise ManifestError(f"{path}: no such file or folder")


def _documents(path: Path) -> list[tuple[str, dict[str, Any]]]:
    try:
        loaded = list(yaml.safe_load_all(path.read_text()))
    except (OSError, UnicodeDecodeError) as error:
        raise ManifestError(f"{path}: cannot read it: {error}") from error
    except yaml.YAMLError as error:
        raise ManifestError(f"{path}: not valid YAML: {str(error).splitlines()[0]} {_position(error)}") from error
    documents = []
    for index, document in enumerate(loaded, start=1):
        if document is None:
            continue
        source = f"{path} (document {index})"
        if not isinstance(document, dict) or not isinstance(document.get("kind"), str):
            raise ManifestError(f"{source}: not a Kubernetes object (a mapping with apiVersion and kind)")
        documents.append((source, document))
    return documents


def _position(error: yaml.YAMLError) -> str:
    mark = getattr(error, "problem_mark", None)
    return f"(line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""


def _field_path(location: Iterable[int | str]) -> str:
    path = "spec"
    for part in location:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def _spec_problems(info: KindInfo, body: dict[str, Any]) -> tuple[BaseModel | None, list[str]]:
    try:
        return info.spec.model_validate(body.get("spec") or {}), []
    except ValidationError as error:
        problems = [f"{_field_path(e['loc'])}: {e['msg']}" for e in error.errors()]
        extra = len(problems) - MAX_ERRORS_PER_RESOURCE
        return None, problems[:MAX_ERRORS_PER_RESOURCE] + ([f"... and {extra} more"] if extra > 0 else [])


def _metadata_problems(info: KindInfo, body: dict[str, Any]) -> list[str]:
    if body.get("apiVersion") != API_VERSION:
        return [f"apiVersion must be {API_VERSION}, got {body.get('apiVersion')!r}"]
    name = (body.get("metadata") or {}).get("name")
    if not isinstance(name, str) or not name:
        return ["metadata.name is required"]
    if not NAME.match(name) or len(name) > info.name_max_length:
        return [
            f"metadata.name {name!r} must be at most {info.name_max_length} lowercase letters, digits or '-', "
            "starting and ending with a letter or digit"
        ]
    return []


def _parse_resource(source: str, body: dict[str, Any]) -> Resource:
    info = KINDS[body["kind"]]
    problems = _metadata_problems(info, body)
    spec = None
    if not problems:
        spec, problems = _spec_problems(info, body)
    if problems:
        name = (body.get("metadata") or {}).get("name", "?")
        raise ManifestError("\n".join(f"{source}: {info.kind} {name}: {problem}" for problem in problems))
    return Resource(source=source, body=body, spec=spec)


def _secret_data(source: str, body: dict[str, Any]) -> dict[str, str]:
    data: dict[str, str] = {}
    try:
        for key, value in (body.get("data") or {}).items():
            data[key] = base64.b64decode(str(value), validate=True).decode()
    except ValueError as error:
        raise ManifestError(f"{source}: Secret data must be base64: {error}") from error
    data.update({key: str(value) for key, value in (body.get("stringData") or {}).items()})
    return data


def _add(result: ManifestSet, source: str, body: dict[str, Any]) -> None:
    kind = body["kind"]
    metadata = body.get("metadata") or {}
    name = str(metadata.get("name", "?"))
    if kind in KINDS:
        resource = _parse_resource(source, body)
        if result.find(kind, resource.namespace, resource.name) is not None:
            raise ManifestError(f"{source}: {kind} {name} is defined twice")
        result.resources.append(resource)
    elif kind == "PersistentVolumeClaim":
        result.claims.append(name)
    elif kind == "Secret":
        namespace = str(metadata.get("namespace") or DEFAULT_NAMESPACE)
        result.secrets[namespace, name] = _secret_data(source, body)
    elif kind == "ConfigMap":
        namespace = str(metadata.get("namespace") or DEFAULT_NAMESPACE)
        result.config_maps[namespace, name] = {key: str(value) for key, value in (body.get("data") or {}).items()}
    else:
        result.skipped.append(f"{kind} {name} ({source}): nothing to run locally")


def _references(resource: Resource) -> list[tuple[str, str]]:
    """(kind, name) of the resources this one needs first."""
    spec = resource.spec
    if resource.kind == mdep.KIND:
        refs = [spec.fine_tune_job_ref, *(a.fine_tune_job_ref for a in spec.adapters)]
        return [(ftj.KIND, ref.name) for ref in refs if ref is not None]
    if resource.kind == pexp.KIND:
        return [(mdep.KIND, name) for name in _experiment_servers(spec)]
    augmentation = spec.data_augmentation
    ref = augmentation.model_deployment_ref if augmentation is not None else None
    return [(mdep.KIND, ref.name)] if ref is not None else []


def _experiment_servers(spec: pexp.PromptExperimentSpec) -> list[str]:
    """The ModelDeployments a PromptExperiment uses: its target's, then its judges'."""
    refs = [spec.target.model_deployment_ref, *(s.judge.model_deployment_ref for s in spec.scorers if s.judge)]
    return list(dict.fromkeys(ref.name for ref in refs if ref is not None))


def _missing_hint(resource: Resource, kind: str, name: str) -> str:
    target = resource.spec.target.model_deployment_ref if resource.kind == pexp.KIND else None
    if resource.kind == pexp.KIND and (target is None or target.name != name):
        return (
            f"grades with ModelDeployment {name} (a judge scorer's modelDeploymentRef), which is not among the "
            "manifests (add it, or give the judge a url)"
        )
    return _MISSING_HINTS[resource.kind, kind].format(name=name)


_MISSING_HINTS = {
    (
        mdep.KIND,
        ftj.KIND,
    ): "serves FineTuneJob {name}, which is not among the manifests (add it, or give spec.model.uri)",
    (pexp.KIND, mdep.KIND): "targets ModelDeployment {name}, which is not among the manifests "
    "(add it, or give spec.target.url)",
    (ftj.KIND, mdep.KIND): "augments its data with ModelDeployment {name}, which is not among the manifests "
    "(add it, or leave out dataAugmentation.modelDeploymentRef to generate with the base model)",
}


def _dataset_problem(manifests: ManifestSet, resource: Resource) -> str | None:
    """Why a PromptExperiment's dataset ConfigMap key is not among the manifests, or None."""
    ref = resource.spec.dataset.config_map_key_ref if resource.kind == pexp.KIND else None
    if ref is None:
        return None
    data = manifests.config_maps.get((resource.namespace, ref.name))
    if data is None:
        return f"reads its dataset from ConfigMap {ref.name}, which is not among the manifests (add it)"
    if ref.key not in data:
        return f"reads its dataset from key {ref.key!r} of ConfigMap {ref.name}, which has no such key"
    return None


def _reference_problems(manifests: ManifestSet) -> list[str]:
    problems = []
    for resource in manifests.resources:
        for kind, name in _references(resource):
            if manifests.find(kind, resource.namespace, name) is None:
                hint = _missing_hint(resource, kind, name)
                problems.append(f"{resource.source}: {resource.kind} {resource.name} {hint}")
        dataset = _dataset_problem(manifests, resource)
        if dataset is not None:
            problems.append(f"{resource.source}: {resource.kind} {resource.name} {dataset}")
    return problems


def _dependency_order(resources: list[Resource]) -> list[Resource]:
    """Every resource after those it references; otherwise kind order, then file order."""
    rank = {id(r): (list(KINDS).index(r.kind), index) for index, r in enumerate(resources)}
    placed: list[Resource] = []
    waiting = sorted(resources, key=lambda r: rank[id(r)])
    while waiting:
        done = {(r.kind, r.namespace, r.name) for r in placed}
        ready = next((r for r in waiting if all((k, r.namespace, n) in done for k, n in _references(r))), None)
        if ready is None:
            names = ", ".join(f"{r.kind} {r.name}" for r in waiting)
            raise ManifestError(f"these resources reference each other in a cycle: {names}")
        placed.append(ready)
        waiting.remove(ready)
    return placed


def load_manifests(paths: Sequence[Path]) -> ManifestSet:
    """Every manifest under ``paths``, validated, kubellm resources in dependency order."""
    result = ManifestSet()
    errors = []
    for path in paths:
        for file in manifest_files(path):
            try:
                for source, body in _documents(file):
                    _add(result, source, body)
            except ManifestError as error:
                errors.append(str(error))
    if errors:
        raise ManifestError("\n".join(errors))
    problems = _reference_problems(result)
    if problems:
        raise ManifestError("\n".join(problems))
    result.resources = _dependency_order(result.resources)
    if not result.resources:
        raise ManifestError(f"no FineTuneJob, ModelDeployment or PromptExperiment in {', '.join(map(str, paths))}")
    return result
