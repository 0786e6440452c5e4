"""Hyper-parameter search with optuna: real training per trial, pruning, and a study that resumes.

The study lives in ``<output>/search.db`` (SQLite), so a pod that restarts continues it: the
trials already finished count toward ``search.trials``, and a trial cut short by the restart
(left ``RUNNING`` by SIGKILL, or stopped by SIGTERM) is marked failed, listed in the study's
``interrupted`` attribute (so it does not count), and its parameters are queued to run again.

Each trial trains a fresh model for ``trialMaxSteps`` steps (default: the full budget) without
checkpoints, reporting the evaluation loss four times so the median pruner can stop a trial that
is doing worse than the others at the same step. The report (:class:`SearchReport`) is
rewritten after every trial to ``<output>/search.json`` and the status file; the best trial's
settings then train the final model.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from kubellm.contract.training import (
    LoraConfig,
    ParameterValue,
    SearchConfig,
    SearchParameter,
    SearchReport,
    SearchTrial,
    TrainingConfig,
)
from kubellm.runtime.training.errors import ConfigError, InterruptedRunError, TrainingError
from kubellm.runtime.training.trainer import RunResult

__all__ = [
    "SEARCH_DB",
    "SEARCH_REPORT",
    "STUDY_NAME",
    "PruningCallback",
    "SearchOutcome",
    "TrialRunner",
    "apply_params",
    "run_search",
    "search_report",
    "trial_dir",
]

SEARCH_DB = "search.db"
SEARCH_REPORT = "search.json"
STUDY_NAME = "kubellm"
INTERRUPTED_ATTR = "interrupted"

TrialRunner = Callable[[optuna.Trial, TrainingConfig, list[TrainerCallback]], RunResult]
"""Trains one trial with the given settings and extra callbacks (the pipeline provides it)."""

ParamValue = int | float | str

_FIELDS = {
    "learningRate": "learning_rate",
    "batchSize": "batch_size",
    "epochs": "epochs",
    "warmupRatio": "warmup_ratio",
    "weightDecay": "weight_decay",
}
_LORA_FIELDS = {"loraRank": "rank", "loraAlpha": "alpha", "loraDropout": "dropout"}
_INTEGER_PARAMS = {"batchSize", "epochs", "loraRank", "loraAlpha"}
_STATES = {
    TrialState.RUNNING: "running",
    TrialState.COMPLETE: "complete",
    TrialState.PRUNED: "pruned",
    TrialState.FAIL: "failed",
}
_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def trial_dir(output_dir: Path, number: int) -> Path:
    """Scratch folder of one trial (removed when the trial ends)."""
    return output_dir / "search" / f"trial-{number}"


@dataclass
class SearchOutcome:
    """The search's report and the training settings of its best trial."""

    report: SearchReport
    best_training: TrainingConfig


def decimal_string(value: float) -> str:
    """A float as the spec's decimal strings write it (fixed notation, e.g. ``0.00012``)."""
    text = f"{value:.10f}".rstrip("0").rstrip(".")
    return text or "0"


def _as_text(value: ParamValue) -> str:
    return decimal_string(value) if isinstance(value, float) else str(value)


def apply_params(training: TrainingConfig, params: dict[str, ParamValue]) -> TrainingConfig:
    """The training settings with a trial's values substituted (validated like a spec)."""
    update: dict[str, Any] = training.model_dump()
    lora: dict[str, Any] = dict(update.get("lora") or {})
    for name, value in params.items():
        typed: Any = _typed(name, value)
        if name in _LORA_FIELDS:
            if training.method == "full":
                raise ConfigError(f"search parameter {name} needs training.method lora or qlora")
            lora[_LORA_FIELDS[name]] = typed
        else:
            update[_FIELDS[name]] = typed
    if training.method != "full":
        update["lora"] = LoraConfig.model_validate({**LoraConfig().model_dump(), **lora}).model_dump()
    try:
        return TrainingConfig.model_validate(update)
    except ValueError as error:
        raise ConfigError(f"search parameters {params} give invalid training settings: {error}") from None


def _typed(name: str, value: ParamValue) -> int | str:
    if name in _INTEGER_PARAMS:
        try:
            return int(float(value))
        except ValueError:
            raise ConfigError(f"search parameter {name}: {value!r} is not an integer") from None
    return _as_text(value)


def suggest(trial: optuna.Trial, parameter: SearchParameter) -> ParamValue:
    """Draw one value from a declared range or list."""
    if parameter.type == "categorical":
        return trial.suggest_categorical(parameter.name, list(parameter.choices or []))
    low, high = float(parameter.low or 0), float(parameter.high or 0)
    if parameter.type == "int":
        return trial.suggest_int(parameter.name, int(low), int(high))
    return trial.suggest_float(parameter.name, low, high, log=parameter.type == "logUniform")


