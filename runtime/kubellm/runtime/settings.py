"""How every command builds its settings: the run document, then the environment, then the flags.

A command declares its options once, as a pydantic-settings model (:class:`CommandOptions`):

- each field is a flag (``max_batch_size`` -> ``--max-batch-size``, its help the field's
  description, its choices the field's ``Literal``) and an environment variable
  (``KUBELLM_MAX_BATCH_SIZE``); a flag beats the variable, which beats the default;
- a field made with :func:`document_option` overrides one field of the run document
  (``--quantization`` sets ``serving.quantization``): its description and constraints are the
  document field's, and it is validated once, with the whole document, by the contract's model;
- a field with ``flag=False`` (secrets) is read only from the environment.

So one precedence holds everywhere: run document < environment < flag. Every problem
(an unreadable file, an invalid document, a bad variable or flag) is one :class:`ConfigError` line.
"""

from __future__ import annotations

import argparse
import json
import types
import typing
from pathlib import Path
from typing import Any, ClassVar, Literal, Self, TypeVar, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, SettingsConfigDict

from kubellm.contract.schema import ConfigModel
from kubellm.runtime.errors import ConfigError

__all__ = [
    "ENV_PREFIX",
    "CommandOptions",
    "add_arguments",
    "document_option",
    "load_document",
    "read_document",
    "validation_line",
]

ENV_PREFIX = "KUBELLM_"
RunT = TypeVar("RunT", bound=ConfigModel)


def document_option(run: type[ConfigModel], path: str, metavar: str | None = None) -> Any:
    """A field that overrides the run document's field at ``path`` (wire names, dot-separated).

    The flag's help is the document field's description (``metavar`` names its value in the
    help); a URI of a source given this way replaces the document's whole source (a revision
    belonged to the old one).
    """
    info = _field_at(run, path)
    extra: dict[str, Any] = {"document": path, **({"metavar": metavar} if metavar else {})}
    return FieldInfo(default=None, description=info.description, json_schema_extra=extra)


class CommandOptions(BaseSettings):
    """Base of a command's options: ``KUBELLM_*`` variables, overridden by the flags given."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", populate_by_name=True)

    command: ClassVar[str] = "kubellm"

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Self:
        """The options: flags given on the command line, else the environment, else the defaults."""
        given = {name: value for name, value in vars(args).items() if name in cls.model_fields and value is not None}
        try:
            return cls(**given)
        except ValidationError as error:
            raise ConfigError(validation_line(error, _option_name)) from None

    def apply(self, document: dict[str, Any]) -> dict[str, Any]:
        """``document`` (wire names) with every override that is set written into it."""
        result: dict[str, Any] = json.loads(json.dumps(document))
        for name, info in type(self).model_fields.items():
            path = _document_path(info)
            value = getattr(self, name)
            if path is not None and value is not None:
                _set(result, path, self.document_value(name, value))
        return result

    def document_value(self, name: str, value: Any) -> Any:
        """How an option's value is written into the document (a subclass converts list-valued flags)."""
        return value


def add_arguments(parser: argparse.ArgumentParser, options: type[CommandOptions]) -> None:
    """One flag per option, with the option's description as its help."""
    for name, info in options.model_fields.items():
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        if extra.get("flag") is False:
            continue
        flag = "--" + name.replace("_", "-")
        help_text = f"{info.description or ''} [env {ENV_PREFIX}{name.upper()}]"
        kind = _argparse_kind(info)
        if isinstance(extra.get("metavar"), str):
            kind["metavar"] = extra["metavar"]
        parser.add_argument(flag, dest=name, default=None, help=help_text, **kind)


def read_document(path: Path) -> dict[str, Any]:
    """A YAML or JSON file holding one mapping; anything else is one :class:`ConfigError` line."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"{path}: cannot read: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    try:
        documents = [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or error
        raise ConfigError(f"{path}: not valid YAML or JSON{where}: {problem}") from None
    if len(documents) != 1 or not isinstance(documents[0], dict):
        raise ConfigError(f"{path}: expected one mapping (a run document), found {_described(documents)}")
    if "kind" in documents[0] or "apiVersion" in documents[0]:
        raise ConfigError(
            f"{path}: is a {documents[0].get('kind', 'Kubernetes')} manifest, not a run document; "
            "run manifests with `kubellm run FILE`"
        )
    return documents[0]


def load_document(run: type[RunT], document: dict[str, Any], source: str) -> RunT:
    """``document`` validated as ``run``; the first problem is one :class:`ConfigError` line."""
    try:
        return run.model_validate(document)
    except ValidationError as error:
        raise ConfigError(f"{source}: {validation_line(error)}") from None


def validation_line(error: ValidationError, name: typing.Callable[[str], str] | None = None) -> str:
    """The first problem of ``error`` as ``where: what`` (and how many more)."""
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    if name is not None and where:
        where = name(where)
    message = str(first["msg"]).removeprefix("Value error, ")
    more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
    return f"{where or 'document'}: {message}{more}"


def _option_name(field: str) -> str:
    name = field.split(".", maxsplit=1)[0]
    return f"--{name.replace('_', '-')} / {ENV_PREFIX}{name.upper()}"


def _described(documents: list[Any]) -> str:
    if not documents:
        return "nothing"
    if len(documents) > 1:
        return f"{len(documents)} documents"
    return type(documents[0]).__name__


def _document_path(info: FieldInfo) -> str | None:
    extra = info.json_schema_extra
    path = extra.get("document") if isinstance(extra, dict) else None
    return path if isinstance(path, str) else None


def _set(document: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    node = document
    for key in parents:
        child = node.get(key)
        node[key] = child = child if isinstance(child, dict) else {}
        node = child
    if last == "uri" and node.get("uri") != value:
        node.clear()  # a new source: the old one's revision does not apply to it
    node[last] = value


def _field_at(run: type[BaseModel], path: str) -> FieldInfo:
    model: type[BaseModel] = run
    info: FieldInfo | None = None
    for key in path.split("."):
        info = next((i for n, i in model.model_fields.items() if key in (n, i.alias)), None)
        if info is None:
            raise KeyError(f"{run.__name__} has no field {path}")
        nested = _model_in(info.annotation)
        if nested is not None:
            model = nested
    assert info is not None
    return info


def _model_in(annotation: Any) -> type[BaseModel] | None:
    for candidate in (annotation, *get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _argparse_kind(info: FieldInfo) -> dict[str, Any]:
    annotation = _without_none(info.annotation)
    if annotation is bool:
        return {"action": "store_const", "const": True}
    if get_origin(annotation) is Literal:
        return {"choices": get_args(annotation)}
    if get_origin(annotation) is list:
        return {"action": "append"}
    if annotation in (int, float, Path):
        return {"type": annotation}
    return {}


def _without_none(annotation: Any) -> Any:
    if get_origin(annotation) in (types.UnionType, typing.Union):
        rest = [arg for arg in get_args(annotation) if arg is not type(None)]
        return rest[0] if len(rest) == 1 else annotation
    if get_origin(annotation) is typing.Annotated:
        return _without_none(get_args(annotation)[0])
    return annotation
