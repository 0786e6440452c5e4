"""A whole fine-tuning job, start to finish: data, quality, search, training, outputs.

Every step is safe to run again in the same output folder, which is how a restarted pod picks
up: the data is read and checked again (cheap, deterministic; rows a model generated come back
from the augmentation log, not from the model), a search continues its optuna study, and
training resumes from the newest complete checkpoint.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from transformers import TrainerCallback

from kubellm.contract.training import (
    SearchReport,
    TaskEvaluationConfig,
    TaskEvaluationReport,
    TaskScore,
    TrainingConfig,
    TrainingRun,
)
from kubellm.runtime.models.layout import CHECKPOINTS_DIR, OutputManifest
from kubellm.runtime.models.loading import load_tokenizer
from kubellm.runtime.training.augmentation import Augmented, augment, sources_of
from kubellm.runtime.training.data import RawRow, read_rows, to_examples
from kubellm.runtime.training.encoding import EncodedExample, encode_all, split
from kubellm.runtime.training.errors import ConfigError, DataQualityError
from kubellm.runtime.training.evaluation import BEFORE_FILE, TaskCase, evaluate_task, load_score, task_cases
from kubellm.runtime.training.generators import open_generator
from kubellm.runtime.training.methods import PreparedModel, load_for_training, prepare_model
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
    job: TrainingRun, tokenizer: Any, output_dir: Path, reporter: Reporter, rows: list[RawRow] | None = None
) -> PreparedData:
    """Read (unless ``rows`` were), check, filter, tokenize and split the dataset, then augment the training split.

    Fails when the data does not pass. New rows are made only after the split, from and into
    the training split, so the validation rows stay the dataset's own.
    """
    rows = read_rows(job.dataset) if rows is None else rows
    examples = to_examples(rows, job.dataset, tokenizer)
    filtered = filter_examples(examples, job.data_quality, job.dataset.max_rows)
    encoded = encode_all(filtered.kept, tokenizer, job.training.max_seq_length)
    report = add_token_stats(filtered.report, encoded.lengths, job.training.max_seq_length, encoded.no_trained_tokens)
    report = conclude(report, job.data_quality)
    _publish_quality(report, output_dir, reporter)
    if not report.passed:
        raise DataQualityError(f"data quality check failed: {report.message}")
    pairs = list(zip(encoded.examples, encoded.sources, strict=True))
    train, evaluation = split(pairs, job.dataset.validation_percent, job.training.seed)
    seeds = sources_of(examples, rows, [source for _, source in train])
    added = _augment(job, tokenizer, seeds, rows, output_dir=output_dir, reporter=reporter)
    if added.report is not None:
        report = report.model_copy(update={"augmentation": added.report})
        _publish_quality(report, output_dir, reporter)
    return PreparedData(
        train=[example for example, _ in train] + added.examples,
        evaluation=[example for example, _ in evaluation],
        quality=report,
    )


def _publish_quality(report: DataQualityDetails, output_dir: Path, reporter: Reporter) -> None:
    if is_main_process():
        write_json(output_dir / QUALITY_FILE, report.dump())
    reporter.event("data_quality", **report.dump())
    reporter.update_status(dataQuality=report.summary().dump())


def _augment(
    job: TrainingRun, tokenizer: Any, seeds: list[RawRow], rows: list[RawRow], *, output_dir: Path, reporter: Reporter
) -> Augmented:
    """New training rows after ``seeds`` (the training split's rows), when the job asks for them."""
    if job.data_augmentation is None:
        return Augmented()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError("dataAugmentation runs in one process; set distributed to 1 node, 1 process")
    opener = functools.partial(open_generator, job)
    return augment(job, seeds, rows, tokenizer, open_generator=opener, output_dir=output_dir, reporter=reporter)


def _samples_per_step(training: TrainingConfig) -> int:
    return training.batch_size * training.gradient_accumulation_steps


def _search(
    job: TrainingRun, data: PreparedData, output_dir: Path, reporter: Reporter
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


@dataclass
class _TaskEvaluation:
    """The task score before training (measured once, kept for a resumed run) and after it."""

    config: TaskEvaluationConfig
    cases: list[TaskCase]
    tokenizer: Any
    before: TaskScore
    reporter: Reporter

    @classmethod
    def start(
        cls, job: TrainingRun, data: PreparedData, prepared: PreparedModel, output_dir: Path, reporter: Reporter
    ) -> _TaskEvaluation | None:
        config = job.evaluation
        if config is None:
            return None
        cases = task_cases(data.evaluation, prepared.tokenizer, config.max_rows)
        if not cases:
            raise ConfigError("evaluation needs held-out rows with a prompt: set dataset.validationPercent above 0")
        saved = output_dir / BEFORE_FILE
        before = load_score(saved)
        if before is None:
            before = evaluate_task(prepared.model, prepared.tokenizer, cases, config)
            if is_main_process():
                write_json(saved, before.model_dump(mode="json", by_alias=True))
        evaluation = cls(config, cases, prepared.tokenizer, before, reporter)
        evaluation.publish(None)
        return evaluation

    def finish(self, model: Any) -> TaskScore:
        after = evaluate_task(model, self.tokenizer, self.cases, self.config)
        self.publish(after)
        return after

    def publish(self, after: TaskScore | None) -> None:
        section = TaskEvaluationReport(scorer=self.config.scorer, rows=len(self.cases), before=self.before, after=after)
        self.reporter.update_status(evaluation=section.dump())
        self.reporter.event("task_evaluation", **section.dump())


def run_job(
    job: TrainingRun, output_dir: Path, reporter: Reporter, *, merge: bool = False, rows: list[RawRow] | None = None
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
    task = _TaskEvaluation.start(job, data, prepared, output_dir, reporter)
    progress = ProgressCallback(reporter, _samples_per_step(training))
    plan = RunPlan(training=training, run_dir=output_dir / CHECKPOINTS_DIR, callbacks=[progress])
    result = run_training(prepared, data.train, data.evaluation, plan)
    if task is not None:
        task.finish(result.model)
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
