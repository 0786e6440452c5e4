"""``kubellm serve``: what a ModelDeployment's pods run.

``kubellm serve [--config FILE] [--model SOURCE] [--adapter NAME=SOURCE ...] [--quantization MODE] ...``
(``kubellm serve --help`` lists every flag with its meaning).

FILE is the run document (:class:`~kubellm.contract.serving.ServerRun`) the operator writes into
the ModelDeployment's ConfigMap (``/etc/kubellm/config.yaml``); ``kubellm run`` takes whole
manifests. Each flag overrides one field of it and can also be set as ``KUBELLM_<FLAG_IN_CAPS>``
(``KUBELLM_MAX_BATCH_SIZE=16``; ``KUBELLM_ADAPTER`` takes comma-separated ``NAME=SOURCE`` pairs):
the file, then the environment, then the flags. Secrets come only from the environment:
``KUBELLM_API_KEYS`` (comma-separated) or ``KUBELLM_API_KEY``, and ``KUBELLM_REDIS_PASSWORD``.

Bad input, including a model source that cannot work (a missing package or file, an unsupported
or truncated GGUF file, a Hub repository or revision that cannot be read), prints one line on
stderr and exits 2; any other failure to load the model exits 1.
"""

from __future__ import annotations

import argparse
import gc
import sys

from kubellm.contract.schema import EXIT_BAD_INPUT, EXIT_FAILED
from kubellm.contract.serving import ServerRun
from kubellm.runtime import settings as command_settings
from kubellm.runtime.errors import CommandError, ConfigError, one_line
from kubellm.runtime.serving.settings import ServeOptions, ServerProcess, ServerSettings, default_torch_threads

__all__ = ["add_arguments", "build_settings", "default_torch_threads", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command's flags, one per option of :class:`ServeOptions`."""
    command_settings.add_arguments(parser, ServeOptions)


def build_settings(args: argparse.Namespace) -> ServerSettings:
    """The run document, then the environment, then the flags; raises :class:`ConfigError`."""
    return _settings(ServeOptions.from_args(args))


def _settings(options: ServeOptions) -> ServerSettings:
    document = command_settings.read_document(options.config) if options.config is not None else {}
    document = options.apply(document)
    if "model" not in document:
        raise ConfigError("no model to serve: pass --model SOURCE or --config FILE (a run document with model.uri)")
    limits = document.setdefault("serving", {}).setdefault("limits", {})
    if options.max_batch_size is not None:  # a larger batch than the concurrency allows raises the concurrency
        limits["maxConcurrent"] = max(limits.get("maxConcurrent", 0), options.max_batch_size)
    source = str(options.config) if options.config is not None else "flags"
    run_document = command_settings.load_document(ServerRun, document, source)
    process = options.model_dump(include=set(ServerProcess.model_fields))
    secrets = {"api_keys": options.accepted_keys(), "redis_password": options.redis_password}
    return ServerSettings.model_validate({**dict(run_document), **process, **secrets})


def run(args: argparse.Namespace) -> int:
    """Load the model, then serve until stopped."""
    try:
        options = ServeOptions.from_args(args)
        settings = _settings(options)
    except CommandError as error:
        return _fail(str(error), error.exit_code)
    return _serve(settings, options.log_level)


def _fail(message: str, code: int) -> int:
    print(f"kubellm serve: {message}", file=sys.stderr)
    return code


def _load_on_one_thread(settings: ServerSettings) -> ServerSettings:
    """Load on one torch thread; the decoding thread gets ``torch_threads`` (default: every core).

    torch's CPU thread pool runs fastest for the thread that first uses it with more than one
    thread: on SmolLM2-135M (2 cores), int8 ``generate`` of 16 sequences on a second thread ran at
    165 tok/s after loading with 2 threads on the first, and at 320 when the loading used one;
    through the server, int8 at 16 clients went from 0.78x to 1.53x fp32's throughput.
    """
    import torch  # noqa: PLC0415

    torch.set_num_threads(1)
    return settings.model_copy(update={"torch_threads": settings.torch_threads or default_torch_threads()})


def _serve(settings: ServerSettings, log_level: str) -> int:
    # Heavy imports only once the input is known to be good.
    import uvicorn  # noqa: PLC0415

    from kubellm.runtime.models.sources import ModelSourceError  # noqa: PLC0415
    from kubellm.runtime.serving.app import create_app  # noqa: PLC0415
    from kubellm.runtime.serving.engine import load_engine  # noqa: PLC0415
    from kubellm.runtime.serving.logs import configure_logging  # noqa: PLC0415

    configure_logging(log_level)
    settings = _load_on_one_thread(settings)
    try:
        engine = load_engine(settings)
    except ModelSourceError as error:  # retrying cannot help: the source itself is wrong
        return _fail(f"cannot load the model: {one_line(error)}", EXIT_BAD_INPUT)
    except (OSError, ValueError) as error:
        return _fail(f"cannot load the model: {one_line(error)}", EXIT_FAILED)
    app = create_app(settings, engine)
    # The model and the libraries live as long as the process: keep the cycle collector off them.
    # A full collection over those ~500k objects holds the GIL for hundreds of milliseconds,
    # stalling every request and the decoding thread alike.
    gc.collect()
    gc.freeze()
    uvicorn.run(app, host=settings.host, port=settings.port, log_config=None, timeout_graceful_shutdown=30)
    return 0
