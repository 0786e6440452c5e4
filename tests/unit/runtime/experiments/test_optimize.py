"""Prompt search: the splits never overlap, candidates are ordinary variants, optuna finds a planted best."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import ValidationError

from kubellm.contract.experiments import DatasetRow, ExperimentConfig, OptimizeConfig, PromptVariant
from kubellm.runtime.errors import DatasetError
from kubellm.runtime.experiments.optimize import (
    Candidate,
    SearchOutcome,
    SearchSpace,
    TrialResult,
    candidate_name,
    candidate_variant,
    optimization_report,
    search,
    split_rows,
)
from kubellm.runtime.experiments.templates import compile_variant


def _rows(count: int, duplicates: int = 0) -> list[DatasetRow]:
    rows = [DatasetRow(input=f"question {i}", expected=f"answer {i}") for i in range(count)]
    return rows + rows[:duplicates]


def _optimize(**overrides: Any) -> OptimizeConfig:
    spec: dict[str, Any] = {"instructions": ["Be brief."], "fewShot": {"maxExamples": 3, "trainFraction": "0.2"}}
    return OptimizeConfig.model_validate({**spec, **overrides})


@pytest.mark.parametrize(("count", "duplicates", "seed"), [(10, 0, 0), (67, 0, 3), (60, 15, 1), (200, 40, 7)])
def test_splits_never_overlap_and_cover_every_row(count: int, duplicates: int, seed: int) -> None:
    rows = _rows(count, duplicates)
    splits = split_rows(rows, _optimize(seed=seed))
    parts = [splits.train, splits.search, splits.held_out]
    assert sum(len(part) for part in parts) == len(rows)
    contents = [{row.model_dump_json() for row in part} for part in parts]
    assert not contents[0] & contents[1]
    assert not contents[0] & contents[2]
    assert not contents[1] & contents[2]
    assert sorted(r.input for part in parts for r in part) == sorted(r.input for r in rows)


def test_splits_follow_the_fractions_the_seed_and_the_file_order() -> None:
    rows = _rows(100)
    splits = split_rows(rows, _optimize())
    assert (len(splits.train), len(splits.search), len(splits.held_out)) == (20, 40, 40)
    assert split_rows(rows, _optimize()) == splits
    assert split_rows(list(reversed(rows)), _optimize()).search == list(reversed(splits.search))
    assert split_rows(rows, _optimize(seed=1)).search != splits.search
    order = [rows.index(row) for row in splits.held_out]
    assert order == sorted(order)


def test_without_few_shot_no_row_is_set_aside_for_examples() -> None:
    splits = split_rows(_rows(10), _optimize(fewShot=None, searchFraction="0.5"))
    assert (len(splits.train), len(splits.search), len(splits.held_out)) == (0, 5, 5)


def test_too_few_rows_or_missing_answers_end_in_one_line() -> None:
    with pytest.raises(DatasetError, match="leave the train split empty"):
        split_rows(_rows(2), _optimize())
    unanswered = [DatasetRow(input=f"q{i}") for i in range(10)]
    with pytest.raises(DatasetError, match="needs an expected answer"):
        split_rows(unanswered, _optimize())


def test_the_spec_refuses_a_search_without_anything_to_search_or_rows_to_confirm_on() -> None:
    with pytest.raises(ValidationError, match="needs something to search"):
        OptimizeConfig.model_validate({})
    with pytest.raises(ValidationError, match="must leave rows held out"):
        _optimize(searchFraction="0.8")
    base = {
        "variants": [{"name": "control", "template": "{{ input }}", "examples": [{"input": "a", "output": "b"}]}],
        "dataset": {"rows": [{"input": "x", "expected": "y"}]},
        "scorers": [{"name": "exact", "type": "exact"}],
    }
    with pytest.raises(ValidationError, match="at least two"):
        ExperimentConfig.model_validate(base)
    with pytest.raises(ValidationError, match="control variant must have no examples"):
        ExperimentConfig.model_validate({**base, "optimize": {"fewShot": {}}})
    with pytest.raises(ValidationError, match="must not be the name of a variant"):
        ExperimentConfig.model_validate({**base, "optimize": {"instructions": ["x"], "variant": "control"}})
    assert ExperimentConfig.model_validate({**base, "optimize": {"instructions": ["x"]}}).optimize is not None


def test_a_candidate_is_the_control_with_an_instruction_and_examples_as_messages() -> None:
    control = PromptVariant(name="control", template="Q: {{ input }}", system="Be exact.", max_tokens=8)
    train = _rows(5)
    space = SearchSpace(instructions=("", "Use {{ braces }} literally."), train_rows=5, max_examples=2)
    variant = candidate_variant(control, space, Candidate(instruction=1, examples=(3, 0)), train, "found")
    assert (variant.name, variant.system, variant.max_tokens, variant.examples_as) == (
        "found",
        "Be exact.",
        8,
        "messages",
    )
    assert [example.input for example in variant.examples] == ["question 3", "question 0"]
    rendered = compile_variant(variant).render(DatasetRow(input="2 + 2?"), 1)
    assert rendered.user == "Use {{ braces }} literally.\n\nQ: 2 + 2?"
    assert rendered.turns[0] == ("Use {{ braces }} literally.\n\nQ: question 3", "answer 3")
    plain = candidate_variant(control, space, Candidate(), train, "found")
    assert plain.template == control.template
    assert not plain.examples
    assert candidate_name("found", Candidate(1, (3,)), space) == candidate_name("found", Candidate(1, (3,)), space)
    assert candidate_name("found", Candidate(1, (3,)), space) != candidate_name("found", Candidate(1, (0,)), space)


def _planted(candidate: Candidate) -> float:
    """Instruction 2 and example 4 help; every other choice scores a little lower."""
    return 0.3 + 0.3 * (candidate.instruction == 2) + 0.2 * (4 in candidate.examples) - 0.01 * len(candidate.examples)


def test_search_starts_from_the_control_and_finds_the_planted_best() -> None:
    space = SearchSpace(instructions=("", "a", "b", "c"), train_rows=8, max_examples=2)
    seen: list[Candidate] = []

    async def evaluate(candidate: Candidate) -> float:
        seen.append(candidate)
        return _planted(candidate)

    reports: list[int] = []
    outcome = asyncio.run(search(space, evaluate, trials=30, seed=0, on_trial=lambda o: reports.append(len(o.trials))))
    assert seen[0] == Candidate()
    assert outcome.control_score == pytest.approx(0.3)
    assert outcome.best.candidate.instruction == 2
    assert outcome.best.score is not None
    assert outcome.best.score >= 0.78
    assert reports == list(range(1, 31))
    again = asyncio.run(search(space, evaluate, trials=30, seed=0))
    assert [t.candidate for t in again.trials] == [t.candidate for t in outcome.trials]


def test_the_control_wins_ties_and_failed_trials_are_not_best() -> None:
    space = SearchSpace(instructions=("", "a"), train_rows=0, max_examples=0)

    async def flat(candidate: Candidate) -> float | None:
        return None if candidate.instruction else 0.5

    outcome = asyncio.run(search(space, flat, trials=4, seed=0))
    assert outcome.best.number == 0
    assert outcome.best.candidate == Candidate()


def test_lower_is_better_metrics_are_minimised() -> None:
    space = SearchSpace(instructions=("", "a"), train_rows=0, max_examples=0)

    async def latency(candidate: Candidate) -> float:
        return 2.0 - candidate.instruction

    outcome = asyncio.run(search(space, latency, trials=6, seed=0, maximize=False))
    assert outcome.best.candidate.instruction == 1


def test_the_report_names_the_best_candidate_and_where_the_variant_is() -> None:
    optimize = _optimize(trials=3)
    splits = split_rows(_rows(20), optimize)
    space = SearchSpace.of(optimize, ["Proposed.", "Be brief."], len(splits.train))
    assert space.instructions == ("", "Be brief.", "Proposed.")
    outcome = SearchOutcome(trials=[], maximize=True)
    assert optimization_report(optimize, "score", splits, progress=(space, outcome)).completed == 0
    found_candidate = Candidate(instruction=2, examples=(1,))
    outcome.trials.extend([TrialResult(0, Candidate(), 0.4), TrialResult(1, found_candidate, 0.7)])
    control = PromptVariant(name="control", template="{{ input }}")
    found = candidate_variant(control, space, found_candidate, splits.train, "optimized")
    report = optimization_report(
        optimize, "score", splits, progress=(space, outcome), found=found, variant_key="v.yaml"
    )
    assert (report.completed, report.best_trial, report.best_score, report.control_score) == (2, 1, 0.7, 0.4)
    assert (report.instruction, report.examples, report.variant_key) == ("Proposed.", 1, "v.yaml")
    assert report.template == found.template
    assert report.splits.held_out == len(splits.held_out)
