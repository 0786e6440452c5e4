"""Dataset files: JSONL and CSV rows, line-numbered errors, reference checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubellm.contract.experiments import Scorer
from kubellm.runtime.experiments.dataset import DatasetError, check_references, load_rows


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_jsonl_rows_with_vars_and_extra_fields(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "rows.jsonl",
        '{"input": "a", "expected": "b", "vars": {"x": "1"}}\n\n{"input": "c", "topic": "maths"}\n',
    )
    rows = load_rows(path)
    assert [(r.input, r.expected, r.vars) for r in rows] == [("a", "b", {"x": "1"}), ("c", None, {"topic": "maths"})]


def test_csv_rows_use_other_columns_as_vars(tmp_path: Path) -> None:
    path = _write(tmp_path, "rows.csv", 'input,expected,city\n"What, exactly?",Paris,France\nHello,,Spain\n')
    rows = load_rows(path)
    assert rows[0].input == "What, exactly?" and rows[0].vars == {"city": "France"}
    assert rows[1].expected is None


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("bad.jsonl", '{"input": "a"}\n{"input": \n', r"bad\.jsonl line 2: invalid JSON"),
        ("bad.jsonl", '{"input": "a"}\n["x"]\n', r"line 2: expected a JSON object, got list"),
        ("bad.jsonl", '{"input": "a"}\n{"expected": "x"}\n', r"line 2: input: "),
        ("bad.jsonl", '{"input": "a", "vars": {"x": 3}}\n', r"line 1: vars\.x: Input should be a valid string"),
        ("bad.csv", "question,expected\nx,y\n", r"line 1: the CSV header needs an 'input' column"),
        ("bad.csv", "input,expected\nx,y,z\n", r"line 2: more cells than header columns"),
        ("rows.txt", "x", r"unsupported dataset format '\.txt'"),
        ("empty.jsonl", "\n", r"the dataset has no rows"),
    ],
)
def test_bad_files_name_the_line(tmp_path: Path, name: str, text: str, message: str) -> None:
    with pytest.raises(DatasetError, match=message):
        load_rows(_write(tmp_path, name, text))


def test_missing_file_is_a_dataset_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"cannot read the dataset: No such file"):
        load_rows(tmp_path / "absent.jsonl")


def test_reference_scorers_need_expected_on_every_row(tmp_path: Path) -> None:
    rows = load_rows(_write(tmp_path, "rows.jsonl", '{"input": "a", "expected": "b"}\n{"input": "c"}\n'))
    check_references(rows, [Scorer(name="valid", type="json")])
    with pytest.raises(DatasetError, match=r"scorers exact need expected on every row; row 2 has none"):
        check_references(rows, [Scorer(name="exact", type="exact")])