class PruningCallback(TrainerCallback):
    """Reports the searched loss to optuna at each evaluation and stops a trial it prunes."""

    def __init__(self, trial: optuna.Trial, metric: str) -> None:
        self.trial = trial
        self.key = "eval_loss" if metric == "evalLoss" else "loss"
        self.pruned = False
        self._reported: set[int] = set()

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, float] | None = None,
        **_: Any,
    ) -> None:
        """Report, and stop training when optuna prunes the trial."""
        value = (logs or {}).get(self.key)
        if value is None or state.global_step == 0 or state.global_step in self._reported:
            return  # the evaluation after training repeats the last step's
        self._reported.add(state.global_step)
        self.trial.report(float(value), step=state.global_step)
        if self.trial.should_prune():
            self.pruned = True
            control.should_training_stop = True


def _study(output_dir: Path, search: SearchConfig, seed: int) -> optuna.Study:
    sampler: optuna.samplers.BaseSampler = (
        optuna.samplers.TPESampler(seed=seed) if search.sampler == "tpe" else optuna.samplers.RandomSampler(seed=seed)
    )
    pruner: optuna.pruners.BasePruner = (
        optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0)
        if search.pruner == "median"
        else optuna.pruners.NopPruner()
    )
    return optuna.create_study(
        study_name=STUDY_NAME,
        storage=f"sqlite:///{output_dir / SEARCH_DB}",
        direction="minimize",
        sampler=sampler,
        pruner=pruner,
        load_if_exists=True,
    )


def _interrupted(study: optuna.Study) -> list[int]:
    return list(study.user_attrs.get(INTERRUPTED_ATTR, []))


def _retry(study: optuna.Study, trial: FrozenTrial) -> None:
    """Count an interrupted trial as not run, and queue its parameters again."""
    study.set_user_attr(INTERRUPTED_ATTR, [*_interrupted(study), trial.number])
    if trial.params:
        study.enqueue_trial(trial.params, user_attrs={"retryOf": trial.number})


def _recover_stale_trials(study: optuna.Study) -> None:
    """Trials a killed process left running: fail them and run their parameters again."""
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
        _retry(study, trial)


def trials_done(study: optuna.Study) -> int:
    """Finished trials that count toward the budget (interrupted ones do not)."""
    interrupted = set(_interrupted(study))
    finished = study.get_trials(deepcopy=False, states=_FINISHED)
    return sum(trial.number not in interrupted for trial in finished)


def search_report(study: optuna.Study) -> SearchReport:
    """The study so far, as the FineTuneJob status shows it (interrupted trials left out)."""
    interrupted = set(_interrupted(study))
    trials = [t for t in study.get_trials(deepcopy=False) if t.state in _STATES and t.number not in interrupted]
    completed = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    best = min(completed, key=lambda t: float(t.value or 0.0), default=None)
    return SearchReport(
        trials_completed=sum(t.state in _FINISHED for t in trials),
        best_trial=best.number if best else None,
        best_value=best.value if best else None,
        best_params=_parameter_values(best.params) if best else [],
        trials=[_trial(t) for t in trials[-200:]],
    )


def _parameter_values(params: dict[str, Any]) -> list[ParameterValue]:
    return [ParameterValue(name=name, value=_as_text(value)) for name, value in params.items()]


def _trial(trial: FrozenTrial) -> SearchTrial:
    return SearchTrial.model_validate(
        {
            "number": trial.number,
            "state": _STATES[trial.state],
            "value": trial.value,
            "params": _parameter_values(trial.params),
        }
    )


def _objective(
    search: SearchConfig, training: TrainingConfig, runner: TrialRunner, output_dir: Path
) -> Callable[[optuna.Trial], float]:
    def objective(trial: optuna.Trial) -> float:
        params: dict[str, ParamValue] = {parameter.name: suggest(trial, parameter) for parameter in search.parameters}
        pruning = PruningCallback(trial, search.metric)
        try:
            result = runner(trial, apply_params(training, params), [pruning])
        except InterruptedRunError:
            _retry(trial.study, trial.study.get_trials(deepcopy=False)[trial.number])
            raise
        finally:
            shutil.rmtree(trial_dir(output_dir, trial.number), ignore_errors=True)
        if pruning.pruned:
            raise optuna.TrialPruned()
        value = result.eval_loss if search.metric == "evalLoss" else result.train_loss
        if value is None:
            raise ConfigError(f"search metric {search.metric} is unavailable (evalLoss needs validationPercent > 0)")
        return value

    return objective


def run_search(
    search: SearchConfig,
    training: TrainingConfig,
    runner: TrialRunner,
    output_dir: Path,
    on_trial: Callable[[SearchReport], None],
) -> SearchOutcome:
    """Run (or continue) the study until ``search.trials`` trials have finished."""
    study = _study(output_dir, search, training.seed)
    _recover_stale_trials(study)
    remaining = search.trials - trials_done(study)
    if remaining > 0:
        study.optimize(
            _objective(search, training, runner, output_dir),
            n_trials=remaining,
            timeout=search.timeout_seconds,
            catch=(RuntimeError,),
            callbacks=[lambda s, _t: on_trial(search_report(s))],
        )
    report = search_report(study)
    if report.best_trial is None:
        raise TrainingError("no search trial completed; see the failed trials in search.json")
    best = {p.name: p.value for p in report.best_params}
    return SearchOutcome(report=report, best_training=apply_params(training, dict(best)))
