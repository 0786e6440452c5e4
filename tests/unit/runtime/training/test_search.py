"""Hyper-parameter search: values map onto the training settings, the study resumes after a restart."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from transformers import TrainerCallback

from kubellm.contract.training import SearchConfig, SearchReport, TrainingConfig
from kubellm.runtime.training.errors import ConfigError, InterruptedRunError
from kubellm.runtime.training.search import apply_params, decimal_string, run_search, search_report
from kubellm.runtime.training.trainer import RunResult

LORA = TrainingConfig.model_validate({"method": "lora", "lora": {"rank": 8}, "learningRate": "1e-4"})
SEARCH = SearchConfig.model_validate(
    {
        "trials": 3,
        "pruner": "none",
        "parameters": [
            {"name": "learningRate", "type": "logUniform", "low": "1e-4", "high": "1e-2"},
            {"name": "loraRank", "type": "categorical", "choices": ["4", "8", "16"]},
        ],
    }
)


def _result(eval_loss: float) -> RunResult:
    return RunResult(None, 1, 1, 1.0, eval_loss, None, None, 0.1, 1)


class FakeRunner:
    """Stands in for real training: the loss is a smooth function of the settings."""

    def __init__(self) -> None:
        self.seen: list[TrainingConfig] = []

    def __call__(self, trial: optuna.Trial, training: TrainingConfig, callbacks: list[TrainerCallback]) -> RunResult:
        self.seen.append(training)
        assert training.lora is not None
        return _result(abs(float(training.learning_rate) - 1e-3) * 100 + training.lora.rank / 100)


def test_decimal_strings_match_the_spec_patterns() -> None:
    assert [decimal_string(v) for v in (0.000123, 1.0, 0.05, 3e-7, 2.5)] == [
        "0.000123",
        "1",
        "0.05",
        "0.0000003",
        "2.5",
    ]


def test_apply_params_sets_training_and_lora_fields() -> None:
    training = apply_params(LORA, {"learningRate": 0.0003, "loraRank": "16", "batchSize": 4, "warmupRatio": 0.1})
    assert (training.learning_rate, training.batch_size, training.warmup_ratio) == ("0.0003", 4, "0.1")
    assert training.lora is not None
    assert training.lora.rank == 16
    assert LORA.lora is not None and LORA.lora.rank == 8  # the original is untouched


def test_apply_params_rejects_what_the_method_cannot_take() -> None:
    with pytest.raises(ConfigError, match=r"loraRank needs training\.method lora"):
        apply_params(TrainingConfig(method="full"), {"loraRank": 4})
    with pytest.raises(ConfigError, match="batchSize: 'big' is not an integer"):
        apply_params(LORA, {"batchSize": "big"})
    with pytest.raises(ConfigError, match="invalid training settings"):
        apply_params(LORA, {"batchSize": 0})


def test_search_runs_the_budget_and_reports_the_best(tmp_path: Path) -> None:
    runner, reports = FakeRunner(), list[SearchReport]()
    outcome = run_search(SEARCH, LORA, runner, tmp_path, reports.append)
    assert len(runner.seen) == 3
    assert [r.trials_completed for r in reports] == [1, 2, 3]
    report = outcome.report
    values = [t.value for t in report.trials]
    assert report.best_value == min(v for v in values if v is not None)
    assert {p.name for p in report.best_params} == {"learningRate", "loraRank"}
    best = dict((p.name, p.value) for p in report.best_params)
    assert outcome.best_training.learning_rate == best["learningRate"]
    assert (tmp_path / "search.db").is_file()


def test_a_restarted_search_continues_its_study(tmp_path: Path) -> None:
    first = FakeRunner()
    run_search(SEARCH.model_copy(update={"trials": 2}), LORA, first, tmp_path, lambda _: None)
    again = FakeRunner()
    outcome = run_search(SEARCH, LORA, again, tmp_path, lambda _: None)
    assert len(first.seen) == 2
    assert len(again.seen) == 1  # only the missing trial
    assert [t.number for t in outcome.report.trials] == [0, 1, 2]
    done = FakeRunner()
    run_search(SEARCH, LORA, done, tmp_path, lambda _: None)
    assert done.seen == []


def test_a_trial_killed_mid_way_is_run_again(tmp_path: Path) -> None:
    run_search(SEARCH.model_copy(update={"trials": 1}), LORA, FakeRunner(), tmp_path, lambda _: None)
    study = optuna.load_study(study_name="kubellm", storage=f"sqlite:///{tmp_path / 'search.db'}")
    killed = study.ask()  # what SIGKILL leaves behind: a RUNNING trial with its parameters drawn
    killed.suggest_float("learningRate", 1e-4, 1e-2, log=True)
    killed.suggest_categorical("loraRank", ["4", "8", "16"])
    runner = FakeRunner()
    outcome = run_search(SEARCH, LORA, runner, tmp_path, lambda _: None)
    assert len(runner.seen) == 2
    assert runner.seen[0].learning_rate == decimal_string(killed.params["learningRate"])  # retried first
    assert killed.number not in [t.number for t in outcome.report.trials]
    assert outcome.report.trials_completed == 3


def test_sigterm_during_a_trial_stops_the_search_and_requeues_it(tmp_path: Path) -> None:
    def interrupted(trial: optuna.Trial, training: TrainingConfig, callbacks: list[TrainerCallback]) -> RunResult:
        raise InterruptedRunError("stopped by SIGTERM")

    with pytest.raises(InterruptedRunError):
        run_search(SEARCH, LORA, interrupted, tmp_path, lambda _: None)
    runner = FakeRunner()
    outcome = run_search(SEARCH, LORA, runner, tmp_path, lambda _: None)
    assert len(runner.seen) == 3
    assert outcome.report.trials_completed == 3


def test_failed_trials_are_reported_and_a_search_without_success_fails(tmp_path: Path) -> None:
    def broken(trial: optuna.Trial, training: TrainingConfig, callbacks: list[TrainerCallback]) -> RunResult:
        raise RuntimeError("out of memory")

    with pytest.raises(Exception, match="no search trial completed"):
        run_search(SEARCH.model_copy(update={"trials": 2}), LORA, broken, tmp_path, lambda _: None)
    study = optuna.load_study(study_name="kubellm", storage=f"sqlite:///{tmp_path / 'search.db'}")
    report: SearchReport = search_report(study)
    assert [t.state for t in report.trials] == ["failed", "failed"]
