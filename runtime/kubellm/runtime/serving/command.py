"""``kubellm serve``: what a ModelDeployment's pods run.

``kubellm serve [--config FILE] [--model SOURCE] [--adapter NAME=SOURCE ...] [--served-model-name NAME]
[--quantization MODE] [--host H] [--port P] [--redis-url URL] [--cache-ttl S] [--max-batch-size N]
[--max-batch-wait-ms MS] [--max-tokens-limit N] [--max-prompt-tokens N] [--torch-threads N]``

FILE is a ModelDeployment manifest, its spec, the configuration the operator writes
(``/etc/kubellm/config.yaml``) or a bare ServingConfig. Every flag can also be set as
``KUBELLM_<FLAG_IN_CAPS>`` (``KUBELLM_MAX_BATCH_SIZE=16``; ``KUBELLM_ADAPTER`` takes
comma-separated ``NAME=SOURCE`` pairs); flags beat the environment, which beats the file.
Secrets come only from the environment: ``KUBELLM_API_KEYS`` (comma-separated) or
``KUBELLM_API_KEY``, and ``KUBELLM_REDIS_PASSWORD``.

Bad input, including a model source that cannot work (a missing package or file, an unsupported
or truncated GGUF file, a Hub repository or revision that cannot be read), prints one line on
stderr and exits 2; any other failure to load the model exits 1.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from kubellm.runtime.config import ServingConfig
from kubellm.runtime.serving.settings import DEFAULT_PORT, AdapterSpec, ServerSettings

__all__ = ["ConfigError", "add_arguments", "build_settings", "default_torch_threads", "run"]

EXIT_BAD_INPUT = 2
EXIT_LOAD_FAILED = 1
QUANTIZATION_MODES = ("none", "fp16", "bf16", "int8", "int4")


class ConfigError(Exception):
    """Unusable configuration; the message is one line."""


def _env(flag: str) -> str | None:
    return os.environ.get("KUBELLM_" + flag.upper().replace("-", "_")) or None


def _int(flag: str) -> int | None:
    value = _env(flag)
    if value is None:
        return None
    if not value.isdigit():
        raise ConfigError(f"KUBELLM_{flag.upper().replace('-', '_')} must be a whole number, got {value!r}")
    return int(value)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command's options (defaults come from ``KUBELLM_*`` variables when set)."""
    parser.add_argument("--config", type=Path, help="ModelDeployment manifest, its spec, or a ServingConfig")
    parser.add_argument("--model", help="model source: hf://, file://, pvc://, a path or dummy://")
    parser.add_argument("--adapter", action="append", metavar="NAME=SOURCE", help="LoRA adapter (repeatable)")
    parser.add_argument("--served-model-name", help="name of the base model in the API (default: model)")
    parser.add_argument(
        "--base-model-name", help="when --model is a fine-tuned adapter: also serve its plain base model by this name"
    )
    parser.add_argument("--quantization", choices=QUANTIZATION_MODES, help="weight precision")
    parser.add_argument("--host", help="address to listen on (default: 0.0.0.0)")
    parser.add_argument("--port", type=int, help=f"port to listen on (default: {DEFAULT_PORT})")
    parser.add_argument("--redis-url", help="Redis response cache, e.g. redis://redis:6379/0 (default: in-process)")
    parser.add_argument("--cache-ttl", type=int, help="seconds a cached response lives")
    parser.add_argument("--max-batch-size", type=int, help="sequences decoded together")
    parser.add_argument("--max-batch-wait-ms", type=int, help="wait for more requests before starting a batch")
    parser.add_argument("--max-tokens-limit", type=int, help="largest max_tokens a request may ask for")
    parser.add_argument("--max-prompt-tokens", type=int, help="longest prompt accepted, in tokens")
    parser.add_argument("--torch-threads", type=int, help="CPU threads for torch (default: available cores - 1)")
    parser.add_argument("--log-level", default=_env("log-level") or "info", help="log level (default: info)")


