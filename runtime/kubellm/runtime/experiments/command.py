"""``kubellm experiment``: what a PromptExperiment's Job runs.

``kubellm experiment --config FILE [--endpoint URL] [--output DIR]`` reads the run document the
operator writes (:class:`~kubellm.contract.experiments.ExperimentRun`), sends every variant's
prompts to the OpenAI-compatible endpoint, and writes ``result.json`` (the status payload),
``report.md`` and ``scores.png`` into DIR, with ``requests.jsonl`` so that a restarted run
resumes where it stopped (a prompt search adds ``optimized-variant.yaml``, ``search.json``,
``search.png`` and its own request log). The rows are the document's inline rows or are read from the source
it names (:mod:`~kubellm.runtime.experiments.dataset`); ``--dataset FILE`` reads a file instead.
It prints the per-variant table and exits 0 once the experiment completed, whatever the
verdict. Bad input or a run that cannot complete prints one line on stderr and exits non-zero:
2 for unusable input (a dataset too), 1 when the run failed, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from kubellm.contract.experiments import DatasetRow, ExperimentRun
from kubellm.contract.schema import EXIT_FAILED
from kubellm.runtime import settings as command_settings
from kubellm.runtime.errors import CommandError, ConfigError
from kubellm.runtime.reporting import Reporter, ThrottledStatus, reporter_from_env

from .dataset import from_file, load_dataset
from .experiment import OPTIMIZED_VARIANT_FILE, RunSettings, run_experiment
from .report import REPORT_FILE, RESULT_FILE, answer_notes, judge_notes, power_note, variant_table
from .results import ExperimentResult
from .runner import REQUESTS_FILE
from .spec import ExperimentOptions, judge_api_keys, load_experiment, resolve_endpoint

__all__ = ["add_arguments", "run"]

EXIT_COMPLETED = 0
EXIT_INTERRUPTED = 130


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command's flags, one per option of :class:`ExperimentOptions`."""
    command_settings.add_arguments(parser, ExperimentOptions)


def _settings(options: ExperimentOptions, job: ExperimentRun, status: ThrottledStatus) -> RunSettings:
    return RunSettings(
        name=job.name,
        endpoint=resolve_endpoint(job),
        api=job.target.api,
        model=job.target.model,
        output_dir=options.output,
        api_key=options.target_api_key,
        timeout_seconds=options.request_timeout,
        max_retries=options.max_retries,
        on_progress=lambda progress: status.update({"progress": progress.dump()}),
        on_optimization=lambda report: status.update({"optimization": report.dump()}),
        judge_api_keys=judge_api_keys(job, os.environ),
    )


def _prepare(args: argparse.Namespace, status: ThrottledStatus) -> tuple[ExperimentRun, list[DatasetRow], RunSettings]:
    options = ExperimentOptions.from_args(args)
    job = load_experiment(options)
    dataset = from_file(job.dataset, options.dataset) if options.dataset else job.dataset
    rows = load_dataset(dataset, job.scorers)
    return job, rows, _settings(options, job, status)


def _publish_outcome(reporter: Reporter, settings: RunSettings) -> None:
    """Hand result.json and report.md to the operator (through the report ConfigMap, in a cluster)."""
    names = [RESULT_FILE, REPORT_FILE, OPTIMIZED_VARIANT_FILE]
    files = {name: (settings.output_dir / name).read_text() for name in names if (settings.output_dir / name).exists()}
    if not reporter.publish(files):
        print("kubellm experiment: could not report the result to the operator", file=sys.stderr)


def _print_outcome(job: ExperimentRun, result: ExperimentResult, settings: RunSettings) -> None:
    print(variant_table(job, result))
    for note in [*answer_notes(job, result), *judge_notes(result), *filter(None, [power_note(job, result)])]:
        print(f"note: {note}")
    print()
    print(f"{'winner: ' + result.winner if result.winner else 'no winner'} — {result.summary}")
    print(f"wrote {settings.output_dir / RESULT_FILE} and {settings.output_dir / REPORT_FILE}")
    if result.optimization is not None:
        print(f"the variant the prompt search found: {settings.output_dir / OPTIMIZED_VARIANT_FILE}")


def run(args: argparse.Namespace) -> int:
    """Run the experiment; the exit code says whether it completed."""
    reporter = reporter_from_env()
    status = ThrottledStatus(reporter)
    try:
        job, rows, settings = _prepare(args, status)
    except CommandError as error:
        return _fail(error.exit_code, str(error))
    try:
        result = asyncio.run(run_experiment(job, rows, settings))
    except ConfigError as error:  # templates, scorers, dataset rows: bad input
        return _fail(error.exit_code, str(error))
    except CommandError as error:
        return _fail(error.exit_code, f"{error}{_resume_hint(settings)}")
    except KeyboardInterrupt:
        return _fail(EXIT_INTERRUPTED, f"interrupted; rerun with the same --output ({settings.output_dir}) to resume")
    except OSError as error:
        return _fail(EXIT_FAILED, f"{error.strerror or error}: {error.filename or settings.output_dir}")
    _print_outcome(job, result, settings)
    _publish_outcome(reporter, settings)
    return EXIT_COMPLETED


def _resume_hint(settings: RunSettings) -> str:
    log = settings.output_dir / REQUESTS_FILE
    if log.exists() and log.stat().st_size > 0:
        return f"; answered requests are kept in {log}, rerun with the same --output to resume"
    return ""


def _fail(code: int, message: str) -> int:
    print(f"kubellm experiment: {message}", file=sys.stderr)
    return code
