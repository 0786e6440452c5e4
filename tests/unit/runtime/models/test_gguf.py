"""GGUF files as model sources: converted once into the cache, atomically, with one-line errors for bad files.

A tiny Llama written as GGUF (tests/harness/gguf_files.py) converts in about a second, so every
path of the cache is exercised here; the real SmolLM2 file is in tests/integration/test_model_sources.py.
"""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path

import pytest
import torch

from kubellm.runtime.models import gguf
from kubellm.runtime.models.loading import load_model, load_tokenizer
from kubellm.runtime.models.sources import ModelSourceError
from tests.harness.gguf_files import truncated_copy, write_gguf_of_architecture, write_tiny_llama_gguf

PROMPT = torch.tensor([[5, 70, 80, 90, 100, 7]])


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("gguf") / "tiny-llama.gguf"
    write_tiny_llama_gguf(path)
    return path


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("KUBELLM_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _entries(cache: Path) -> list[str]:
    folder = cache / "gguf"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def test_a_gguf_file_loads_as_the_model_it_was_written_from(tiny_gguf: Path, cache: Path) -> None:
    original = write_tiny_llama_gguf(tiny_gguf.parent / "again.gguf")  # the same weights, returned
    loaded = load_model(f"file://{tiny_gguf}")
    assert loaded.uri == f"file://{tiny_gguf}"
    assert loaded.model_type == "llama"
    with torch.no_grad():
        assert torch.equal(original.model(PROMPT).logits, loaded.model(PROMPT).logits)
    assert loaded.tokenizer.chat_template == original.tokenizer.chat_template
    assert loaded.tokenizer("a red cat").input_ids == original.tokenizer("a red cat").input_ids
    assert loaded.tokenizer.model_max_length == 512

    digest = gguf.file_digest(tiny_gguf)
    folder = cache / "gguf" / digest
    assert _entries(cache) == [digest, f"{digest}.lock"]
    for name in ("config.json", "model.safetensors", "generation_config.json", "tokenizer.json", "chat_template.jinja"):
        assert (folder / name).is_file(), name
    record = json.loads((folder / gguf.CONVERSION_RECORD).read_text())
    assert record["source"] == f"file://{tiny_gguf}" and record["architecture"] == "llama"
    assert "quantization_config" not in json.loads((folder / "config.json").read_text())


def test_later_loads_reuse_the_conversion(tiny_gguf: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = gguf.converted_gguf("tiny", tiny_gguf)

    def refuse(path: Path, destination: Path) -> None:
        raise AssertionError("converted twice")

    monkeypatch.setattr(gguf, "convert_gguf", refuse)
    assert gguf.converted_gguf("tiny", tiny_gguf) == first
    assert load_tokenizer(str(tiny_gguf)).chat_template is not None
    assert load_model(str(tiny_gguf)).model_type == "llama"


def test_a_changed_file_is_converted_anew(tiny_gguf: Path, cache: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy.gguf"
    copy.write_bytes(tiny_gguf.read_bytes() + b"\0" * 32)  # padding after the tensors: still a valid file
    assert gguf.converted_gguf("a", tiny_gguf) != gguf.converted_gguf("b", copy)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing", "no GGUF file at"),
        ("bert", "GGUF architecture 'bert' cannot be loaded; supported: "),
        ("mamba-ish", "GGUF architecture 'mamba-ish' cannot be loaded; supported: "),
        ("truncated", "is not a readable GGUF file (truncated or corrupt"),
        ("text", "is not a readable GGUF file (truncated or corrupt: GGUF magic invalid)"),
        ("empty", "is not a readable GGUF file (truncated or corrupt"),
    ],
)
def test_bad_files_are_one_line_errors_and_leave_nothing_in_the_cache(
    tiny_gguf: Path, cache: Path, tmp_path: Path, case: str, message: str
) -> None:
    path = tmp_path / f"{case}.gguf"
    if case in ("bert", "mamba-ish"):
        write_gguf_of_architecture(path, case)
    elif case == "truncated":
        truncated_copy(tiny_gguf, path, 0.6)
    elif case == "text":
        path.write_text("not a model\n")
    elif case == "empty":
        path.touch()
    uri = f"file://{path}"
    with pytest.raises(ModelSourceError, match="^" + re.escape(uri) + ": ") as error:
        load_model(uri)
    assert message in str(error.value)
    assert "\n" not in str(error.value)
    assert not cache.exists()


def test_a_failed_conversion_leaves_nothing_half_written(
    tiny_gguf: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def half_then_fail(path: Path, destination: Path) -> None:
        (destination / "model.safetensors").write_bytes(b"half")
        raise RuntimeError("out of disk space\nsecond line")

    monkeypatch.setattr(gguf, "convert_gguf", half_then_fail)
    with pytest.raises(ModelSourceError, match=r"^tiny: cannot convert the GGUF file: out of disk space$"):
        gguf.converted_gguf("tiny", tiny_gguf)
    assert _entries(cache) == [f"{gguf.file_digest(tiny_gguf)}.lock"]  # the lock file only


def test_what_a_killed_conversion_left_is_removed(tiny_gguf: Path, cache: Path) -> None:
    digest = gguf.file_digest(tiny_gguf)
    leftover = cache / "gguf" / f".{digest}.killed"
    leftover.mkdir(parents=True)
    (leftover / "model.safetensors").write_bytes(b"partial")
    gguf.converted_gguf("tiny", tiny_gguf)
    assert _entries(cache) == [digest, f"{digest}.lock"]


def test_losing_the_rename_race_to_a_complete_folder_is_fine(
    tiny_gguf: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As on a filesystem without locks: another process renamed its complete folder first."""
    convert = gguf.convert_gguf
    digest = gguf.file_digest(tiny_gguf)

    def convert_while_another_finishes(path: Path, destination: Path) -> None:
        convert(path, destination)
        other = cache / "gguf" / digest
        other.mkdir()
        (other / gguf.CONVERSION_RECORD).write_text("{}")

    monkeypatch.setattr(gguf, "convert_gguf", convert_while_another_finishes)
    assert gguf.converted_gguf("tiny", tiny_gguf) == cache / "gguf" / digest
    assert _entries(cache) == [digest, f"{digest}.lock"]


def test_concurrent_conversions_convert_once(tiny_gguf: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    convert, calls = gguf.convert_gguf, []

    def counted(path: Path, destination: Path) -> None:
        calls.append(destination)
        convert(path, destination)

    monkeypatch.setattr(gguf, "convert_gguf", counted)
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(gguf.converted_gguf("t", tiny_gguf))) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(calls) == 1
    assert len(results) == 3 and len(set(results)) == 1
    assert load_model(str(tiny_gguf)).model_type == "llama"


def test_a_packaged_gguf_file_loads(
    tiny_gguf: Path, cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "site" / "kubellm_tiny_models"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("raise RuntimeError('never imported')\n")
    (package / "tiny.gguf").write_bytes(tiny_gguf.read_bytes())
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    loaded = load_model("pkg://kubellm_tiny_models/tiny.gguf")
    assert loaded.uri == "pkg://kubellm_tiny_models/tiny.gguf"
    assert loaded.model_type == "llama"


def test_a_file_that_is_not_gguf_still_says_what_a_model_is(tmp_path: Path) -> None:
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(ModelSourceError, match=r"a model is a folder with config\.json, or a \.gguf file"):
        load_model(str(tmp_path / "weights.bin"))
