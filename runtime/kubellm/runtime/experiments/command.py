"""``kubellm experiment``: what a PromptExperiment's Job runs.

``kubellm experiment --config FILE [--endpoint URL] [--output DIR]`` reads a PromptExperiment
manifest (or its spec), sends every variant's prompts to the OpenAI-compatible endpoint, and
writes ``result.json`` (the status payload), ``report.md`` and ``scores.png`` into DIR, with
``requests.jsonl`` so that a restarted run resumes where it stopped. It prints the per-variant
table and exits 0 once the experiment completed, whatever the verdict. Bad input or a run that
cannot complete prints one line on stderr and exits non-zero: 2 for unusable input, 1 when the
run failed, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from kubellm.runtime.config import EXPERIMENT_EXIT_BAD_INPUT, DatasetRow
from kubellm.runtime.reporting import Reporter, ThrottledStatus, reporter_from_env

from .client import RequestError
from .dataset import DatasetError, load_rows
from .experiment import ExperimentError, RunSettings, run_experiment
from .report import REPORT_FILE, RESULT_FILE, answer_notes, variant_table
from .results import ExperimentResult
from .runner import REQUESTS_FILE
from .scorers import ScorerError
from .spec import ExperimentJob, SpecError, api_key_from_environment, load_experiment, resolve_endpoint
from .templates import TemplateError

__all__ = ["add_arguments", "run"]

EXIT_COMPLETED = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = EXPERIMENT_EXIT_BAD_INPUT
EXIT_INTERRUPTED = 130


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command's options."""
    parser.add_argument(
        "--config", required=True, type=Path, help="PromptExperiment manifest or its spec (YAML or JSON)"
    )
    parser.add_argument(
        "--endpoint", help="OpenAI-compatible base URL, e.g. http://llm:8000/v1 (overrides spec.target)"
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=Path("experiment-results"),
        help="folder for result.json, report.md and the resumable request log (default: %(default)s)",
    )
    parser.add_argument(
        "--dataset", type=Path, help="JSONL or CSV file of rows (input, expected, variables) replacing spec rows"
    )
    parser.add_argument(
        "--request-timeout", type=float, default=120.0, help="seconds to wait for one answer (default: %(default)s)"
    )
    parser.add_argument(
        "--max-retries",
        type=int,
        default=4,
        help="retries of a request on 429/503/connection errors, with backoff (default: %(default)s)",
    )


def _settings(args: argparse.Namespace, job: ExperimentJob, status: ThrottledStatus) -> RunSettings:
    return RunSettings(
        name=job.name,
        endpoint=resolve_endpoint(job.target, args.endpoint),
        api=job.target.api,
        model=job.target.model,
        output_dir=args.output,
        api_key=api_key_from_environment(),
        timeout_seconds=args.request_timeout,
        max_retries=max(0, args.max_retries),
        on_progress=lambda progress: status.update({"progress": progress.dump()}),
    )


def _prepare(args: argparse.Namespace, status: ThrottledStatus) -> tuple[ExperimentJob, list[DatasetRow], RunSettings]:
    job = load_experiment(args.config)
    if job.ignored_fields:
        print(f"kubellm experiment: ignoring unknown spec fields: {', '.join(job.ignored_fields)}", file=sys.stderr)
    rows = load_rows(args.dataset) if args.dataset else list(job.config.dataset.rows)
    return job, rows, _settings(args, job, status)


def _publish_outcome(reporter: Reporter, settings: RunSettings) -> None:
    """Hand result.json and report.md to the operator (through the report ConfigMap, in a cluster)."""
    files = {name: (settings.output_dir / name).read_text() for name in (RESULT_FILE, REPORT_FILE)}
    if not reporter.publish(files):
        print("kubellm experiment: could not report the result to the operator", file=sys.stderr)


def _print_outcome(job: ExperimentJob, result: ExperimentResult, settings: RunSettings) -> None:
    print(variant_table(job.config, result))
    for note in answer_notes(job.config, result):
        print(f"note: {note}")
    print()
    print(f"{'winner: ' + result.winner if result.winner else 'no winner'} — {result.summary}")
    print(f"wrote {settings.output_dir / RESULT_FILE} and {settings.output_dir / REPORT_FILE}")


def run(args: argparse.Namespace) -> int:
    """Run the experiment; the exit code says whether it completed."""
    reporter = reporter_from_env()
    status = ThrottledStatus(reporter)
    try:
        job, rows, settings = _prepare(args, status)
    except (SpecError, DatasetError) as error:
        return _fail(EXIT_BAD_INPUT, str(error))
    try:
        result = asyncio.run(run_experiment(job.config, rows, settings))
    except (TemplateError, ScorerError, DatasetError) as error:
        return _fail(EXIT_BAD_INPUT, str(error))
    except (RequestError, ExperimentError) as error:
        return _fail(EXIT_FAILED, f"{error}{_resume_hint(settings)}")
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
