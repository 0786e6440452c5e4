"""A whole fine-tuning job, start to finish: data, quality, search, training, outputs.

Every step is safe to run again in the same output folder, which is how a restarted pod picks
up: the data is read and checked again (cheap, deterministic), a search continues its optuna
study, and training resumes from the newest complete checkpoint.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from transformers import TrainerCallback

from kubellm.runtime.config import SearchReport, TrainingConfig
from kubellm.runtime.models.layout import CHECKPOINTS_DIR, OutputManifest
from kubellm.runtime.models.loading import load_tokenizer
from kubellm.runtime.training.data import RawRow, read_rows, to_examples
from kubellm.runtime.training.encoding import EncodedExample, encode_all, split
from kubellm.runtime.training.errors import ConfigError, DataQualityError
from kubellm.runtime.training.job import TrainJob
from kubellm.runtime.training.methods import load_for_training, prepare_model
from kubellm.runtime.training.outputs import QUALITY_FILE, FinalFigures, save_outputs, write_json
from kubellm.runtime.training.progress import ProgressCallback
from kubellm.runtime.training.quality import DataQualityDetails, add_token_stats, conclude, filter_examples
from kubellm.runtime.training.reporting import Reporter, is_main_process
from kubellm.runtime.training.search import SEARCH_REPORT, run_search, trial_dir
from kubellm.runtime.training.trainer import RunPlan, RunResult, planned_steps, run_training

__all__ = ["PreparedData", "TrainSummary", "prepare_data", "run_job"]

REASON_PREPARING = "Preparing"
REASON_SEARCHING = "Searching"
REASON_TRAINING = "Training"
REASON_COMPLETED = "TrainingComplete"


@dataclass
class PreparedData:
    """Tokenized, filtered and split data, with its quality report."""

    train: list[EncodedExample]
    evaluation: list[EncodedExample]
    quality: DataQualityDetails


@dataclass
class TrainSummary:
    """What a job produced."""

    output_dir: Path
    manifest: OutputManifest | None
    """None on the non-zero ranks of a distributed run (rank 0 writes the outputs)."""
    figures: dict[str, Any]
    quality: DataQualityDetails
    search: SearchReport | None


def prepare_data(
    job: TrainJob, tokenizer: Any, output_dir: Path, reporter: Reporter, rows: list[RawRow] | None = None
) -> PreparedData:
    """Read (unless ``rows`` were), check, filter, tokenize and split the dataset; fails when the data does not pass."""
    examples = to_examples(read_rows(job.dataset) if rows is None else rows, job.dataset, tokenizer)
    filtered = filter_examples(examples, job.data_quality, job.dataset.max_rows)
    encoded = encode_all(filtered.kept, tokenizer, job.training.max_seq_length)
    report = add_token_stats(filtered.report, encoded.lengths, job.training.max_seq_length, encoded.no_trained_tokens)
    report = conclude(report, job.data_quality)
    if is_main_process():
        write_json(output_dir / QUALITY_FILE, report.dump())
    reporter.event("data_quality", **report.dump())
    reporter.update_status(dataQuality=report.summary().dump())
    if not report.passed:
        raise DataQualityError(f"data quality check failed: {report.message}")
    train, evaluation = split(encoded.examples, job.dataset.validation_percent, job.training.seed)
    return PreparedData(train=train, evaluation=evaluation, quality=report)


def _samples_per_step(training: TrainingConfig) -> int:
    return training.batch_size * training.gradient_accumulation_steps


def _search(
    job: TrainJob, data: PreparedData, output_dir: Path, reporter: Reporter
) -> tuple[TrainingConfig, SearchReport | None]:
    """Run the search, if the job has one; returns the training settings to use and the report."""
    search = job.search
    if search is None:
        return job.training, None
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError("a hyper-parameter search runs in one process; set distributed to 1 node, 1 process")
    reporter.update_status(phase="Running", reason=REASON_SEARCHING)

    def run_trial(trial: optuna.Trial, training: TrainingConfig, callbacks: list[TrainerCallback]) -> RunResult:
        steps = planned_steps(training, len(data.train), search.trial_max_steps)
        progress = ProgressCallback(reporter, _samples_per_step(training), status=False, trial=trial.number)
        plan = RunPlan(
            training=training,
            run_dir=trial_dir(output_dir, trial.number),
            max_steps=search.trial_max_steps,
            eval_every=max(1, steps // 4),
            checkpoints=False,
            measure_initial=False,
            callbacks=[*callbacks, progress],
        )
        prepared = prepare_model(load_for_training(job.base_model, training), training)
        return run_training(prepared, data.train, data.evaluation, plan)

    def on_trial(report: SearchReport) -> None:
        write_json(output_dir / SEARCH_REPORT, report.dump())
        reporter.update_status(search=report.dump())
        reporter.event("search_trial", **report.model_dump(mode="json", by_alias=True, exclude={"trials"}))

    outcome = run_search(search, job.training, run_trial, output_dir, on_trial)
    on_trial(outcome.report)
    reporter.event("search_best", trial=outcome.report.best_trial, value=outcome.report.best_value)
    return outcome.best_training, outcome.report


def run_job(
    job: TrainJob, output_dir: Path, reporter: Reporter, *, merge: bool = False, rows: list[RawRow] | None = None
) -> TrainSummary:
    """Run the job into ``output_dir`` (resuming whatever an earlier run there left); ``rows``: the dataset, if read."""
    output_dir.mkdir(parents=True, exist_ok=True)
    reporter.update_status(phase="Running", reason=REASON_PREPARING)  # a restart overwrites an old Failed
    data = prepare_data(job, load_tokenizer(job.base_model), output_dir, reporter, rows)
    training, search_report = _search(job, data, output_dir, reporter)
    prepared = prepare_model(load_for_training(job.base_model, training), training)
    reporter.event(
        "training_start",
        method=training.method,
        trainableParameters=prepared.trainable_parameters,
        totalParameters=prepared.total_parameters,
        trainExamples=len(data.train),
        evalExamples=len(data.evaluation),
    )
    reporter.update_status(phase="Running", reason=REASON_TRAINING)
    progress = ProgressCallback(reporter, _samples_per_step(training))
    plan = RunPlan(training=training, run_dir=output_dir / CHECKPOINTS_DIR, callbacks=[progress])
    result = run_training(prepared, data.train, data.evaluation, plan)
    figures = FinalFigures(
        result,
        prepared,
        len(data.train),
        len(data.evaluation),
        data.quality,
        search_report,
        _samples_per_step(training),
    )
    final_job = job.model_copy(update={"training": training})
    manifest = save_outputs(figures, final_job, output_dir, merge=merge) if is_main_process() else None
    return TrainSummary(output_dir, manifest, figures.as_dict(), data.quality, search_report)
