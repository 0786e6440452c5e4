"""Reading datasets: formats, the three row shapes, and line-numbered errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kubellm.contract.training import DatasetConfig
from kubellm.runtime.models.tokenizer import build_byte_tokenizer
from kubellm.runtime.training.data import Example, load_examples, read_rows
from kubellm.runtime.training.errors import DatasetError

TOKENIZER = build_byte_tokenizer()


def _config(path: Path | str, **fields: Any) -> DatasetConfig:
    uri = path if isinstance(path, str) else f"file://{path}"
    return DatasetConfig.model_validate({"uri": uri, **fields})


def _jsonl(path: Path, *lines: str) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def test_prompt_response_rows_from_jsonl(tmp_path: Path) -> None:
    path = _jsonl(
        tmp_path / "d.jsonl", '{"prompt": "Q: 1+1?", "response": " 2"}', "", '{"prompt": "Hi", "response": "!"}'
    )
    examples = load_examples(_config(path), TOKENIZER)
    assert examples == [
        Example("d.jsonl:1", "Q: 1+1?", " 2"),
        Example("d.jsonl:2", "", ""),  # a blank line: an empty row, counted by the quality check
        Example("d.jsonl:3", "Hi", "!"),
    ]


def test_custom_columns_and_text_rows(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "d.jsonl", '{"instruction": "Say hi", "completion": "hi", "text": "raw text"}')
    pairs = load_examples(_config(path, promptField="instruction", responseField="completion"), TOKENIZER)
    assert (pairs[0].prompt, pairs[0].completion) == ("Say hi", "hi")
    text = load_examples(_config(path, textField="text"), TOKENIZER)
    assert (text[0].prompt, text[0].completion) == ("", "raw text")


def test_chat_rows_use_the_chat_template_and_train_on_the_last_answer(tmp_path: Path) -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello?"},
        {"role": "assistant", "content": "Hi."},
    ]
    path = _jsonl(tmp_path / "chat.jsonl", json.dumps({"messages": messages}))
    [example] = load_examples(_config(path), TOKENIZER)
    assert example.prompt.endswith("<|im_start|>user\nHello?<|im_end|>\n<|im_start|>assistant\n")
    assert example.prompt.startswith("<|im_start|>system\nBe brief.")
    assert example.completion == "Hi.<|im_end|>\n"


def test_chat_without_a_template_falls_back_to_a_transcript(tmp_path: Path) -> None:
    tokenizer = build_byte_tokenizer()
    tokenizer.chat_template = None
    path = _jsonl(
        tmp_path / "chat.jsonl",
        json.dumps({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}),
    )
    [example] = load_examples(_config(path), tokenizer)
    assert (example.prompt, example.completion) == ("user: a\nassistant: ", "b\n")


def test_csv_and_json_array(tmp_path: Path) -> None:
    csv_path = tmp_path / "d.csv"
    csv_path.write_text('prompt,response\n"multi\nline",yes\n,\nx,y\n')
    rows = read_rows(_config(csv_path))
    assert [row.location for row in rows] == ["d.csv:3", "d.csv:4", "d.csv:5"]  # physical line where each row ends
    assert rows[0].values == {"prompt": "multi\nline", "response": "yes"}
    assert rows[1].values is None
    json_path = tmp_path / "d.json"
    json_path.write_text(json.dumps([{"prompt": "a", "response": "b"}]))
    assert load_examples(_config(json_path), TOKENIZER) == [Example("d.json: item 1", "a", "b")]


def test_parquet_by_its_suffix_or_by_format(tmp_path: Path) -> None:
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    pq.write_table(pa.table({"prompt": ["a", "c"], "response": ["b", "d"]}), tmp_path / "train.parquet")
    pq.write_table(pa.table({"messages": [messages]}), tmp_path / "chat.rows")
    assert load_examples(_config(tmp_path / "train.parquet"), TOKENIZER) == [
        Example("train.parquet: row 1", "a", "b"),
        Example("train.parquet: row 2", "c", "d"),
    ]
    (row,) = read_rows(_config(tmp_path / "chat.rows", format="parquet"))
    assert row.values == {"messages": messages}  # nested columns come back as plain lists and dicts


def test_a_folder_contributes_the_split_files(tmp_path: Path) -> None:
    _jsonl(tmp_path / "train-00001.jsonl", '{"prompt": "a", "response": "b"}')
    _jsonl(tmp_path / "train-00002.jsonl", '{"prompt": "c", "response": "d"}')
    _jsonl(tmp_path / "test.jsonl", '{"prompt": "x", "response": "y"}')
    assert [e.prompt for e in load_examples(_config(tmp_path), TOKENIZER)] == ["a", "c"]
    with pytest.raises(DatasetError, match="no validation\\* file"):
        load_examples(_config(tmp_path, split="validation"), TOKENIZER)


def test_dummy_datasets_are_reproducible_and_shaped() -> None:
    first = load_examples(_config("dummy://instructions?rows=20&seed=3"), TOKENIZER)
    assert first == load_examples(_config("dummy://instructions?rows=20&seed=3"), TOKENIZER)
    assert len(first) == 20
    assert all(e.prompt.startswith("Question: ") and e.completion.startswith(" ") for e in first)
    chat = load_examples(_config("dummy://chat?rows=3"), TOKENIZER)
    assert all(e.completion.endswith("<|im_end|>\n") for e in chat)
    text = load_examples(_config("dummy://text?rows=3", textField="text"), TOKENIZER)
    assert all(e.prompt == "" and e.completion for e in text)


@pytest.mark.parametrize(
    ("lines", "fields", "message"),
    [
        (['{"prompt": "a", "response": "b"}', '{"prompt": "a", "response": '], {}, "d.jsonl:2: invalid JSON"),
        (['{"prompt": "a", "response": "b"}', "", "[1, 2]"], {}, "d.jsonl:3: expected a JSON object, got list"),
        (['{"prompt": "a"}'], {}, "d.jsonl:1: missing column 'response' (columns: prompt)"),
        (['{"text": "a"}'], {}, "set dataset.textField to train on raw text"),
        (['{"prompt": "a", "response": 3}'], {}, "d.jsonl:1: column 'response' must be text, got int"),
        (['{"body": "a"}'], {"textField": "text"}, "d.jsonl:1: missing column 'text'"),
        (['{"messages": "hi"}'], {}, "d.jsonl:1: 'messages' must be a list"),
        (['{"messages": [{"role": "user"}]}'], {}, "d.jsonl:1: message 1 needs string 'role' and 'content'"),
        (['{"messages": [{"role": "user", "content": "a"}]}'], {}, "last message must be the assistant's"),
    ],
)
def test_bad_rows_name_their_line(tmp_path: Path, lines: list[str], fields: dict[str, str], message: str) -> None:
    path = _jsonl(tmp_path / "d.jsonl", *lines)
    with pytest.raises(DatasetError) as error:
        load_examples(_config(path, **fields), TOKENIZER)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_bad_sources_and_files(tmp_path: Path) -> None:
    csv_path = tmp_path / "d.csv"
    csv_path.write_text("prompt,response\na,b,c\n")
    with pytest.raises(DatasetError, match=r"d\.csv:2: more fields than the header's 2"):
        read_rows(_config(csv_path))
    with pytest.raises(DatasetError, match="does not exist"):
        read_rows(_config(tmp_path / "missing.jsonl"))
    (tmp_path / "d.txt").write_text("x")
    with pytest.raises(DatasetError, match=r"set dataset\.format"):
        read_rows(_config(tmp_path / "d.txt"))
    (tmp_path / "latin1.jsonl").write_bytes(b'{"prompt": "caf\xe9"}\n')
    with pytest.raises(DatasetError, match="not UTF-8"):
        read_rows(_config(tmp_path / "latin1.jsonl"))
    with pytest.raises(DatasetError, match="unknown synthetic dataset 'poems'"):
        read_rows(_config("dummy://poems"))
    with pytest.raises(DatasetError, match="unknown option"):
        read_rows(_config("dummy://text?lines=3"))
