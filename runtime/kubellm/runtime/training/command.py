"""``kubellm train --config FILE [--output DIR]``: what a FineTuneJob's pod runs, and a standalone tool.

FILE is the run document (:class:`~kubellm.contract.training.TrainingRun`, YAML or JSON) the
operator writes into the FineTuneJob's ConfigMap: the spec's sections, references resolved
(``kubellm run`` takes whole manifests). The output folder is ``--output`` when given, else the
document's ``output.pvc`` under the PVC root (``/mnt/pvc/<claimName>/<path>``). Progress goes
to stdout as JSON lines and to ``<output>/status.json``; a progress bar is drawn when stderr is
a terminal.

The exit code says what happened (see :mod:`kubellm.runtime.training.errors`); on failure
stderr carries exactly one line, ``kubellm train: <reason>``, and ``status.json`` (and the
container's termination message) the same reason. Never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import Field

from kubellm.contract.schema import EXIT_FAILED
from kubellm.contract.training import TrainingRun
from kubellm.runtime import settings as command_settings
from kubellm.runtime.errors import CommandError, ConfigError
from kubellm.runtime.models.sources import pvc_root
from kubellm.runtime.reporting import ThrottledStatus, reporter_from_env
from kubellm.runtime.training.data import RawRow, read_rows
from kubellm.runtime.training.metrics import TrainingMetrics
from kubellm.runtime.training.reporting import Reporter, is_main_process

__all__ = ["add_arguments", "run"]

EXIT_KEYBOARD_INTERRUPT = 130


class TrainOptions(command_settings.CommandOptions):
    """``kubellm train``'s flags (each also a ``KUBELLM_*`` variable)."""

    config: Path | None = Field(
        default=None, description="Run document (the FineTuneJob's ConfigMap, /etc/kubellm/config.yaml). Required."
    )
    output: Path | None = Field(default=None, description="Output folder. Default: the document's output.pvc folder.")
    merge_adapter: bool = Field(default=False, description="Also write base + adapter merged into <output>/merged.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``train`` command's flags, one per option of :class:`TrainOptions`."""
    command_settings.add_arguments(parser, TrainOptions)


def load_run(options: TrainOptions) -> tuple[TrainingRun, Path]:
    """The run document and the output folder; raises :class:`ConfigError`."""
    if options.config is None:
        raise ConfigError("pass --config FILE, a run document (kubellm run takes FineTuneJob manifests)")
    document = command_settings.read_document(options.config)
    job = command_settings.load_document(TrainingRun, document, str(options.config))
    _check_processes(job)
    if options.output is not None:
        return job, options.output
    if job.output is None or job.output.pvc.path is None:
        raise ConfigError(f"{options.config}: no output folder: set output.pvc.claimName and path, or pass --output")
    return job, pvc_root() / job.output.pvc.claim_name / job.output.pvc.path


def _check_processes(job: TrainingRun) -> None:
    """The processes started (torchrun's WORLD_SIZE, else one) are the ones the document asks for."""
    wanted = job.distributed.nodes * job.distributed.processes_per_node
    started = int(os.environ.get("WORLD_SIZE") or 1)
    if started != wanted:
        raise ConfigError(
            f"distributed asks for {job.distributed.nodes} node(s) x {job.distributed.processes_per_node} "
            f"process(es) = {wanted}, but {started} started: run it under torchrun with that many (kubellm run does)"
        )


def run(args: argparse.Namespace) -> int:
    """Train as the run document says; returns the exit code."""
    reporter: Reporter | None = None
    try:
        # A bad config or dataset fails in a second: torch and transformers load only after.
        options = TrainOptions.from_args(args)
        job, output_dir = load_run(options)
        reporter = _reporter(output_dir, job.training.method)
        rows = read_rows(job.dataset)
        with _library_logs_as_json_lines():
            return _train(job, output_dir, reporter, rows, merge=options.merge_adapter)
    except CommandError as error:
        return _fail(reporter, error.reason, str(error), error.exit_code)
    except KeyboardInterrupt:
        return _fail(reporter, "Interrupted", "interrupted", EXIT_KEYBOARD_INTERRUPT)
    except Exception as error:  # the last resort: one line, never a traceback
        detail = str(error).strip().splitlines()[0] if str(error).strip() else ""
        return _fail(reporter, "TrainingFailed", f"{type(error).__name__}: {detail}".rstrip(": "), EXIT_FAILED)


def _reporter(output_dir: Path, method: str) -> Reporter:
    output_dir.mkdir(parents=True, exist_ok=True)
    if not is_main_process():
        return Reporter(None)  # log lines only; rank 0 keeps the status
    metrics = TrainingMetrics(method)
    metrics.serve_if_configured()
    reporter = Reporter(output_dir, metrics=metrics, configmap=ThrottledStatus(reporter_from_env(), interval=10.0))
    reporter.update_status(phase="Running", reason="Preparing")
    return reporter


def _train(job: TrainingRun, output_dir: Path, reporter: Reporter, rows: list[RawRow], *, merge: bool) -> int:
    # Imported here: the heavy libraries load only once the config and the data are known to be readable.
    from kubellm.runtime.training.pipeline import REASON_COMPLETED, run_job  # noqa: PLC0415

    summary = run_job(job, output_dir, reporter, merge=merge, rows=rows)
    if summary.manifest is None:
        return 0  # a non-zero rank of a distributed run: rank 0 reports
    output = {"uri": _output_uri(output_dir), "kind": summary.manifest.kind, "baseModel": summary.manifest.base_model}
    reporter.update_status(phase="Succeeded", reason=REASON_COMPLETED, message=None, output=output)
    reporter.event("completed", output=output, metrics=summary.figures)
    reporter.write_termination_message()
    before, after = summary.figures.get("initialEvalLoss"), summary.figures.get("evalLoss")
    losses = f" (eval loss {before:.4f} -> {after:.4f})" if before is not None and after is not None else ""
    print(f"kubellm train: {summary.manifest.kind} written to {output_dir}{losses}", file=sys.stderr)
    return 0


def _output_uri(output_dir: Path) -> str:
    absolute = output_dir.resolve()
    try:
        return f"pvc://{absolute.relative_to(pvc_root().resolve())}"
    except ValueError:
        return f"file://{absolute}"


def _fail(reporter: Reporter | None, reason: str, message: str, code: int) -> int:
    line = " ".join(message.split())
    if reporter is not None:
        reporter.update_status(phase="Failed", reason=reason, message=line)
        reporter.event("failed", reason=reason, message=line, exitCode=code)
        reporter.write_termination_message()
    print(f"kubellm train: {line}", file=sys.stderr)
    return code


class _JsonLineHandler(logging.Handler):
    """Library log records and Python warnings as JSON lines on stdout, like the progress events."""

    def emit(self, record: logging.LogRecord) -> None:
        event = "warning" if record.name == "py.warnings" else "log"
        line = {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "event": event,
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        sys.stdout.write(json.dumps(line) + "\n")


@contextmanager
def _library_logs_as_json_lines() -> Iterator[None]:
    """Route transformers, optuna and warnings output to JSON lines, so stderr keeps one failure line."""
    handler = _JsonLineHandler(level=logging.WARNING)
    root = logging.getLogger()
    previous_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.captureWarnings(True)
    switched = _propagate_library_logs(True)
    try:
        yield  # Python's own warning filters stay as they are (PYTHONWARNINGS, -W)
    finally:
        if switched:
            _propagate_library_logs(False)
        logging.captureWarnings(False)
        root.removeHandler(handler)
        root.setLevel(previous_level)


def _propagate_library_logs(on: bool) -> bool:
    """transformers and optuna log to stderr themselves; switch them to the root logger (or back).

    Their progress bars (saving, downloading) are drawn only on a terminal.
    """
    if "transformers" not in sys.modules and not on:
        return False
    import optuna  # noqa: PLC0415
    import transformers  # noqa: PLC0415

    for library in (transformers.logging, optuna.logging):
        if on:
            library.disable_default_handler()
            library.enable_propagation()
        else:
            library.disable_propagation()
            library.enable_default_handler()
    progress_bars: Any = transformers.logging  # its switches are untyped
    if on and not sys.stderr.isatty():
        progress_bars.disable_progress_bar()
    else:
        progress_bars.enable_progress_bar()
    return True
