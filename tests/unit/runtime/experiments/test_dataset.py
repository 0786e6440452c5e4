"""Test cases from files: field mapping, seeded sampling, one-line errors, reference checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kubellm.contract.experiments import DatasetRow, ExperimentDataset, Scorer
from kubellm.contract.schema import ConfigMapKeyRef
from kubellm.runtime.errors import ConfigError
from kubellm.runtime.experiments.dataset import (
    DatasetError,
    check_references,
    from_file,
    load_dataset,
    map_row,
    sample_indices,
)
from kubellm.runtime.training.data import RawRow

EXACT = [Scorer(name="exact", type="exact")]


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _file(path: Path, **fields: Any) -> ExperimentDataset:
    return ExperimentDataset(uri=str(path), **fields)


# --- field mapping -------------------------------------------------------------------------------


def test_mapped_fields_become_input_and_expected_and_the_rest_vars() -> None:
    raw = RawRow("qa.jsonl:1", {"question": "2 + 2?", "answer": 4, "topic": "maths", "vars": {"level": "easy"}})
    row = map_row(raw, "question", "answer")
    assert row == DatasetRow(input="2 + 2?", expected="4", vars={"level": "easy", "topic": "maths"})


def test_empty_expected_counts_as_none_and_other_values_become_json_text() -> None:
    row = map_row(RawRow("a.csv:2", {"input": "x", "expected": "", "aliases": ["Paris", "paris"]}), "input", "expected")
    assert row.expected is None and row.vars == {"aliases": '["Paris", "paris"]'}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"question": "x"}, r"qa\.jsonl:3: no 'input' column \(columns: question\); set dataset\.inputField"),
        ({"input": ["a"]}, r"qa\.jsonl:3: column 'input' must be text or a number, got list"),
        ({"input": "x", "vars": "y"}, r"qa\.jsonl:3: vars must be an object of strings"),
        ({"input": "x" * 9000}, r"qa\.jsonl:3: input: String should have at most 8192 characters"),
    ],
)
def test_mapping_problems_name_the_row(values: dict[str, Any], message: str) -> None:
    with pytest.raises(DatasetError, match=message):
        map_row(RawRow("qa.jsonl:3", values), "input", "expected")


# --- sampling ------------------------------------------------------------------------------------


def test_sample_is_seeded_stable_and_in_file_order() -> None:
    rows = [f"row {i}" for i in range(100)]
    first = sample_indices(rows, 10, seed=7)
    assert first == sample_indices(rows, 10, seed=7) == sorted(first) and len(first) == 10
    assert sample_indices(rows, 10, seed=8) != first
    assert sample_indices(rows, 100, seed=7) == sample_indices(rows, None, seed=7) == list(range(100))


def test_a_row_is_drawn_for_its_content_not_its_position() -> None:
    rows = [f"row {i}" for i in range(50)]
    drawn = {rows[i] for i in sample_indices(rows, 5, seed=1)}
    reversed_rows = rows[::-1]
    assert {reversed_rows[i] for i in sample_indices(reversed_rows, 5, seed=1)} == drawn


# --- whole sources -------------------------------------------------------------------------------


def test_jsonl_rows_with_vars_and_extra_fields(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "rows.jsonl",
        '{"input": "a", "expected": "b", "vars": {"x": "1"}}\n\n{"input": "c", "topic": "maths"}\n',
    )
    rows = load_dataset(_file(path))
    assert [(r.input, r.expected, r.vars) for r in rows] == [("a", "b", {"x": "1"}), ("c", None, {"topic": "maths"})]


def test_csv_rows_with_mapped_columns(tmp_path: Path) -> None:
    path = _write(tmp_path, "rows.csv", 'question,answer,city\n"What, exactly?",Paris,France\nHello,,Spain\n')
    rows = load_dataset(_file(path, input_field="question", expected_field="answer"))
    assert rows[0] == DatasetRow(input="What, exactly?", expected="Paris", vars={"city": "France"})
    assert rows[1].expected is None


def test_a_pvc_file_is_read_under_the_claims_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBELLM_PVC_ROOT", str(tmp_path))
    (tmp_path / "evals").mkdir()
    _write(tmp_path / "evals", "qa.jsonl", "".join(f'{{"input": "q{i}", "expected": "a{i}"}}\n' for i in range(30)))
    dataset = ExperimentDataset(uri="pvc://evals/qa.jsonl", max_rows=12, seed=3)
    rows = load_dataset(dataset, EXACT)
    assert len(rows) == 12 and rows == load_dataset(dataset, EXACT)
    assert [int(r.input[1:]) for r in rows] == sorted(int(r.input[1:]) for r in rows)


def test_inline_rows_are_sampled_too() -> None:
    dataset = ExperimentDataset(rows=[DatasetRow(input=str(i), expected=str(i)) for i in range(20)], max_rows=5)
    assert len(load_dataset(dataset, EXACT)) == 5


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("bad.jsonl", '{"input": "a"}\n{"input": \n', r"bad\.jsonl:2: invalid JSON"),
        ("bad.jsonl", '{"input": "a"}\n["x"]\n', r"bad\.jsonl:2: expected a JSON object, got list"),
        ("bad.jsonl", '{"input": "a"}\n{"expected": "x"}\n', r"bad\.jsonl:2: no 'input' column"),
        ("bad.csv", "question,expected\nx,y\n", r"bad\.csv:2: no 'input' column \(columns: question, expected\)"),
        ("bad.csv", "input,expected\nx,y,z\n", r"bad\.csv:2: more fields than the header's 2"),
        ("rows.txt", "x", r"cannot tell the format from the suffix; set dataset\.format"),
        ("empty.jsonl", "\n", r"empty\.jsonl: the dataset has no rows"),
    ],
)
def test_bad_files_are_one_line_naming_the_line(tmp_path: Path, name: str, text: str, message: str) -> None:
    with pytest.raises(DatasetError, match=message):
        load_dataset(_file(_write(tmp_path, name, text)))


def test_missing_file_is_a_dataset_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"absent\.jsonl does not exist"):
        load_dataset(_file(tmp_path / "absent.jsonl"))


def test_reference_scorers_need_expected_on_every_loaded_row(tmp_path: Path) -> None:
    path = _write(tmp_path, "rows.jsonl", '{"input": "a", "answer": "b"}\n{"input": "c"}\n')
    assert len(load_dataset(_file(path), [Scorer(name="valid", type="json")])) == 2
    with pytest.raises(DatasetError) as raised:
        load_dataset(_file(path), EXACT)
    assert str(raised.value) == (
        "scorers exact need an expected answer on every row; rows.jsonl:1 has none (2 of 2 rows); "
        "'expected' is empty or missing there: set dataset.expectedField to the column holding the reference answer"
    )
    with pytest.raises(DatasetError, match=r"rows\.jsonl:2 has none \(1 of 2 rows\)"):
        load_dataset(_file(path, expected_field="answer"), EXACT)


def test_check_references_on_plain_rows() -> None:
    rows = [DatasetRow(input="a", expected="b"), DatasetRow(input="c")]
    check_references(rows, [Scorer(name="valid", type="json")])
    with pytest.raises(DatasetError, match=r"scorers exact need an expected answer on every row; row 2 has none"):
        check_references(rows, EXACT)


def test_a_file_flag_replaces_the_source_and_keeps_mapping_and_sampling(tmp_path: Path) -> None:
    dataset = ExperimentDataset(uri="hf://org/qa", revision="v1", split="validation", expected_field="a", max_rows=2)
    replaced = from_file(dataset, _write(tmp_path, "more.jsonl", '{"input": "x", "a": "y"}\n'))
    assert (replaced.uri, replaced.revision, replaced.split) == (str(tmp_path / "more.jsonl"), None, None)
    assert load_dataset(replaced, EXACT) == [DatasetRow(input="x", expected="y")]


def test_an_unresolved_configmap_reference_says_how_to_run_it() -> None:
    dataset = ExperimentDataset(config_map_key_ref=ConfigMapKeyRef(name="qa", key="qa.jsonl"))
    with pytest.raises(ConfigError, match=r"run the manifest with kubellm run, or pass --dataset FILE"):
        load_dataset(dataset)


# --- the spec's own checks -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, "exactly one of rows, configMapKeyRef or uri must be set"),
        ({"rows": [{"input": "x"}], "uri": "/data/qa.jsonl"}, "exactly one of rows, configMapKeyRef or uri"),
        ({"uri": "pvc://evals/qa.jsonl", "revision": "v1"}, "revision and tokenSecretRef apply only to hf://"),
        ({"uri": "s3://bucket/qa.jsonl"}, "String should match pattern"),
    ],
)
def test_the_dataset_spec_needs_one_source(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ExperimentDataset.model_validate(fields)