# --- the configuration file ------------------------------------------------------------------


def _read_document(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError(f"{path}: cannot read: {error.strerror or error}") from None
    try:
        document = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as error:
        raise ConfigError(f"{path}: not valid YAML/JSON: {' '.join(str(error).split())[:200]}") from None
    if not isinstance(document, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return document


def _adapters(entries: Any) -> list[AdapterSpec]:
    adapters = []
    for entry in entries or []:
        if not isinstance(entry, dict) or "uri" not in entry:
            name = entry.get("name") if isinstance(entry, dict) else entry
            raise ConfigError(f"adapter {name!r} has no uri (a fineTuneJobRef is resolved by the operator)")
        adapters.append(AdapterSpec(name=entry.get("name", ""), uri=entry["uri"]))
    return adapters


def _from_document(document: dict[str, Any]) -> dict[str, Any]:
    """Settings fields found in a manifest, a spec, the operator's config or a ServingConfig."""
    fields: dict[str, Any] = {}
    if document.get("kind") == "ModelDeployment":
        name = (document.get("metadata") or {}).get("name")
        fields["served_model_name"] = name
        document = document.get("spec") or {}
    if not {"model", "serving", "adapters", "fineTuneJobRef", "servedModelName"} & document.keys():
        return {**fields, "serving": ServingConfig.model_validate(document)}
    model = document.get("model")
    if isinstance(model, dict):
        fields["model"], fields["model_revision"] = model.get("uri"), model.get("revision")
    elif document.get("fineTuneJobRef"):
        fields["finetune_ref"] = True
    fields["served_model_name"] = document.get("servedModelName") or fields.get("served_model_name")
    fields["adapters"] = _adapters(document.get("adapters"))
    fields["base_model_name"] = document.get("baseModelName")
    fields["serving"] = ServingConfig.model_validate(document.get("serving") or {})
    return fields


# --- flags and environment -----------------------------------------------------------------------


def _flag(args: argparse.Namespace, name: str) -> Any:
    value = getattr(args, name.replace("-", "_"), None)
    return value if value is not None else _env(name)


def _flag_int(args: argparse.Namespace, name: str) -> int | None:
    value = getattr(args, name.replace("-", "_"), None)
    return int(value) if value is not None else _int(name)


def _cli_adapters(args: argparse.Namespace) -> list[AdapterSpec] | None:
    pairs = args.adapter or ([p for p in (_env("adapter") or "").split(",") if p.strip()] or None)
    if pairs is None:
        return None
    adapters = []
    for pair in pairs:
        name, sep, uri = pair.strip().partition("=")
        if not sep or not name or not uri:
            raise ConfigError(f"--adapter expects NAME=SOURCE, got {pair!r}")
        adapters.append(AdapterSpec(name=name, uri=uri))
    return adapters


def _serving(args: argparse.Namespace, serving: ServingConfig) -> ServingConfig:
    data = serving.model_dump()
    limits, cache = data["limits"], data["cache"]
    data["quantization"] = _flag(args, "quantization") or data["quantization"]
    redis_url = _flag(args, "redis-url")
    if redis_url:
        cache.update(url=redis_url, enabled=True)
    overrides = {
        ("cache", "ttl_seconds"): _flag_int(args, "cache-ttl"),
        ("limits", "max_batch_size"): _flag_int(args, "max-batch-size"),
        ("limits", "batch_wait_ms"): _flag_int(args, "max-batch-wait-ms"),
        ("limits", "max_tokens"): _flag_int(args, "max-tokens-limit"),
    }
    for (section, key), value in overrides.items():
        if value is not None:
            data[section][key] = value
    limits["max_concurrent"] = max(limits["max_concurrent"], limits["max_batch_size"])
    return ServingConfig.model_validate(data)


def _api_keys() -> tuple[str, ...]:
    raw = ",".join(filter(None, [os.environ.get("KUBELLM_API_KEYS"), os.environ.get("KUBELLM_API_KEY")]))
    return tuple(key.strip() for key in raw.split(",") if key.strip())


def build_settings(args: argparse.Namespace) -> ServerSettings:
    """Settings from the file, then the environment, then the flags; raises ConfigError or ValidationError."""
    env_config = _env("config")
    config = args.config or (Path(env_config) if env_config else None)
    fields = _from_document(_read_document(config)) if config is not None else {}
    model = _flag(args, "model") or fields.get("model")
    if not model:
        hint = " (its fineTuneJobRef is resolved by the operator)" if fields.get("finetune_ref") else ""
        raise ConfigError(f"no model to serve: pass --model SOURCE or a config file with model.uri{hint}")
    adapters = _cli_adapters(args)
    return ServerSettings(
        model=model,
        model_revision=fields.get("model_revision") if model == fields.get("model") else None,
        served_model_name=_flag(args, "served-model-name") or fields.get("served_model_name") or "model",
        adapters=tuple(adapters if adapters is not None else fields.get("adapters", [])),
        base_model_name=_flag(args, "base-model-name") or fields.get("base_model_name"),
        serving=_serving(args, fields.get("serving") or ServingConfig()),
        host=_flag(args, "host") or "0.0.0.0",  # a pod serves on every interface
        port=_flag_int(args, "port") or DEFAULT_PORT,
        api_keys=_api_keys(),
        redis_password=os.environ.get("KUBELLM_REDIS_PASSWORD") or None,
        torch_threads=_flag_int(args, "torch-threads"),
        max_prompt_tokens=_flag_int(args, "max-prompt-tokens"),
    )


def _validation_line(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "config"
    return f"{where}: {first['msg']}"


def run(args: argparse.Namespace) -> int:
    """Load the model, then serve until stopped."""
    try:
        settings = build_settings(args)
    except ConfigError as error:
        return _fail(str(error), EXIT_BAD_INPUT)
    except ValidationError as error:
        return _fail(f"invalid configuration: {_validation_line(error)}", EXIT_BAD_INPUT)
    return _serve(settings, args.log_level)


def _fail(message: str, code: int) -> int:
    print(f"kubellm serve: {message}", file=sys.stderr)
    return code


def default_torch_threads() -> int:
    """The cores this process may use, minus one for the event loop (at least one).

    Decoding threads that wait on each other at every step degrade badly when they have to share
    a core with the HTTP side, so the server leaves it one.
    """
    return max(1, len(os.sched_getaffinity(0)) - 1)


def _set_torch_threads(threads: int | None) -> None:
    import torch  # noqa: PLC0415

    torch.set_num_threads(threads or default_torch_threads())


def _serve(settings: ServerSettings, log_level: str) -> int:
    # Heavy imports only once the input is known to be good.
    import uvicorn  # noqa: PLC0415

    from kubellm.runtime.models.sources import ModelSourceError  # noqa: PLC0415
    from kubellm.runtime.serving.app import create_app  # noqa: PLC0415
    from kubellm.runtime.serving.engine import load_engine  # noqa: PLC0415
    from kubellm.runtime.serving.logs import configure_logging  # noqa: PLC0415

    configure_logging(log_level)
    _set_torch_threads(settings.torch_threads)
    try:
        engine = load_engine(settings)
    except ModelSourceError as error:  # retrying cannot help: the source itself is wrong
        return _fail(f"cannot load the model: {' '.join(str(error).split())[:500]}", EXIT_BAD_INPUT)
    except (OSError, ValueError) as error:
        return _fail(f"cannot load the model: {' '.join(str(error).split())[:500]}", EXIT_LOAD_FAILED)
    app = create_app(settings, engine)
    # The model and the libraries live as long as the process: keep the cycle collector off them.
    # A full collection over those ~500k objects holds the GIL for hundreds of milliseconds,
    # stalling every request and the decoding thread alike.
    gc.collect()
    gc.freeze()
    uvicorn.run(app, host=settings.host, port=settings.port, log_config=None, timeout_graceful_shutdown=30)
    return 0
